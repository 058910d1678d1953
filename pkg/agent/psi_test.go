package agent

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/nodehealth/psi"
)

// ioBurst writes 4 KiB blocks with O_DSYNC until ctx ends, so that the
// writing task waits on the disk nearly all the time: real I/O pressure.
func ioBurst(ctx context.Context, t *testing.T, path string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|syscall.O_DSYNC, 0o600)
	if err != nil {
		t.Errorf("I/O burst: %v", err)
		return
	}
	defer f.Close()
	buf := make([]byte, 4096)
	var off int64
	for ctx.Err() == nil {
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Errorf("I/O burst: %v", err)
			return
		}
		off = (off + 4096) % (64 << 20)
	}
}

// TestIOPressureSetsAndClearsCondition creates real I/O pressure with
// synchronous writes and checks that IOContentionPressure appears on the
// Node and clears after the burst. Thresholds are lowered (set at
// some avg10 >= 5 %, clear below 2 %) because one writer on this machine
// reaches about 20 %; avg60 is left out by setting its bounds to 100.
func TestIOPressureSetsAndClearsCondition(t *testing.T) {
	if _, err := os.Stat("/proc/pressure/io"); err != nil {
		t.Skipf("this kernel has no PSI: %v", err)
	}
	c := labtest.Cluster(t)
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	ctx := context.Background()
	th := psi.Threshold{SetAvg10: 5, SetAvg60: 100, ClearAvg10: 2, ClearAvg60: 100}
	dir := t.TempDir()
	files := []string{writeConfig(t, dir, "none.json", `{"plugin":"kmsg","source":"quiet","rules":[]}`)}
	startAgent(t, c.RESTConfig(), Options{ConfigFiles: files,
		PSI: psi.Options{Interval: 500 * time.Millisecond, IO: th, Memory: psi.Threshold{SetAvg10: 100, SetAvg60: 100, ClearAvg10: 100, ClearAvg60: 100}}})

	waitUntil(t, 90*time.Second, "IOContentionPressure False before the burst", func() (bool, error) {
		c, err := nodeCondition(ctx, cs, "IOContentionPressure")
		return c.Status == corev1.ConditionFalse, err
	})
	bctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); ioBurst(bctx, t, filepath.Join(dir, "burst"+string(rune('a'+i)))) }()
	}
	d := waitUntil(t, 60*time.Second, "IOContentionPressure True during the burst", func() (bool, error) {
		c, err := nodeCondition(ctx, cs, "IOContentionPressure")
		return c.Status == corev1.ConditionTrue && c.Reason == "IOContention", err
	})
	t.Logf("set %s after the burst started", d)
	stop()
	wg.Wait()
	d = waitUntil(t, 120*time.Second, "IOContentionPressure cleared after the burst", func() (bool, error) {
		c, err := nodeCondition(ctx, cs, "IOContentionPressure")
		return c.Status == corev1.ConditionFalse && c.Reason == "NoIOContention", err
	})
	t.Logf("cleared %s after the burst ended", d)
}
