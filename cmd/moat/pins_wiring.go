package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/moatmcp/moat/internal/pin"
	"github.com/moatmcp/moat/internal/secrets"
)

// pinKeyItem names the pin store's HMAC key in the secret store.
const pinKeyItem = "moat-pins-key"

// openPins returns gate.Gate.Pins: it opens the pin store on first use,
// with its key from the secret store, and records through audit (when
// set) a store created or found missing.
func openPins(audit func(event, group string, detail map[string]string)) func() (*pin.Store, error) {
	return sync.OnceValues(func() (*pin.Store, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*secretTimeout)
		defer cancel()
		path, err := pinsPath()
		if err != nil {
			return nil, err
		}
		store, err := processStore.get(ctx)
		if err != nil {
			return nil, fmt.Errorf("the pin store's key lives in the secret store, which cannot be opened: %w", err)
		}
		key, err := store.Key(ctx, pinKeyItem, 32, true)
		if err != nil {
			return nil, err
		}
		anchor := pinAnchor{s: store, created: func() {
			if audit != nil {
				audit("pins_created", "", map[string]string{"path": path})
			}
		}}
		pins, err := pin.Open(path, key, anchor)
		if errors.Is(err, pin.ErrMissing) && audit != nil {
			audit("pins_missing", "", map[string]string{"path": path})
		}
		return pins, err
	})
}

// pinAnchorItem is the secret-store item that says the pin store was
// created: pin.Open refuses a missing pin store while it exists.
const pinAnchorItem = "moat-pins-created"

// pinAnchor keeps the pin store's anchor in the secret store, where the
// pin key is: removing the pin store's directory does not remove it.
// created, if set, learns that the anchor was set for the first time (a
// new pin store).
type pinAnchor struct {
	s       *secrets.Store
	created func()
}

func (a pinAnchor) Created() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), secretTimeout)
	defer cancel()
	_, err := a.s.Get(ctx, pinAnchorItem)
	if errors.Is(err, secrets.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (a pinAnchor) SetCreated() error {
	ctx, cancel := context.WithTimeout(context.Background(), secretTimeout)
	defer cancel()
	isNew := false
	_, err := a.s.GetOrCreate(ctx, pinAnchorItem, func() (secrets.Secret, error) {
		isNew = true
		return secrets.NewSecret("created"), nil
	})
	if err == nil && isNew && a.created != nil {
		a.created()
	}
	return err
}

func (a pinAnchor) Clear() error {
	ctx, cancel := context.WithTimeout(context.Background(), secretTimeout)
	defer cancel()
	if err := a.s.Delete(ctx, pinAnchorItem); err != nil && !errors.Is(err, secrets.ErrNotFound) {
		return err
	}
	return nil
}

// pinsPath is $XDG_DATA_HOME/moat/pins/pins.json (beside the secret store).
func pinsPath() (string, error) {
	dir, err := secrets.DefaultDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(dir), "pins", "pins.json"), nil
}
