package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kdiag/kdiag/pkg/lab/binaries"
	"github.com/kdiag/kdiag/pkg/lab/process"
)

// stateVersion is the format version of state.json.
const stateVersion = 1

// State is DIR/state.json: everything `kdiag lab down` and `status` need to
// find the lab's processes again. It is rewritten after every process
// start, so that a lab whose start-up crashed half-way can still be stopped.
type State struct {
	Version           int              `json:"version"`
	Dir               string           `json:"dir"`
	KubernetesVersion string           `json:"kubernetesVersion"`
	BinDir            string           `json:"binDir"`
	Detached          bool             `json:"detached"`
	Ports             Ports            `json:"ports"`
	StartedAt         time.Time        `json:"startedAt"`
	Processes         []process.Record `json:"processes"`
	// DataPlane is set in real mode (see DataPlane).
	DataPlane *DataPlane `json:"dataPlane,omitempty"`
}

// server returns the API server's URL.
func (s *State) server() string { return s.Ports.APIServerURL() }

// ErrNoLab reports a directory without a lab state file.
var ErrNoLab = errors.New("no lab state")

// ReadState reads DIR/state.json.
func ReadState(dir string) (*State, error) {
	l := Layout{Dir: dir}
	data, err := os.ReadFile(l.State())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s", ErrNoLab, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse lab state %s: %w", l.State(), err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("lab state %s has format version %d, this kdiag reads %d", l.State(), s.Version, stateVersion)
	}
	return &s, nil
}

// write replaces DIR/state.json atomically.
func (s *State) write() error {
	l := Layout{Dir: s.Dir}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	tmp := l.State() + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	if err := os.Rename(tmp, l.State()); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return nil
}

// running returns the records of processes that still run.
func (s *State) running() []process.Record {
	var out []process.Record
	for _, r := range s.Processes {
		if process.Alive(r) {
			out = append(out, r)
		}
	}
	return out
}

// ProcessStatus is one process of a lab and whether it runs.
type ProcessStatus struct {
	process.Record
	Running bool `json:"running"`
}

// Status is what `kdiag lab status` shows.
type Status struct {
	Dir        string          `json:"dir"`
	Kubeconfig string          `json:"kubeconfig"`
	Server     string          `json:"server"`
	StartedAt  time.Time       `json:"startedAt"`
	Ports      Ports           `json:"ports"`
	Processes  []ProcessStatus `json:"processes"`
	// DataPlane is set when pods run for real.
	DataPlane *DataPlane `json:"dataPlane,omitempty"`
}

// Running reports whether every process of the lab runs.
func (s *Status) Running() bool {
	for _, p := range s.Processes {
		if !p.Running {
			return false
		}
	}
	return len(s.Processes) > 0
}

// ReadStatus reports the lab in dir. Without a state file it returns an
// error wrapping ErrNoLab.
func ReadStatus(dir string) (*Status, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve lab directory: %w", err)
	}
	s, err := ReadState(dir)
	if err != nil {
		return nil, err
	}
	st := &Status{
		Dir:        dir,
		Kubeconfig: Layout{Dir: dir}.Kubeconfig(),
		Server:     s.server(),
		StartedAt:  s.StartedAt,
		Ports:      s.Ports,
		DataPlane:  s.DataPlane,
	}
	for _, r := range s.Processes {
		st.Processes = append(st.Processes, ProcessStatus{Record: r, Running: process.Alive(r)})
	}
	return st, nil
}

// stopGrace is how long processes get between SIGTERM and SIGKILL.
const stopGrace = 10 * time.Second

// stopRecords stops processes in dependency order: clients of the apiserver
// (controller manager, scheduler, kubelet, ...) first, then the apiserver,
// then etcd, so that no component logs errors about a vanished dependency.
func stopRecords(ctx context.Context, recs []process.Record) error {
	phase := func(r process.Record) int {
		switch r.Name {
		case binaries.Etcd:
			return 2
		case binaries.APIServer:
			return 1
		default:
			return 0
		}
	}
	var errs []error
	for ph := 0; ph <= 2; ph++ {
		var batch []process.Record
		for _, r := range recs {
			if phase(r) == ph {
				batch = append(batch, r)
			}
		}
		if err := process.Stop(ctx, batch, stopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Down stops every process the state file in dir lists, removes the data
// plane it records (killing what still runs in the lab's cgroups, then
// deleting its cgroups, namespaces and host link) and removes the state
// file. It is idempotent: a directory without a lab, or whose processes are
// already gone (a crashed `lab up`, kill -9, a reboot), is fine. Nothing
// but the processes the state file records and the processes in the lab's
// own cgroups is ever signalled.
func Down(ctx context.Context, dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("resolve lab directory: %w", err)
	}
	l := Layout{Dir: dir}
	unlock, err := lockDir(l)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	defer unlock()
	s, err := ReadState(dir)
	if errors.Is(err, ErrNoLab) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := stopRecords(ctx, s.Processes); err != nil {
		return fmt.Errorf("stop lab in %s: %w", dir, err)
	}
	if err := s.DataPlane.teardown(ctx); err != nil {
		return err
	}
	if err := os.Remove(l.State()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove lab state: %w", err)
	}
	return nil
}

// lockDir takes DIR/.lock so that two lab commands never work on one
// directory at once. It fails at once, rather than waiting, when another
// command holds it. A missing directory yields an fs.ErrNotExist error.
func lockDir(l Layout) (func(), error) {
	if _, err := os.Stat(l.Dir); err != nil {
		return nil, fmt.Errorf("lab directory: %w", err)
	}
	f, err := os.OpenFile(l.Lock(), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lab lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another kdiag lab command is working on %s right now (%s is locked)", l.Dir, l.Lock())
		}
		return nil, fmt.Errorf("lock %s: %w", l.Lock(), err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}

// describe lists records as "name (pid N)".
func describe(recs []process.Record) string {
	parts := make([]string, len(recs))
	for i, r := range recs {
		parts[i] = fmt.Sprintf("%s (pid %d)", r.Name, r.PID)
	}
	return strings.Join(parts, ", ")
}
