package kernel

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func writeStatus(t *testing.T, capEff string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "status")
	body := "Name:\tkdiag\nCapInh:\t0000000000000000\nCapEff:\t" + capEff + "\n"
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckCapabilities(t *testing.T) {
	tests := []struct {
		name    string
		capEff  string
		wantErr bool
	}{
		{"root", "000001ffffffffff", false},
		{"CAP_SYS_ADMIN only", "0000000000200000", false},
		{"CAP_BPF and CAP_PERFMON", "000000c000000000", false},
		{"CAP_BPF without CAP_PERFMON", "0000008000000000", true},
		{"unprivileged", "0000000000000000", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Env{ProcStatus: writeStatus(t, tt.capEff)}.CheckCapabilities()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if err != nil && (!errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "needs root")) {
				t.Errorf("error %q does not say what is missing", err)
			}
		})
	}
	if err := (Env{ProcStatus: filepath.Join(t.TempDir(), "missing")}).CheckCapabilities(); err == nil {
		t.Error("unreadable status accepted")
	}
}

func TestCheckBTF(t *testing.T) {
	err := Env{BTF: filepath.Join(t.TempDir(), "vmlinux")}.CheckBTF()
	if err == nil || !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "BTF") {
		t.Errorf("missing BTF: err = %v", err)
	}
	f := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := (Env{BTF: f}).CheckBTF(); err != nil {
		t.Errorf("present BTF: %v", err)
	}
}

func TestCheckTracepoints(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "events", "sock", "inet_sock_set_state"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := Env{Tracefs: root}
	if err := env.CheckTracepoints("sock:inet_sock_set_state"); err != nil {
		t.Errorf("present tracepoint: %v", err)
	}
	err := env.CheckTracepoints("sock:inet_sock_set_state", "tcp:tcp_receive_reset")
	if err == nil || !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "tcp:tcp_receive_reset is missing") {
		t.Errorf("missing tracepoint: err = %v", err)
	}
}

func TestErrnoName(t *testing.T) {
	for n, want := range map[int32]string{111: "ECONNREFUSED", 110: "ETIMEDOUT", 104: "ECONNRESET", 113: "EHOSTUNREACH", 0: "", 4000: "errno 4000"} {
		if got := ErrnoName(n); got != want {
			t.Errorf("ErrnoName(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestBootClock(t *testing.T) {
	c, err := NewBootClock()
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Time(0); got.IsZero() || got.After(c.Time(1e9)) {
		t.Errorf("boot clock does not move forward: %v", got)
	}
}

func TestCString(t *testing.T) {
	if got := CString([]byte{'c', 'u', 'r', 'l', 0, 'x'}); got != "curl" {
		t.Errorf("CString = %q", got)
	}
	if got := CString([]byte("full")); got != "full" {
		t.Errorf("CString without NUL = %q", got)
	}
}

func TestEnsureMountsWhenAbsent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting tracefs and bpffs needs root")
	}
	env := Env{Tracefs: filepath.Join(t.TempDir(), "tracing"), BPFFS: filepath.Join(t.TempDir(), "bpf")}
	t.Cleanup(func() {
		_ = unix.Unmount(env.Tracefs, 0)
		_ = unix.Unmount(env.BPFFS, 0)
	})
	if err := env.EnsureTracefs(); err != nil {
		t.Fatalf("EnsureTracefs: %v", err)
	}
	if _, err := os.Stat(filepath.Join(env.Tracefs, "events", "sock")); err != nil {
		t.Errorf("tracefs not mounted: %v", err)
	}
	if err := env.EnsureBPFFS(); err != nil {
		t.Fatalf("EnsureBPFFS: %v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(env.BPFFS, &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		t.Errorf("bpffs not mounted at %s: %v", env.BPFFS, err)
	}
	// Second calls see the mounts and do nothing.
	if err := env.EnsureTracefs(); err != nil {
		t.Error(err)
	}
	if err := env.EnsureBPFFS(); err != nil {
		t.Error(err)
	}
}
