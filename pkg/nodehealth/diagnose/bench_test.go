package diagnose

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkDiagnose takes a report on a node with 110 pods (the kubelet's
// default maximum) in a hybrid cgroup layout, without network probes and
// with a 1 ms CPU window, so that it measures the report's own cost:
// reading PSI, every pod's cgroup files twice, /proc, and the disk walk.
func BenchmarkDiagnose(b *testing.B) {
	procDir, pressure, v2, memV1 := fakeNode(b, "1.00")
	for i := range 110 {
		uid := fmt.Sprintf("%08x-0000-0000-0000-%012x", i, i)
		write(b, filepath.Join(v2, "kubepods", "besteffort", "pod"+uid, "cpu.stat"), "usage_usec 1000\n")
		write(b, filepath.Join(memV1, "kubepods", "besteffort", "pod"+uid, "memory.usage_in_bytes"), "1000000")
		write(b, filepath.Join(memV1, "kubepods", "besteffort", "pod"+uid, "memory.stat"), "total_inactive_file 1000\n")
	}
	d := New(Options{Node: "n1", ProcPressure: pressure, ProcDir: procDir, CgroupV2Roots: []string{v2},
		MemoryV1Root: memV1, CPUAcctV1Root: "/nonexistent", CPUWindow: time.Millisecond,
		DiskPaths: []string{b.TempDir()}, DNSServer: "127.0.0.1:1", ProbeTimeout: time.Millisecond})
	var r *Report
	for b.Loop() {
		r = d.Diagnose(context.Background(), "bench")
	}
	if r.Pressure.Pods != 112 || len(r.Pressure.TopMemory) != 5 {
		b.Fatalf("report: %d pods, %d top memory; want 112 and 5", r.Pressure.Pods, len(r.Pressure.TopMemory))
	}
}
