package logmon

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestKmsgSourceMissingDevice(t *testing.T) {
	src := kmsgSource{path: filepath.Join(t.TempDir(), "no-kmsg")}
	err := src.Run(context.Background(), make(chan Line))
	if err == nil || !strings.Contains(err.Error(), "open kernel log") {
		t.Errorf("Run error = %v, want a clear open error", err)
	}
}

func TestFileSourceTailsAndParses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubelet.log")
	old := time.Now().Add(-time.Hour).Format(time.Stamp)
	recent := time.Now().Add(-time.Minute).Format(time.Stamp)
	if err := os.WriteFile(path, []byte(old+" host kubelet[1]: too old\n"+recent+" host kubelet[1]: in lookback\n"+recent+" host other[2]: no match\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]byte(`{"plugin":"filelog","source":"kubelet","logPath":"` + path + `","lookback":"10m",
	  "pluginConfig":{"timestamp":"^.{15}","message":"kubelet\\[\\d+\\]: (.*)","timestampFormat":"Jan _2 15:04:05"},"rules":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan Line, 10)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	want := []string{"in lookback", "appended later"}
	time.Sleep(50 * time.Millisecond)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(time.Now().Format(time.Stamp) + " host kubelet[1]: appended later\n")
	_ = f.Close()
	for _, w := range want {
		select {
		case l := <-out:
			if l.Text != w {
				t.Errorf("line %q, want %q", l.Text, w)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("no line %q within 3s", w)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
}

func TestJournaldMissingJournal(t *testing.T) {
	src := journaldSource{path: filepath.Join(t.TempDir(), "journal")}
	err := src.Run(context.Background(), make(chan Line))
	if err == nil || !strings.Contains(err.Error(), "journald: no journal at") {
		t.Errorf("Run error = %v, want a clear missing-journal error", err)
	}
}

func TestJournaldReportsJournalctlError(t *testing.T) {
	if _, err := exec.LookPath("journalctl"); err != nil {
		t.Skip("no journalctl on this host")
	}
	// An empty journal directory: journalctl exits with a message that
	// must reach the error.
	src := journaldSource{path: t.TempDir(), identifier: "systemd"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := src.Run(ctx, make(chan Line, 1))
	if err == nil || !regexp.MustCompile(`^journald: journalctl -D \S+: exit status \d+: \S`).MatchString(err.Error()) {
		t.Errorf("Run error = %v, want journalctl's own message", err)
	}
	t.Logf("error: %v", err)
}
