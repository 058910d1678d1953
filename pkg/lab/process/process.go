// Package process starts the lab's long-running child processes and stops
// them again, possibly from another kdiag invocation.
//
// A child is started either attached, so that it dies with the starting
// process (Pdeathsig, used by tests), or detached in its own session, so that
// it outlives the CLI (`kdiag lab up`). Every child is described by a Record
// holding its pid and its start time in clock ticks since boot, read from
// /proc. The pair identifies one process for the life of the machine, so a
// later Stop never signals an unrelated process that reused the pid.
// Signals go through a pidfd, which closes the remaining race between the
// check and the kill.
package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Spec describes a process to start.
type Spec struct {
	// Name labels the process in records, logs and errors.
	Name string
	// Path is the executable; Args are its arguments (without argv[0]).
	Path string
	Args []string
	// Env is the environment; nil inherits the current one.
	Env []string
	// Dir is the working directory; empty inherits the current one.
	Dir string
	// LogFile receives stdout and stderr, appended, unless Stdout and
	// Stderr are set.
	LogFile string
	// Stdout and Stderr, when both set, receive the process's output
	// instead of LogFile (through pipes: the writers must keep up). The
	// process is reaped (Done) once they have received everything.
	Stdout, Stderr io.Writer
	// Detached starts the process in a new session so that it survives the
	// caller. Otherwise the process gets SIGKILL when the caller dies.
	Detached bool
	// Netns, when set, is a network namespace file (/run/netns/NAME or
	// /proc/PID/ns/net) the process starts in.
	Netns string
	// Cgroups are cgroup directories the process joins: a cgroup2 one from
	// its very start (clone into the cgroup), cgroup v1 ones (such as the
	// v1 memory hierarchy's) right after it started.
	Cgroups []string
	// Cgroup2 is the cgroup2 mount point, to tell the entries of Cgroups
	// apart; empty means none of them is a cgroup2 directory.
	Cgroup2 string
}

// Record identifies a started process.
type Record struct {
	Name       string   `json:"name"`
	PID        int      `json:"pid"`
	StartTicks uint64   `json:"startTicks"`
	Path       string   `json:"path"`
	Args       []string `json:"args,omitempty"`
	LogFile    string   `json:"logFile,omitempty"`
	Detached   bool     `json:"detached"`
}

// Process is a child started by Start.
type Process struct {
	Record
	done chan struct{}
	err  error
}

// Done is closed when the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns the exit error once Done is closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Start launches spec and returns once the process runs. A process that
// exited before Start could record it yields an error wrapping ErrExited
// together with the (done) Process, whose Err says how it ended.
func Start(spec Spec) (*Process, error) {
	// The resolved path is what /proc/<pid>/exe shows, which Alive checks.
	path, err := filepath.EvalSymlinks(spec.Path)
	if err == nil {
		path, err = filepath.Abs(path)
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	cmd := exec.Command(path, spec.Args...)
	cmd.Env = spec.Env
	cmd.Dir = spec.Dir
	if spec.Stdout != nil && spec.Stderr != nil {
		cmd.Stdout, cmd.Stderr = spec.Stdout, spec.Stderr
	} else {
		if err := os.MkdirAll(filepath.Dir(spec.LogFile), 0o755); err != nil {
			return nil, fmt.Errorf("start %s: create log directory: %w", spec.Name, err)
		}
		logf, err := os.OpenFile(spec.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("start %s: open log: %w", spec.Name, err)
		}
		defer logf.Close() // the child holds its own descriptor after Start
		cmd.Stdout, cmd.Stderr = logf, logf
	}
	if spec.Detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}

	var v1Cgroups []string
	for _, dir := range spec.Cgroups {
		if spec.Cgroup2 != "" && strings.HasPrefix(dir+"/", strings.TrimSuffix(spec.Cgroup2, "/")+"/") {
			cg, err := os.Open(dir)
			if err != nil {
				return nil, fmt.Errorf("start %s: open cgroup: %w", spec.Name, err)
			}
			defer cg.Close()
			cmd.SysProcAttr.UseCgroupFD = true
			cmd.SysProcAttr.CgroupFD = int(cg.Fd())
			continue
		}
		v1Cgroups = append(v1Cgroups, dir)
	}

	p := &Process{
		Record: Record{Name: spec.Name, Path: path, Args: spec.Args, LogFile: spec.LogFile, Detached: spec.Detached},
		done:   make(chan struct{}),
	}
	started := make(chan error, 1)
	go func() {
		defer close(p.done)
		// Pdeathsig fires when the *thread* that forked the child exits,
		// not the process. The Go runtime may retire threads, so this
		// goroutine pins its thread for the child's whole life and only
		// lets it go after reaping the child.
		runtime.LockOSThread()
		// A child starts in the network namespace of the thread that
		// forks it. A thread moved to another namespace is never handed
		// back to the Go scheduler: the goroutine ends locked, and the
		// runtime destroys the thread.
		moved, err := enterNetns(spec.Netns)
		if err != nil {
			runtime.UnlockOSThread()
			started <- err
			return
		}
		if err := cmd.Start(); err != nil {
			if !moved {
				runtime.UnlockOSThread()
			}
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		if !moved {
			runtime.UnlockOSThread()
		}
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", spec.Name, path, err)
	}
	p.PID = cmd.Process.Pid
	for _, dir := range v1Cgroups {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(p.PID)), 0o644); err != nil {
			_ = cmd.Process.Kill()
			<-p.done
			return nil, fmt.Errorf("start %s: join cgroup %s: %w", spec.Name, dir, err)
		}
	}
	st, err := ReadStat(p.PID)
	if err != nil {
		// The child exited already; its start time is unknown, and a
		// record without one must never match a later process.
		// The Process is returned with the error, done, so that a caller
		// for whom a quick exit is an ordinary run (a container that exits
		// at once) can read how it ended (Err).
		<-p.done
		return p, fmt.Errorf("start %s: %w (%v)", spec.Name, ErrExited, p.err)
	}
	p.StartTicks = st.StartTicks
	return p, nil
}

