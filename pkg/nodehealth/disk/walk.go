package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Limits bound one walk. The walk stops at the first bound it reaches and
// says which in Scan.Truncated; sizes are then lower bounds.
type Limits struct {
	// MaxEntries is the most directory entries looked at (default 200,000:
	// one lstat each, a few seconds on a cold SSD).
	MaxEntries int
	// MaxDepth is how deep below a root the walk descends (default 16).
	MaxDepth int
	// MaxDuration ends the walk (default 10s).
	MaxDuration time.Duration
	// ReportDepth is how deep below a root directories are reported as
	// consumers (default 3, like du -d 3).
	ReportDepth int
	// Top is how many consumers are kept (default 10).
	Top int
}

// DefaultLimits returns the limits used unless configured.
func DefaultLimits() Limits {
	return Limits{MaxEntries: 200_000, MaxDepth: 16, MaxDuration: 10 * time.Second, ReportDepth: 3, Top: 10}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxDuration <= 0 {
		l.MaxDuration = d.MaxDuration
	}
	if l.ReportDepth <= 0 {
		l.ReportDepth = d.ReportDepth
	}
	if l.Top <= 0 {
		l.Top = d.Top
	}
	return l
}

// Walk finds the largest directories under fs's paths, within fs (it does
// not cross into other filesystems) and within the limits. It runs on an
// OS thread of its own with idle I/O priority and nice 19, so that it
// yields the disk and the CPU to the node's workload.
//
// It is hand-written rather than filepath.WalkDir because it must stop at
// bounds, stay on one device, count allocated blocks, count hard links once
// and sum sizes up to a reporting depth in a single pass.
func Walk(ctx context.Context, fs Filesystem, lim Limits) Scan {
	lim = lim.withDefaults()
	done := make(chan Scan, 1)
	go func() {
		// The thread is never unlocked: when this goroutine ends the
		// runtime destroys it, and its lowered priorities with it.
		runtime.LockOSThread()
		lowerPriority()
		done <- walk(ctx, fs, lim)
	}()
	return <-done
}

// lowerPriority puts the calling thread in the idle I/O class (it gets disk
// time only when nobody else wants it) and at nice 19. Failures are
// ignored: the walk's other bounds still hold.
func lowerPriority() {
	const ioprioWhoProcess, ioprioClassIdle, ioprioClassShift = 1, 3, 13
	_, _, _ = unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(unix.Gettid()), ioprioClassIdle<<ioprioClassShift)
	// On Linux, setpriority on a thread ID affects that thread only.
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
}

type walker struct {
	ctx      context.Context
	dev      uint64
	lim      Limits
	deadline time.Time
	scan     *Scan
	sizes    map[string]int64
	links    map[uint64]bool
	stop     string
	deep     bool // a directory below MaxDepth was skipped
}

func walk(ctx context.Context, fs Filesystem, lim Limits) Scan {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, lim.MaxDuration)
	defer cancel()
	scan := Scan{Time: start}
	w := &walker{ctx: ctx, dev: fs.Device, lim: lim, scan: &scan, sizes: map[string]int64{}, links: map[uint64]bool{}}
	for _, root := range roots(fs.Paths) {
		scan.Paths = append(scan.Paths, root)
		if w.stop != "" {
			break
		}
		w.dir(root, 0)
	}
	scan.Truncated = w.stop
	if scan.Truncated == "" && w.deep {
		scan.Truncated = fmt.Sprintf("depth: directories more than %d levels below a root were not entered", lim.MaxDepth)
	}
	scan.Duration = time.Since(start)
	for p, b := range w.sizes {
		scan.Top = append(scan.Top, Consumer{Path: p, Bytes: b})
	}
	sort.Slice(scan.Top, func(i, j int) bool {
		if scan.Top[i].Bytes != scan.Top[j].Bytes {
			return scan.Top[i].Bytes > scan.Top[j].Bytes
		}
		return scan.Top[i].Path < scan.Top[j].Path
	})
	if len(scan.Top) > lim.Top {
		scan.Top = scan.Top[:lim.Top]
	}
	return scan
}

// roots drops paths nested in another path of the list, so that nothing
// is counted twice.
func roots(paths []string) []string {
	var out []string
	for _, p := range paths {
		p = filepath.Clean(p)
		nested := false
		for _, q := range paths {
			q = filepath.Clean(q)
			if q != p && strings.HasPrefix(p, strings.TrimSuffix(q, "/")+"/") {
				nested = true
			}
		}
		if !nested && !contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// dir walks one directory and returns the bytes under it.
func (w *walker) dir(path string, depth int) int64 {
	f, err := os.Open(path)
	if err != nil {
		w.errorf("%s: %v", path, err)
		return 0
	}
	defer f.Close()
	var total int64
	for w.stop == "" {
		// Read in batches so that a huge directory does not load at once.
		ents, err := f.ReadDir(256)
		for _, e := range ents {
			if w.stop = w.bound(); w.stop != "" {
				break
			}
			w.scan.Entries++
			var st unix.Stat_t
			p := filepath.Join(path, e.Name())
			if err := unix.Fstatat(int(f.Fd()), e.Name(), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				w.errorf("%s: %v", p, err)
				continue
			}
			if uint64(st.Dev) != w.dev { //nolint:unconvert // not uint64 on every arch
				continue // another filesystem mounted here
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				if depth+1 > w.lim.MaxDepth {
					w.deep = true
					continue
				}
				total += w.dir(p, depth+1)
				continue
			}
			if st.Nlink > 1 {
				if w.links[st.Ino] {
					continue
				}
				w.links[st.Ino] = true
			}
			total += st.Blocks * 512
		}
		if errors.Is(err, io.EOF) || (err == nil && len(ents) == 0) {
			break
		}
		if err != nil {
			w.errorf("%s: %v", path, err)
			break
		}
	}
	if depth <= w.lim.ReportDepth {
		w.sizes[path] = total
	}
	return total
}

// bound returns the bound reached, or "".
func (w *walker) bound() string {
	if w.scan.Entries >= w.lim.MaxEntries {
		return fmt.Sprintf("entries: stopped after %d entries", w.lim.MaxEntries)
	}
	if w.scan.Entries%256 == 0 && w.ctx.Err() != nil {
		if errors.Is(w.ctx.Err(), context.DeadlineExceeded) {
			return fmt.Sprintf("duration: stopped after %s", w.lim.MaxDuration)
		}
		return "cancelled"
	}
	return ""
}

// errorf records an unreadable path; at most 10 are kept.
func (w *walker) errorf(format string, args ...any) {
	if len(w.scan.Errors) < 10 {
		w.scan.Errors = append(w.scan.Errors, fmt.Sprintf(format, args...))
	}
}
