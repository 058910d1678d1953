package runtime

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// BenchmarkPodStartStop measures a real pod's life in the runtime: its
// namespace and veth, a container cgroup, the process started and seen
// running, then stopped and everything freed.
func BenchmarkPodStartStop(b *testing.B) {
	bd := newBed(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		pod := testPod(fmt.Sprintf("bench-%d", i), corev1.Container{Name: "c", Image: "test/serve", Env: []corev1.EnvVar{{Name: "PORT", Value: "8080"}}})
		pod.UID = types.UID(fmt.Sprintf("uid-bench-%d", i))
		addr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 240, 7, byte(2 + i%250)}), 24)
		if ok, err := bd.rt.Sync(ctx, pod, addr, bd.gw); err != nil || !ok {
			b.Fatalf("Sync = %v, %v", ok, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, _ := bd.rt.State(pod.UID)
			if st.Phase == corev1.PodRunning {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("pod not running after 10s: %+v", st)
			}
			time.Sleep(time.Millisecond)
		}
		if err := bd.rt.Remove(ctx, pod.UID); err != nil {
			b.Fatal(err)
		}
	}
}
