package doctor_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/lab/load"
)

// BenchmarkDoctorLive measures `kdiag doctor -A -o json` as a separate
// process against a real lab loaded with 1,000 nodes and 30,000 pods
// (3,000 Deployments with a Service and a PDB each). Setting up the load
// takes several minutes and is outside the timer. It reports the wall time
// per run (ns/op) and the doctor process's peak RSS.
//
//	go test ./pkg/doctor -run '^$' -bench DoctorLive -benchtime 3x -timeout 90m
func BenchmarkDoctorLive(b *testing.B) {
	const nodes = 1000
	// The controllers create pods at a few dozen per second on a busy
	// 2-core machine: allow the load most of an hour.
	opts := load.Options{Namespaces: 50, Deployments: 3000, Replicas: 10, Timeout: 50 * time.Minute,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	c := labtest.NewCluster(b, lab.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	kubeletDone := make(chan error, 1)
	go func() {
		kubeletDone <- kubelet.Run(ctx, c.RESTConfig(), kubelet.Options{Nodes: nodes})
	}()
	b.Cleanup(func() { cancel(); <-kubeletDone })
	if err := lab.WaitForNodes(ctx, c.RESTConfig(), nodes, 5*time.Minute); err != nil {
		b.Fatalf("nodes: %v", err)
	}
	start := time.Now()
	if err := load.Apply(ctx, c.RESTConfig(), opts); err != nil {
		b.Fatalf("load: %v", err)
	}
	b.Logf("loaded %d nodes and %d pods in %s", nodes, opts.Pods(), time.Since(start).Round(time.Second))

	bin := filepath.Join(b.TempDir(), "kdiag")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/kdiag")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		b.Fatalf("build kdiag: %v", err)
	}
	var maxRSS int64
	var outBytes int
	for b.Loop() {
		var out bytes.Buffer
		cmd := exec.Command(bin, "doctor", "-A", "-o", "json", "--kubeconfig", c.KubeconfigPath())
		cmd.Stdout, cmd.Stderr = &out, io.Discard
		if err := cmd.Run(); err != nil {
			b.Fatalf("kdiag doctor: %v", err)
		}
		outBytes = out.Len()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > maxRSS {
			maxRSS = ru.Maxrss // KiB on Linux
		}
	}
	b.ReportMetric(float64(maxRSS)/1024, "peak-RSS-MiB")
	b.ReportMetric(float64(outBytes)/1024, "report-KiB")
}
