package config

import (
	"errors"
	"strings"

	"github.com/moatmcp/moat/internal/safepath"
)

// unsafeProblem turns a safepath refusal into a Problem of the file: the
// config (or the managed policy) must be a file only the user and root can
// change, in directories only they can change, because whoever can edit it
// can make Moat run commands as the user. Other errors are nil.
func unsafeProblem(err error) *Problem {
	var se *safepath.Error
	if !errors.As(err, &se) {
		return nil
	}
	msg := se.Msg()
	if se.Path == se.Target {
		msg = "the file " + strings.TrimPrefix(msg, se.Path+" ")
	}
	return &Problem{
		Msg:  msg + ", and whoever can edit it can run commands as you",
		Hint: "fix it with: " + se.Fix,
	}
}
