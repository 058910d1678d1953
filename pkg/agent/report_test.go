package agent

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kdiag/kdiag/pkg/nodehealth"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
	"github.com/kdiag/kdiag/pkg/nodehealth/metrics"
)

// TestReporterRateLimits drives the reporter with condition changes and
// checks which of them produce a stored report: a condition turning True
// does, a repeat within the interval does not, the Ready condition has a
// limit of its own, and a condition that stays True, or was True on the
// Node when the agent started, triggers nothing.
func TestReporterRateLimits(t *testing.T) {
	cs := fake.NewClientset()
	a := &Agent{opts: Options{Node: "n1"}, cs: cs, metrics: metrics.New(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	missing := filepath.Join(t.TempDir(), "missing")
	rp := newReporter(a, time.Hour, map[string]nodehealth.Condition{
		"ReadonlyFilesystem": {Type: "ReadonlyFilesystem", Status: true}, "Ready": {Type: "Ready", Status: false}})
	rp.diag = diagnose.New(diagnose.Options{Node: "n1", ProcPressure: missing, ProcDir: missing, CgroupV2Roots: []string{missing},
		MemoryV1Root: missing, CPUAcctV1Root: missing, DiskPaths: []string{missing}, DNSServer: "127.0.0.1:1",
		CPUWindow: time.Millisecond, ProbeTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rp.run(ctx)

	stored := func() *diagnose.Report {
		r, err := diagnose.Load(ctx, cs, "n1")
		if err != nil {
			return nil
		}
		return r
	}
	waitTrigger := func(want string) *diagnose.Report {
		t.Helper()
		var r *diagnose.Report
		waitUntil(t, 5*time.Second, "a report triggered by "+want, func() (bool, error) {
			r = stored()
			return r != nil && strings.HasPrefix(r.Trigger, want), nil
		})
		return r
	}
	set := func(typ string, bad bool) {
		rp.SetCondition("test", nodehealth.Condition{Type: typ, Status: bad, Reason: typ + "Reason"})
	}

	set("ReadonlyFilesystem", true) // True before the restart: no report
	set("DiskUsageHigh", false)
	set("DiskUsageHigh", true)
	first := waitTrigger("DiskUsageHigh=True (DiskUsageHighReason)")
	set("DiskUsageHigh", true)  // still True: no trigger
	set("KernelDeadlock", true) // a new problem, but within the interval
	time.Sleep(300 * time.Millisecond)
	if r := stored(); !r.Time.Equal(first.Time) {
		t.Fatalf("a second report (%s) within the interval", r.Trigger)
	}
	rp.observe("Ready", true, "KubeletNotReady")
	waitTrigger("Ready is not True (KubeletNotReady)")
	if n := testutil.ToFloat64(a.metrics.APIWrites.WithLabelValues("node_report", "ok")); n != 2 {
		t.Errorf("node_report writes = %v, want 2", n)
	}
}
