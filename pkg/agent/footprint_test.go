package agent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
)

// BenchmarkIdleFootprint runs an agent with the built-in monitors and PSI
// against a private lab without the in-process kubelet simulator (the
// control plane runs in other processes), and reports the test process's
// CPU while the agent idles for 20 s (with the disk monitor and the Node
// watch of the NotReady diagnostic), its peak RSS (an upper bound: it
// includes the test binary) and the Go heap in use; then one GET /diagnose
// (its wall time, with the default 1 s CPU window and a walk of the default
// disk paths) and the peak RSS after it.
func BenchmarkIdleFootprint(b *testing.B) {
	c := labtest.NewCluster(b, lab.Options{})
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	ctx := context.Background()
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "footprint-node"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	// Without the disk monitor and the automatic reports first: peak RSS
	// only grows, so the second run's figure includes the first's.
	b.Run("without-disk-and-reports", func(b *testing.B) {
		idleFootprint(b, c, Options{DisableDisk: true, ReportInterval: -1})
	})
	b.Run("all", func(b *testing.B) { idleFootprint(b, c, Options{}) })
}

func idleFootprint(b *testing.B, c *lab.Cluster, opts Options) {
	ctx := context.Background()
	for b.Loop() {
		opts.Node, opts.RESTConfig, opts.Listen = "footprint-node", c.RESTConfig(), "127.0.0.1:0"
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		a, err := New(opts)
		if err != nil {
			b.Fatal(err)
		}
		actx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(actx) }()
		time.Sleep(3 * time.Second) // start-up: lists, first patch
		runtime.GC()
		var r0, r1 syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
		t0 := time.Now()
		time.Sleep(20 * time.Second)
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		wall := time.Since(t0)
		cpu := time.Duration(r1.Utime.Nano()+r1.Stime.Nano()-r0.Utime.Nano()-r0.Stime.Nano()) * time.Nanosecond
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		idleRSS := vmHWMKiB(b)
		d0 := time.Now()
		if code, body := get(a.Addr(), "/diagnose"); code != 200 {
			b.Fatalf("/diagnose: %d %s", code, body)
		}
		diag := time.Since(d0)
		cancel()
		<-done
		b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "%core-idle")
		b.ReportMetric(float64(idleRSS)/1024, "MB-peak-RSS")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "MB-heap-inuse")
		b.ReportMetric(float64(diag.Milliseconds()), "ms/diagnose")
		b.ReportMetric(float64(vmHWMKiB(b))/1024, "MB-peak-RSS-after-diagnose")
		b.Logf("problems: %v", a.Problems())
	}
}

// vmHWMKiB reads the process's peak resident set size from /proc.
func vmHWMKiB(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}
