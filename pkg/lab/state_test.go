package lab

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/lab/binaries"
	"github.com/kdiag/kdiag/pkg/lab/process"
)

// sleeper starts a detached /bin/sleep that stands in for a lab process.
func sleeper(t *testing.T, dir, name string) process.Record {
	t.Helper()
	p, err := process.Start(process.Spec{Name: name, Path: "/bin/sleep", Args: []string{"600"}, LogFile: filepath.Join(dir, name+".log"), Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = process.Stop(context.Background(), []process.Record{p.Record}, time.Second) })
	return p.Record
}

// deadRecord returns the record of a process that has exited.
func deadRecord(t *testing.T, dir string) process.Record {
	t.Helper()
	p, err := process.Start(process.Spec{Name: "kube-scheduler", Path: "/bin/sleep", Args: []string{"600"}, LogFile: filepath.Join(dir, "dead.log")})
	if err != nil {
		t.Fatal(err)
	}
	if err := process.Stop(context.Background(), []process.Record{p.Record}, time.Second); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	return p.Record
}

func writeTestState(t *testing.T, dir string, recs ...process.Record) {
	t.Helper()
	s := &State{Version: stateVersion, Dir: dir, Processes: recs}
	if err := s.write(); err != nil {
		t.Fatal(err)
	}
}

func TestDownAfterHalfwayCrash(t *testing.T) {
	dir := t.TempDir()
	// What a `lab up` that crashed after starting etcd leaves: a state
	// file listing etcd (still running) and a component that died.
	etcd := sleeper(t, dir, "etcd")
	writeTestState(t, dir, etcd, deadRecord(t, dir))

	st, err := ReadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Running() {
		t.Error("status reports a half-dead lab as running")
	}
	if !st.Processes[0].Running || st.Processes[1].Running {
		t.Errorf("status processes = %+v, want etcd running and the other stopped", st.Processes)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("Open of a half-dead lab: error = %v", err)
	}
	if err := Down(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if process.Alive(etcd) {
		t.Fatal("Down left etcd running")
	}
	if _, err := ReadState(dir); !errors.Is(err, ErrNoLab) {
		t.Errorf("state after Down: error = %v, want ErrNoLab", err)
	}
	for _, d := range []string{dir, filepath.Join(dir, "never-created")} {
		if err := Down(context.Background(), d); err != nil {
			t.Errorf("Down(%s) without a lab: %v", d, err)
		}
	}
}

func TestStartRefusals(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  []string
		is    error
	}{
		{
			name:  "lab already running",
			setup: func(t *testing.T, dir string) { writeTestState(t, dir, sleeper(t, dir, "kube-apiserver")) },
			want:  []string{"already running in", "kube-apiserver (pid", "kdiag lab down --dir"},
			is:    ErrRunning,
		},
		{
			name: "corrupt state file",
			setup: func(t *testing.T, dir string) {
				if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"parse lab state", "delete the file"},
		},
		{
			name:  "missing binaries and no tools module",
			setup: func(t *testing.T, dir string) {},
			want:  []string{"control-plane binaries missing", "kdiag lab build"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			// No binaries and no tools module: nothing can start, and no
			// build can begin by mistake.
			t.Chdir(t.TempDir())
			before, _ := os.ReadFile(filepath.Join(dir, "state.json"))
			_, err := Start(context.Background(), Options{Dir: dir, Binaries: binaries.Options{BinDir: t.TempDir()}})
			if err == nil {
				t.Fatal("Start succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error = %v, want %v", err, tc.is)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			after, _ := os.ReadFile(filepath.Join(dir, "state.json"))
			if string(before) != string(after) {
				t.Errorf("refused Start changed state.json from %q to %q", before, after)
			}
		})
	}
}

func TestDirLockRefusesConcurrentCommands(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDir(Layout{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if err := Down(context.Background(), dir); err == nil || !strings.Contains(err.Error(), "another kdiag lab command") {
		t.Errorf("Down while locked: error = %v", err)
	}
	if _, err := Start(context.Background(), Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "another kdiag lab command") {
		t.Errorf("Start while locked: error = %v", err)
	}
}

func TestPickPorts(t *testing.T) {
	ports, err := pickPorts(5)
	if err != nil {
		t.Fatal(err)
	}
	low := ephemeralLow()
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Errorf("port %d picked twice", p)
		}
		seen[p] = true
		if p < minPort || p >= low {
			t.Errorf("port %d outside [%d, %d)", p, minPort, low)
		}
		if !free(p) {
			t.Errorf("picked port %d is not free", p)
		}
	}
	kp, err := kernelPorts(3)
	if err != nil || len(kp) != 3 {
		t.Fatalf("kernelPorts = %v, %v", kp, err)
	}
}

func TestReadStateRejectsOtherVersions(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(`{"version": 99}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadState(dir); err == nil || !strings.Contains(err.Error(), "format version 99") {
		t.Errorf("ReadState of version 99: error = %v", err)
	}
}
