package ops

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkReconstruct: a day of a 1,000-node cluster's operation events
// (every node cordoned and uncordoned, one in ten repaired, refused
// evictions on a pod per node).
func BenchmarkReconstruct(b *testing.B) {
	var events []corev1.Event
	for i := 0; i < 1000; i++ {
		n := fmt.Sprintf("node-%04d", i)
		at := time.Duration(i) * time.Minute
		events = append(events, nodeEvent(n, "NodeNotSchedulable", "Normal", at, ""),
			podEvent("shop", "web-"+n, "EvictionFailed", at+time.Minute, "Cannot evict pod as it would violate the pod's disruption budget."),
			nodeEvent(n, "NodeSchedulable", "Normal", at+10*time.Minute, ""))
		if i%10 == 0 {
			events = append(events, nodeEvent(n, "NodeRebootStart", "Normal", at+time.Hour, ""), nodeEvent(n, "NodeRebootEnd", "Normal", at+61*time.Minute, ""))
		}
	}
	podNode := func(_, name string) string { return name[len("web-"):] }
	b.ReportAllocs()
	for b.Loop() {
		if ops := Reconstruct(events, podNode); len(ops) != 1100 {
			b.Fatalf("%d operations, want 1100", len(ops))
		}
	}
}
