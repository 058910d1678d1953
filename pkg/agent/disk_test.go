package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/nodehealth/diagnose"
	"github.com/kdiag/kdiag/pkg/nodehealth/disk"
)

// TestDiskFillsAndClears fills a tmpfs watched by the agent past the
// threshold and checks, through the lab's API server, the DiskUsageHigh
// condition, the Event naming the top consumer and the report the agent
// stores by itself; then frees the space and checks the condition clears.
func TestDiskFillsAndClears(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (CI runs this test as root)")
	}
	c := labtest.Cluster(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	deleteReport(t, cs)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	images := filepath.Join(mnt, "containerd", "io.containerd.content.v1.content")
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	startAgent(t, c.RESTConfig(), Options{DisablePSI: true, ConfigFiles: []string{writeConfig(t, t.TempDir(), "none.json", testConfig("kd-none"))},
		Disk:     disk.Options{Paths: []string{filepath.Join(mnt, "containerd")}, Interval: 200 * time.Millisecond},
		Diagnose: quickDiagnose(), ReportInterval: time.Hour})
	waitUntil(t, 5*time.Second, "DiskUsageHigh=False on the Node", func() (bool, error) {
		c, err := nodeCondition(ctx, cs, disk.ConditionType)
		return c.Status == corev1.ConditionFalse, err
	})

	blob := filepath.Join(images, "blobs", "sha256-big")
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blob, make([]byte, 7<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "DiskUsageHigh=True on the Node", func() (bool, error) {
		c, err := nodeCondition(ctx, cs, disk.ConditionType)
		return c.Status == corev1.ConditionTrue && c.Reason == disk.ReasonHigh, err
	})
	waitUntil(t, 5*time.Second, "the Event naming the top consumer", func() (bool, error) {
		return hasEvent(ctx, cs, "default", "Node", node, disk.ReasonHigh, filepath.Join(images, "blobs"))
	})
	waitUntil(t, 10*time.Second, "the report stored when DiskUsageHigh turned True", func() (bool, error) {
		r, err := diagnose.Load(ctx, cs, node)
		if err != nil {
			return false, err
		}
		if !strings.HasPrefix(r.Trigger, "DiskUsageHigh=True") || r.Verdict.Rule != "disk-full" || !strings.Contains(r.Verdict.Summary, images) {
			return false, fmt.Errorf("stored report: trigger %q, verdict %+v", r.Trigger, r.Verdict)
		}
		return true, nil
	})

	if err := os.Remove(blob); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "DiskUsageHigh cleared", func() (bool, error) {
		c, err := nodeCondition(ctx, cs, disk.ConditionType)
		return c.Status == corev1.ConditionFalse && c.Reason == disk.ReasonNormal, err
	})
}
