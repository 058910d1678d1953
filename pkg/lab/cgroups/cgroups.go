// Package cgroups makes kubelet-style container cgroups
// (<parent>/kubepods/<qos>/pod<UID>/<containerID>, cgroupfs driver) in the
// cgroup2 hierarchy and, on hybrid hosts, in the v1 memory hierarchy, with
// a memory limit, and reads their OOM-kill counters. Everything sits below
// one per-owner parent (a lab's, a test's), so that KillAll and RemoveAll
// clean up after processes that were killed without cleaning up.
package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/enrich"
)

// Roots are the mount points of the hierarchies in use; an empty field
// means the hierarchy is absent.
type Roots struct {
	// V2 is the cgroup2 mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified
	// on hybrid hosts).
	V2 string `json:"v2,omitempty"`
	// MemoryV1 is the v1 memory controller's mount, on hybrid hosts.
	MemoryV1 string `json:"memoryV1,omitempty"`
}

// Detect finds the hierarchies this process sees.
func Detect() (Roots, error) {
	var r Roots
	if root, err := enrich.Cgroup2Root("/proc"); err == nil {
		r.V2 = root
	}
	if root, err := enrich.CgroupV1Root("/proc", "memory"); err == nil {
		r.MemoryV1 = root
	}
	if r.V2 == "" && r.MemoryV1 == "" {
		return r, errors.New("no cgroup2 and no v1 memory hierarchy mounted")
	}
	return r, nil
}

// HasMemoryV2 reports whether the cgroup2 hierarchy has the memory controller
// (false on hybrid hosts, where memory is a v1 controller).
func (r Roots) HasMemoryV2() bool {
	if r.V2 == "" {
		return false
	}
	data, err := os.ReadFile(filepath.Join(r.V2, "cgroup.controllers"))
	return err == nil && slices.Contains(strings.Fields(string(data)), "memory")
}

// Parent is the owner's cgroup directory name under each root (such as
// "kdiag-lab-1a2b3c"). Its paths are Dirs.
type Parent string

// Dirs returns the parent's directories under each root.
func (r Roots) Dirs(p Parent) []string {
	var out []string
	for _, root := range []string{r.V2, r.MemoryV1} {
		if root != "" {
			out = append(out, filepath.Join(root, string(p)))
		}
	}
	return out
}

// Group is one container's cgroup directories.
type Group struct {
	// V2 is the cgroup2 directory ("" without cgroup2), MemoryV1 the v1
	// memory one ("" without it).
	V2, MemoryV1 string
}

// Dirs returns the group's directories, for process.Spec.Cgroups.
func (g Group) Dirs() []string {
	var out []string
	for _, d := range []string{g.V2, g.MemoryV1} {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

// QOSDir returns the kubelet's directory for a pod's QoS class:
// "kubepods" for Guaranteed, "kubepods/burstable", "kubepods/besteffort".
func QOSDir(qos corev1.PodQOSClass) string {
	switch qos {
	case corev1.PodQOSGuaranteed:
		return "kubepods"
	case corev1.PodQOSBestEffort:
		return "kubepods/besteffort"
	default:
		return "kubepods/burstable"
	}
}

// ContainerPath returns <qos dir>/pod<UID>/<containerID> relative to a
// parent. containerID is the bare ID, without "containerd://".
func ContainerPath(qos corev1.PodQOSClass, podUID, containerID string) string {
	return filepath.Join(QOSDir(qos), "pod"+podUID, containerID)
}

// Create makes the container cgroup rel (see ContainerPath) below parent in
// every hierarchy, with memoryLimit bytes (0: none) as the v1
// memory.limit_in_bytes and, where cgroup2 has the memory controller,
// memory.max. Swap is off for the container, so that going over the limit
// is an OOM kill, not swapping.
func (r Roots) Create(parent Parent, rel string, memoryLimit int64) (Group, error) {
	var g Group
	if r.V2 != "" {
		dir := filepath.Join(r.V2, string(parent), rel)
		if err := r.mkdirV2(filepath.Join(r.V2, string(parent)), rel); err != nil {
			return g, err
		}
		g.V2 = dir
		if memoryLimit > 0 && r.HasMemoryV2() {
			if err := write(dir, "memory.max", strconv.FormatInt(memoryLimit, 10)); err != nil {
				return g, err
			}
			_ = write(dir, "memory.swap.max", "0")
		}
	}
	if r.MemoryV1 != "" {
		dir := filepath.Join(r.MemoryV1, string(parent), rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return g, fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		g.MemoryV1 = dir
		if memoryLimit > 0 {
			if err := write(dir, "memory.limit_in_bytes", strconv.FormatInt(memoryLimit, 10)); err != nil {
				return g, err
			}
			_ = write(dir, "memory.swappiness", "0")
		}
	}
	return g, nil
}

// mkdirV2 creates base/rel level by level, enabling the memory controller
// for the children of each new level when the hierarchy has it (cgroup2
// only hands a controller down when every ancestor enables it).
func (r Roots) mkdirV2(base, rel string) error {
	mem := r.HasMemoryV2()
	if mem {
		// The root enables it for base's level.
		_ = write(r.V2, "cgroup.subtree_control", "+memory")
	}
	dir := base
	parts := append([]string{""}, strings.Split(rel, "/")...)
	for i, part := range parts {
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		if mem && i < len(parts)-1 {
			if err := write(dir, "cgroup.subtree_control", "+memory"); err != nil {
				return err
			}
		}
	}
	return nil
}

// OOMKills returns how many processes of the group the kernel OOM-killed:
// the v1 memory.oom_control's oom_kill, or cgroup2 memory.events' oom_kill.
func (g Group) OOMKills() (int64, error) {
	switch {
	case g.MemoryV1 != "":
		return readKey(filepath.Join(g.MemoryV1, "memory.oom_control"), "oom_kill")
	case g.V2 != "":
		return readKey(filepath.Join(g.V2, "memory.events"), "oom_kill")
	}
	return 0, errors.New("no memory cgroup")
}

// readKey reads "key value" lines and returns key's value (0 if absent).
func readKey(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s in %s: %w", key, path, err)
			}
			return n, nil
		}
	}
	return 0, sc.Err()
}

// Remove removes the group's directories after killing what still runs in
// them. A missing directory is fine.
func (g Group) Remove() error {
	var errs []error
	for _, d := range g.Dirs() {
		if err := RemoveTree(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Procs lists the pids in dir and its descendants.
func Procs(dir string) []int {
	var out []int
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
		return nil
	})
	return out
}

// KillTree sends SIGKILL to every process in dir and its descendants.
func KillTree(dir string) {
	for _, pid := range Procs(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// RemoveTree kills every process in dir's tree and removes the
// directories bottom-up, retrying for a few seconds while killed tasks
// finish exiting. A missing dir is fine.
func RemoveTree(dir string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		KillTree(dir)
		var dirs []string
		_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		var failed error
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				failed = fmt.Errorf("remove cgroup %s: %w", dirs[i], err)
			}
		}
		if failed == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return failed
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RemoveAll removes the parent's tree in every hierarchy (see RemoveTree).
func (r Roots) RemoveAll(p Parent) error {
	if p == "" {
		return nil
	}
	var errs []error
	for _, d := range r.Dirs(p) {
		if err := RemoveTree(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func write(dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %s to %s: %w", value, filepath.Join(dir, file), err)
	}
	return nil
}
