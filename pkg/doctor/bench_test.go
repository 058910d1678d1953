package doctor_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/kdiag/kdiag/pkg/analyze"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/doctor"
)

// BenchmarkDoctorFromDump measures `kdiag doctor --from` on a synthetic
// dump: reading and decoding every file, indexing, and all analyzers. The
// dump is written once per size, outside the timer.
//
//	go test ./pkg/doctor -run '^$' -bench DoctorFromDump -benchtime 3x -benchmem
func BenchmarkDoctorFromDump(b *testing.B) {
	for _, size := range []struct{ nodes, pods int }{{100, 10000}, {1000, 100000}} {
		b.Run(fmt.Sprintf("nodes=%d/pods=%d", size.nodes, size.pods), func(b *testing.B) {
			dir := b.TempDir()
			if err := cluster.WriteDump(dir, clustertest.Synthetic(clustertest.SynthOptions{Nodes: size.nodes, Pods: size.pods})); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				rep, err := doctor.Dump(os.DirFS(dir), dir, doctor.Options{})
				if err != nil {
					b.Fatal(err)
				}
				if rep.Read[cluster.ResPods] != size.pods {
					b.Fatalf("read %d pods, want %d", rep.Read[cluster.ResPods], size.pods)
				}
			}
		})
	}
}

// BenchmarkAnalyzers measures the analyzers alone on an in-memory snapshot
// of 1,000 nodes and 30,000 pods (the live benchmark's size).
//
//	go test ./pkg/doctor -run '^$' -bench Analyzers -benchmem
func BenchmarkAnalyzers(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		snap := clustertest.Synthetic(clustertest.SynthOptions{Nodes: 1000, Pods: 30000})
		b.StartTimer()
		if fs := analyze.Run(snap, analyze.Filter{}); len(fs) == 0 {
			b.Fatal("no findings on a snapshot with broken Deployments")
		}
	}
}
