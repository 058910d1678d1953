package dns

import (
	"testing"

	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

// BenchmarkAnalyze measures Analyze on 1,000 nodes and 30,000 pods with the
// AKS Corefile and a coredns-custom stub domain: the pod scan for dnsPolicy
// None and the in-cluster address index dominate.
func BenchmarkAnalyze(b *testing.B) {
	s := ct.Synthetic(ct.SynthOptions{Nodes: 1000, Pods: 30000})
	h := healthyAKS()
	s.Deployments = append(s.Deployments, h.Deployments...)
	s.ReplicaSets = append(s.ReplicaSets, h.ReplicaSets...)
	s.Pods = append(s.Pods, h.Pods...)
	s.Services = append(s.Services, h.Services...)
	s.EndpointSlices = append(s.EndpointSlices, h.EndpointSlices...)
	s.ConfigMaps = withCustom(h, map[string]string{"contoso.server": contosoServer,
		"gone.server": "gone.example {\n  forward . 10.0.11.250\n}\n"}).ConfigMaps
	s.Index()
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		n = len(Analyze(s))
	}
	if n < 2 {
		b.Fatalf("want the upstream map and the stub finding, got %d findings", n)
	}
}
