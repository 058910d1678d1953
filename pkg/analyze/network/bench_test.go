package network

import (
	"testing"

	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

// benchmarkAnalyze measures Analyze on 1,000 nodes and 30,000 pods in
// 3,000 Deployments and Services (one in fifty with a wrong targetPort),
// spread over the given number of namespaces. One namespace is the worst
// case for selector matching: 3,000 Services over 30,000 pods.
func benchmarkAnalyze(b *testing.B, namespaces int) {
	s := ct.Synthetic(ct.SynthOptions{Nodes: 1000, Pods: 30000, Namespaces: namespaces})
	s.Index()
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		n = len(Analyze(s))
	}
	if n == 0 {
		b.Fatal("the synthetic cluster has broken Services; Analyze found none")
	}
}

func BenchmarkAnalyze1000Nodes30000Pods(b *testing.B) { benchmarkAnalyze(b, 50) }

func BenchmarkAnalyzeOneNamespace(b *testing.B) { benchmarkAnalyze(b, 1) }
