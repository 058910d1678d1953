package lab

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

func TestParsePodsMode(t *testing.T) {
	for _, ok := range []string{"auto", "real", "simulated"} {
		if m, err := ParsePodsMode(ok); err != nil || string(m) != ok {
			t.Errorf("ParsePodsMode(%q) = %q, %v", ok, m, err)
		}
	}
	for _, bad := range []string{"", "Real", "yes"} {
		if _, err := ParsePodsMode(bad); err == nil || !strings.Contains(err.Error(), "auto, real or simulated") {
			t.Errorf("ParsePodsMode(%q) = %v, want an error listing the modes", bad, err)
		}
	}
}

// TestNewDataPlaneModes: simulated builds nothing; auto on a machine that
// cannot falls back with a line saying why; real there fails.
func TestNewDataPlaneModes(t *testing.T) {
	ctx := context.Background()
	for _, m := range []PodsMode{"", PodsSimulated} {
		if d, err := newDataPlane(ctx, m, nil); d != nil || err != nil {
			t.Errorf("newDataPlane(%q) = %v, %v; want nothing", m, d, err)
		}
	}
	if _, err := newDataPlane(ctx, "bogus", nil); err == nil {
		t.Error("newDataPlane(bogus): no error")
	}
	if checkRealPods() == nil {
		t.Skip("this machine runs real pods; the fallback is tested where it cannot (non-root)")
	}
	var progress bytes.Buffer
	if d, err := newDataPlane(ctx, PodsAuto, &progress); d != nil || err != nil || !strings.Contains(progress.String(), "pods are simulated") {
		t.Errorf("auto without the means: %v, %v, progress %q; want simulated with a reason", d, err, progress.String())
	}
	if _, err := newDataPlane(ctx, PodsReal, &progress); err == nil || !strings.Contains(err.Error(), "--pods=real") {
		t.Errorf("real without the means: %v, want an error", err)
	}
}

// TestDataPlaneTeardownIdempotent builds a data plane, tears it down twice
// and checks nothing is left.
func TestDataPlaneTeardownIdempotent(t *testing.T) {
	if os.Geteuid() != 0 || checkRealPods() != nil {
		t.Skip("building a data plane needs root, iproute2, iptables and cgroups")
	}
	ctx := context.Background()
	d, err := newDataPlane(ctx, PodsReal, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Cgroups.Create(d.CgroupParent, "kubepods/besteffort/podx/c", 0); err != nil {
		t.Fatal(err)
	}
	if len(d.Leftovers()) == 0 {
		t.Fatal("Leftovers reports nothing for a live data plane")
	}
	for range 2 {
		if err := d.teardown(ctx); err != nil {
			t.Fatalf("teardown: %v", err)
		}
	}
	if left := d.Leftovers(); len(left) > 0 {
		t.Errorf("left after teardown: %v", left)
	}
	var nilPlane *DataPlane
	if err := nilPlane.teardown(ctx); err != nil || nilPlane.Leftovers() != nil {
		t.Errorf("nil data plane: %v %v", err, nilPlane.Leftovers())
	}
}