// enterNetns moves the calling, locked thread into the network namespace
// file path (nothing when path is empty) and reports whether it did.
func enterNetns(path string) (bool, error) {
	if path == "" {
		return false, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("open network namespace: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return false, fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	return true, nil
}

// ErrExited reports a process that exited before Start could record it.
var ErrExited = errors.New("exited at once")

// Stat is the part of /proc/<pid>/stat the lab uses.
type Stat struct {
	State      byte
	PGRP       int
	Session    int
	StartTicks uint64
}

// ReadStat parses /proc/<pid>/stat.
func ReadStat(pid int) (Stat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may contain spaces
	// or parentheses itself, so fields are counted after the last ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("parse stat of pid %d: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("parse stat of pid %d: %d fields", pid, len(f)+2)
	}
	pgrp, err1 := strconv.Atoi(f[2])
	sid, err2 := strconv.Atoi(f[3])
	ticks, err3 := strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Stat{}, fmt.Errorf("parse stat of pid %d: %w", pid, err)
	}
	return Stat{State: f[0][0], PGRP: pgrp, Session: sid, StartTicks: ticks}, nil
}

// Alive reports whether the process rec describes is still running: same
// pid, same start time, same executable, and not a zombie.
func Alive(rec Record) bool {
	if rec.PID <= 0 || rec.StartTicks == 0 {
		return false
	}
	st, err := ReadStat(rec.PID)
	if err != nil || st.StartTicks != rec.StartTicks || st.State == 'Z' || st.State == 'X' {
		return false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", rec.PID))
	if err != nil {
		return false
	}
	// A binary replaced by a rebuild shows as "<path> (deleted)".
	return strings.TrimSuffix(exe, " (deleted)") == rec.Path
}

// sendSignal sends sig to the process rec describes, if it is still that
// process. It reports whether a signal was delivered.
func sendSignal(rec Record, sig syscall.Signal) (bool, error) {
	fd, err := unix.PidfdOpen(rec.PID, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return false, nil
		}
		return false, fmt.Errorf("open pidfd of %s (pid %d): %w", rec.Name, rec.PID, err)
	}
	defer unix.Close(fd)
	// The pidfd pins the process: if it is still the recorded one now, the
	// signal below cannot reach anything else.
	if !Alive(rec) {
		return false, nil
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return false, nil
		}
		return false, fmt.Errorf("signal %s (pid %d): %w", rec.Name, rec.PID, err)
	}
	return true, nil
}

// Stop sends SIGTERM to every live process in recs, waits up to grace for
// them to exit, then sends SIGKILL to the rest and waits until they are gone
// or ctx ends. Records of processes that no longer run are skipped, so Stop
// is idempotent.
func Stop(ctx context.Context, recs []Record, grace time.Duration) error {
	var errs []error
	for _, r := range recs {
		if _, err := sendSignal(r, syscall.SIGTERM); err != nil {
			errs = append(errs, err)
		}
	}
	if waitGone(ctx, recs, grace) {
		return errors.Join(errs...)
	}
	for _, r := range recs {
		if _, err := sendSignal(r, syscall.SIGKILL); err != nil {
			errs = append(errs, err)
		}
	}
	if !waitGone(ctx, recs, 0) {
		var left []string
		for _, r := range recs {
			if Alive(r) {
				left = append(left, fmt.Sprintf("%s (pid %d)", r.Name, r.PID))
			}
		}
		errs = append(errs, fmt.Errorf("processes still running after SIGKILL: %s: %w", strings.Join(left, ", "), ctx.Err()))
	}
	return errors.Join(errs...)
}

// waitGone polls until no record is alive. It gives up after limit (zero
// means no limit) or when ctx ends, and reports whether all are gone.
func waitGone(ctx context.Context, recs []Record, limit time.Duration) bool {
	var deadline <-chan time.Time
	if limit > 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		alive := false
		for _, r := range recs {
			if Alive(r) {
				alive = true
				break
			}
		}
		if !alive {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline:
			return false
		case <-tick.C:
		}
	}
}
