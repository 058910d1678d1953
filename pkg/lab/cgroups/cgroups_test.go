package cgroups

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/lab/process"
)

const envHog = "KDIAG_CGROUPS_TEST_HOG"

func TestMain(m *testing.M) {
	if os.Getenv(envHog) != "" {
		hog()
	}
	os.Exit(m.Run())
}

// hog allocates and touches memory until the kernel kills it.
func hog() {
	var keep [][]byte
	for {
		b := make([]byte, 4<<20)
		for i := range b {
			if i%4096 == 0 {
				b[i] = 1
			}
		}
		keep = append(keep, b)
		time.Sleep(time.Millisecond)
	}
}

func TestContainerPath(t *testing.T) {
	for _, tc := range []struct {
		qos  corev1.PodQOSClass
		want string
	}{
		{corev1.PodQOSGuaranteed, "kubepods/podU/C"},
		{corev1.PodQOSBurstable, "kubepods/burstable/podU/C"},
		{corev1.PodQOSBestEffort, "kubepods/besteffort/podU/C"},
		{"", "kubepods/burstable/podU/C"},
	} {
		if got := ContainerPath(tc.qos, "U", "C"); got != tc.want {
			t.Errorf("ContainerPath(%q) = %q, want %q", tc.qos, got, tc.want)
		}
	}
}

func TestReadKeyMalformed(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "memory.events")
	if err := os.WriteFile(p, []byte("low 0\noom_kill x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readKey(p, "oom_kill"); err == nil {
		t.Error("readKey of a malformed value: no error")
	}
	if n, err := readKey(p, "absent"); err != nil || n != 0 {
		t.Errorf("readKey of an absent key = %d, %v; want 0, nil", n, err)
	}
	if _, err := (Group{}).OOMKills(); err == nil {
		t.Error("OOMKills of a group without memory cgroup: no error")
	}
}

// TestOOMKill runs a memory hog in a container cgroup with a 32 MiB limit:
// the kernel kills it, the counter says so, and RemoveAll leaves nothing.
func TestOOMKill(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating cgroups needs root")
	}
	roots, err := Detect()
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	parent := Parent("kdiag-cgtest-" + hex.EncodeToString(b))
	t.Cleanup(func() { _ = roots.RemoveAll(parent) })
	g, err := roots.Create(parent, ContainerPath(corev1.PodQOSBurstable, "0000-uid", "abc"), 32<<20)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if g.MemoryV1 == "" && !roots.HasMemoryV2() {
		t.Skip("no memory controller to limit memory with")
	}
	exe, _ := os.Executable()
	p, err := process.Start(process.Spec{
		Name: "hog", Path: exe, Args: []string{"-test.run=^$"},
		Env:     append(os.Environ(), envHog+"=1"),
		LogFile: filepath.Join(t.TempDir(), "hog.log"),
		Cgroups: g.Dirs(), Cgroup2: roots.V2,
	})
	if err != nil {
		t.Fatalf("start hog: %v", err)
	}
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the hog was not killed within 30s")
	}
	n, err := g.OOMKills()
	if err != nil || n < 1 {
		t.Errorf("OOMKills = %d, %v; want >= 1 (exit: %v)", n, err, p.Err())
	}
	if err := roots.RemoveAll(parent); err != nil {
		t.Fatalf("RemoveAll: %v", err)
	}
	for _, d := range roots.Dirs(parent) {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still exists after RemoveAll (%v)", d, err)
		}
	}
}
