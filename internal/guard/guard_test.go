package guard

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestChainOrder(t *testing.T) {
	var trace []string
	layer := func(name string) Layer {
		return func(next Handler) Handler {
			return func(ctx context.Context, c *Call) (*Result, error) {
				trace = append(trace, name+" in")
				r, err := next(ctx, c)
				trace = append(trace, name+" out")
				return r, err
			}
		}
	}
	h := Chain(func(context.Context, *Call) (*Result, error) {
		trace = append(trace, "handler")
		return &Result{}, nil
	}, layer("outer"), layer("inner"))
	if _, err := h(context.Background(), &Call{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"outer in", "inner in", "handler", "inner out", "outer out"}
	if !slices.Equal(trace, want) {
		t.Fatalf("Chain ran %v, want %v (layers[0] sees the call first and the result last)", trace, want)
	}
}

func TestDenialText(t *testing.T) {
	cause := errors.New("internal detail: /etc/shadow")
	d := &Denial{Layer: "policy", Rule: "deny:write_*", Reason: "write tools are denied; ask the user", Cause: cause}
	if got, want := d.Error(), "policy: refused by rule deny:write_*: write tools are denied; ask the user"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(d, cause) {
		t.Error("a Denial does not unwrap to its cause (audit needs it)")
	}
}
