package main

import (
	"strings"
	"testing"
)

func TestSessionsPerUserAreBounded(t *testing.T) {
	var c sessionCount
	var leaves []func()
	for range maxSessionsPerUser {
		leave, err := c.enter(1000)
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, leave)
	}
	if _, err := c.enter(1000); err == nil || !strings.Contains(err.Error(), "uid 1000 already has 256 sessions") {
		t.Fatalf("one session too many: %v", err)
	}
	if leave, err := c.enter(1001); err != nil {
		t.Fatalf("another user is refused with the first at its most: %v", err)
	} else {
		leave()
	}
	leaves[0]()
	if _, err := c.enter(1000); err != nil {
		t.Fatalf("a session after one ended: %v", err)
	}
}
