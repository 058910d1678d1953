package enrich

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// ContainerRef is what a cgroup path says about a Kubernetes container.
type ContainerRef struct {
	// PodUID is the pod's metadata.uid with dashes, e.g. 0e5c...-....
	PodUID string
	// ContainerID is the runtime's container ID without the runtime prefix.
	// It is empty for the pod-level cgroup (and for the sandbox when the
	// runtime does not put it in its own cgroup).
	ContainerID string
}

var (
	// kubelet cgroupfs driver: .../kubepods/burstable/pod<uid>/<cid>
	// (uid with dashes, cid a bare hex ID).
	cgroupfsRe = regexp.MustCompile(`(?:^|/)kubepods(?:/(?:burstable|besteffort|guaranteed))?/pod([0-9a-fA-F-]{36})(?:/([^/]+))?`)
	// kubelet systemd driver: kubepods-burstable-pod<uid_with_underscores>.slice/
	// cri-containerd-<cid>.scope, crio-<cid>.scope or docker-<cid>.scope.
	systemdRe = regexp.MustCompile(`kubepods(?:-(?:burstable|besteffort|guaranteed))?-pod([0-9a-fA-F_]{36})\.slice(?:/([^/]+))?`)
	scopeRe   = regexp.MustCompile(`^(?:cri-containerd|crio|docker|containerd)-([0-9a-fA-F]+)\.scope$`)
	bareIDRe  = regexp.MustCompile(`^(?:cri-containerd-|crio-|docker-)?([0-9a-fA-F]{12,128})$`)
)

// ParseCgroupPath extracts the pod UID and container ID from a cgroup path as
// laid out by the kubelet's cgroupfs or systemd drivers. ok is false for a
// path outside kubepods.
func ParseCgroupPath(path string) (ref ContainerRef, ok bool) {
	if m := systemdRe.FindStringSubmatch(path); m != nil {
		ref.PodUID = strings.ReplaceAll(m[1], "_", "-")
		if s := scopeRe.FindStringSubmatch(m[2]); s != nil {
			ref.ContainerID = s[1]
		}
		return ref, true
	}
	if m := cgroupfsRe.FindStringSubmatch(path); m != nil {
		ref.PodUID = m[1]
		if s := bareIDRe.FindStringSubmatch(m[2]); s != nil {
			ref.ContainerID = s[1]
		}
		return ref, true
	}
	return ContainerRef{}, false
}

// ProcCgroup is one line of /proc/<pid>/cgroup.
type ProcCgroup struct {
	// Controllers is empty for the cgroup2 line ("0::/path").
	Controllers string
	Path        string
}

// ReadProcCgroups parses /proc/<pid>/cgroup under procRoot.
func ReadProcCgroups(procRoot string, pid uint32) ([]ProcCgroup, error) {
	f, err := os.Open(filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10), "cgroup"))
	if err != nil {
		return nil, fmt.Errorf("read cgroups of pid %d: %w", pid, err)
	}
	defer f.Close()
	var out []ProcCgroup
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		out = append(out, ProcCgroup{Controllers: parts[1], Path: parts[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read cgroups of pid %d: %w", pid, err)
	}
	return out, nil
}

// RefFromProcCgroups returns the Kubernetes reference found in any of a
// process's cgroups, preferring the cgroup2 line, then the memory and
// name=systemd v1 hierarchies (a hybrid host may keep pods in v1 only).
func RefFromProcCgroups(cgs []ProcCgroup) (ContainerRef, bool) {
	rank := func(c ProcCgroup) int {
		switch {
		case c.Controllers == "":
			return 0
		case strings.Contains(c.Controllers, "memory"):
			return 1
		case strings.Contains(c.Controllers, "name=systemd"):
			return 2
		}
		return 3
	}
	var podOnly *ContainerRef
	bestRank := 99
	var best *ContainerRef
	for _, c := range cgs {
		ref, ok := ParseCgroupPath(c.Path)
		if !ok {
			continue
		}
		if ref.ContainerID == "" {
			if podOnly == nil {
				podOnly = &ref
			}
			continue
		}
		if r := rank(c); best == nil || r < bestRank {
			best, bestRank = &ref, r
		}
	}
	switch {
	case best != nil:
		return *best, true
	case podOnly != nil:
		return *podOnly, true
	}
	return ContainerRef{}, false
}

// Cgroup2Root returns where the unified (cgroup2) hierarchy is mounted:
// /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a hybrid one.
// It reads /proc/self/mountinfo under procRoot.
func Cgroup2Root(procRoot string) (string, error) {
	f, err := os.Open(filepath.Join(procRoot, "self", "mountinfo"))
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 0:30 / /sys/fs/cgroup/unified rw,... - cgroup2 cgroup2 rw
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				return fields[4], nil
			}
		}
	}
	return "", fmt.Errorf("find cgroup2 mount: no cgroup2 file system is mounted")
}

// CgroupV1Root returns where the cgroup v1 hierarchy of controller (e.g.
// "memory") is mounted, or an error when it is not.
func CgroupV1Root(procRoot, controller string) (string, error) {
	f, err := os.Open(filepath.Join(procRoot, "self", "mountinfo"))
	if err != nil {
		return "", fmt.Errorf("find cgroup v1 %s mount: %w", controller, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld != "-" || i+3 >= len(fields) || fields[i+1] != "cgroup" {
				continue
			}
			for _, opt := range strings.Split(fields[i+3], ",") {
				if opt == controller {
					return fields[4], nil
				}
			}
		}
	}
	return "", fmt.Errorf("find cgroup v1 %s mount: not mounted", controller)
}

// CgroupID returns the id of the cgroup at dir. On 64-bit kernels the
// cgroup id that BPF helpers report is the kernfs inode number, which a
// stat shows; that is simpler than name_to_handle_at and equivalent.
func CgroupID(dir string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup %s: %w", dir, err)
	}
	return st.Ino, nil
}

// WalkCgroupIDs maps the id of every cgroup under root to its path relative
// to root (with a leading slash, as /proc/<pid>/cgroup shows it).
func WalkCgroupIDs(root string) (map[uint64]string, error) {
	out := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// A cgroup removed while walking is not an error.
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		out[st.Ino] = "/" + strings.TrimPrefix(filepath.ToSlash(rel), ".")
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk cgroups under %s: %w", root, err)
	}
	return out, nil
}
