package process

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a child process for these tests,
// so that no shell (which forks) is involved.
const helperEnv = "KDIAG_PROCESS_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		for {
			time.Sleep(time.Hour)
		}
	case "spawn":
		// Start an attached grandchild, report it, then wait to be killed.
		p, err := Start(Spec{Name: "grandchild", Path: "/bin/sleep", Args: []string{"300"}, LogFile: os.Getenv("LOG")})
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		data, _ := json.Marshal(p.Record)
		if err := os.WriteFile(os.Getenv("OUT"), data, 0o644); err != nil {
			os.Exit(1)
		}
		for {
			time.Sleep(time.Hour)
		}
	}
}

func self(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func stopAll(t *testing.T, ps ...*Process) {
	t.Cleanup(func() {
		var recs []Record
		for _, p := range ps {
			recs = append(recs, p.Record)
		}
		_ = Stop(context.Background(), recs, time.Second)
	})
}

func TestStartAttachedAndDetached(t *testing.T) {
	for _, detached := range []bool{false, true} {
		t.Run(fmt.Sprintf("detached=%v", detached), func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "logs", "sleep.log")
			p, err := Start(Spec{Name: "sleep", Path: "/bin/sleep", Args: []string{"300"}, LogFile: log, Detached: detached})
			if err != nil {
				t.Fatal(err)
			}
			stopAll(t, p)
			if !Alive(p.Record) {
				t.Fatalf("started process %d is not alive", p.PID)
			}
			st, err := ReadStat(p.PID)
			if err != nil {
				t.Fatal(err)
			}
			if st.PGRP != p.PID {
				t.Errorf("process group = %d, want its own (%d)", st.PGRP, p.PID)
			}
			if leader := st.Session == p.PID; leader != detached {
				t.Errorf("session leader = %v, want %v (session %d)", leader, detached, st.Session)
			}
			if p.Detached != detached || p.Path == "" || p.StartTicks == 0 {
				t.Errorf("record = %+v", p.Record)
			}
			if err := Stop(context.Background(), []Record{p.Record}, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if Alive(p.Record) {
				t.Fatal("process alive after Stop")
			}
			select {
			case <-p.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("process not reaped after Stop")
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.PID)); err == nil {
				if st, err := ReadStat(p.PID); err == nil && st.StartTicks == p.StartTicks {
					t.Errorf("pid %d still in /proc after reaping (state %c)", p.PID, st.State)
				}
			}
			if err := Stop(context.Background(), []Record{p.Record}, time.Second); err != nil {
				t.Errorf("second Stop (idempotent) failed: %v", err)
			}
		})
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	log := filepath.Join(t.TempDir(), "stubborn.log")
	p, err := Start(Spec{Name: "stubborn", Path: self(t), Env: append(os.Environ(), helperEnv+"=ignore-term"), LogFile: log})
	if err != nil {
		t.Fatal(err)
	}
	stopAll(t, p)
	// Wait until it has installed its handler, as shown by its log.
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(log)
		if strings.Contains(string(data), "ignoring SIGTERM") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("helper never started; log: %q", data)
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := Stop(context.Background(), []Record{p.Record}, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if Alive(p.Record) {
		t.Fatal("process that ignores SIGTERM survived Stop")
	}
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("exit = %v, want killed by SIGKILL", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("Stop returned after %v, before the grace period", d)
	}
}

func TestStopSkipsReusedPID(t *testing.T) {
	p, err := Start(Spec{Name: "victim", Path: "/bin/sleep", Args: []string{"300"}, LogFile: filepath.Join(t.TempDir(), "v.log")})
	if err != nil {
		t.Fatal(err)
	}
	stopAll(t, p)
	tests := map[string]Record{
		"other start time": {Name: "stale", PID: p.PID, StartTicks: p.StartTicks - 1, Path: p.Path},
		"other executable": {Name: "stale", PID: p.PID, StartTicks: p.StartTicks, Path: "/usr/bin/etcd"},
		"no start time":    {Name: "stale", PID: p.PID, Path: p.Path},
	}
	for name, stale := range tests {
		if Alive(stale) {
			t.Errorf("%s: Alive matched a different process", name)
		}
		if err := Stop(context.Background(), []Record{stale}, 100*time.Millisecond); err != nil {
			t.Errorf("%s: Stop: %v", name, err)
		}
		if !Alive(p.Record) {
			t.Fatalf("%s: Stop killed pid %d through a stale record", name, p.PID)
		}
	}
}

func TestPdeathsigKillsAttachedChildWhenParentDies(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "grandchild.json")
	parent, err := Start(Spec{
		Name:    "parent",
		Path:    self(t),
		Env:     append(os.Environ(), helperEnv+"=spawn", "OUT="+out, "LOG="+filepath.Join(dir, "gc.log")),
		LogFile: filepath.Join(dir, "parent.log"),
	})
	if err != nil {
		t.Fatal(err)
	}
	stopAll(t, parent)
	var gc Record
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(out)
		if err == nil && json.Unmarshal(data, &gc) == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "parent.log"))
			t.Fatalf("helper did not report its child; log: %s", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { _ = Stop(context.Background(), []Record{gc}, time.Second) })
	if !Alive(gc) {
		t.Fatal("grandchild not running")
	}
	if err := syscall.Kill(parent.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for Alive(gc) {
		if time.Now().After(deadline) {
			t.Fatalf("attached grandchild %d survived its parent", gc.PID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Start(Spec{Name: "ghost", Path: filepath.Join(dir, "nope"), LogFile: filepath.Join(dir, "g.log")}); err == nil || !strings.Contains(err.Error(), "start ghost") {
		t.Errorf("missing executable: error = %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(Spec{Name: "nolog", Path: "/bin/true", LogFile: filepath.Join(dir, "file", "x.log")}); err == nil {
		t.Error("unwritable log file: Start succeeded")
	}
}

func TestReadStat(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.StartTicks == 0 || st.State == 0 {
		t.Errorf("own stat = %+v", st)
	}
	if _, err := ReadStat(-1); err == nil {
		t.Error("ReadStat(-1) succeeded")
	}
}
