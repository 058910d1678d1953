package logmon

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/kdiag/kdiag/pkg/nodehealth"
)

var (
	// oomKillRE matches the kernel's one-line OOM summary (Linux >= 4.19).
	oomKillRE = regexp.MustCompile(`oom-kill:(\S+)`)
	// killedRE matches "Killed process N (task) total-vm:..kB, anon-rss:..kB, file-rss:..kB, shmem-rss:..kB".
	killedRE = regexp.MustCompile(`Killed process (\d+) \((.*?)\) total-vm:\d+kB, anon-rss:(\d+)kB, file-rss:(\d+)kB(?:, shmem-rss:(\d+)kB)?`)
	// podUIDRE finds a pod UID in a cgroupfs (dashes) or systemd (underscores) path.
	podUIDRE = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})`)
	// containerIDRE finds a 64-hex container ID in the last path element.
	containerIDRE = regexp.MustCompile(`([0-9a-f]{64})(?:\.scope)?$`)
)

// oomTracker pairs the kernel's "oom-kill:" line with the "Killed process"
// line that follows it, by PID.
type oomTracker struct {
	pending []nodehealth.OOMKill
}

// observe remembers an "oom-kill:" line.
func (t *oomTracker) observe(text string) {
	m := oomKillRE.FindStringSubmatch(text)
	if m == nil {
		return
	}
	k := ParseOOMKillLine(m[1])
	if k.PID == 0 {
		return
	}
	if len(t.pending) >= 16 {
		t.pending = t.pending[1:]
	}
	t.pending = append(t.pending, k)
}

// killed returns the OOM kill a "Killed process" line reports, merged with
// the matching "oom-kill:" line when one was seen; nil for other lines.
func (t *oomTracker) killed(text string) *nodehealth.OOMKill {
	m := killedRE.FindStringSubmatch(text)
	if m == nil {
		return nil
	}
	pid, _ := strconv.Atoi(m[1])
	k := nodehealth.OOMKill{PID: pid, Task: m[2]}
	for i := len(t.pending) - 1; i >= 0; i-- {
		if t.pending[i].PID == pid {
			k = t.pending[i]
			t.pending = append(t.pending[:i], t.pending[i+1:]...)
			break
		}
	}
	k.AnonRSSKB, _ = strconv.ParseInt(m[3], 10, 64)
	k.FileRSSKB, _ = strconv.ParseInt(m[4], 10, 64)
	k.ShmemRSSKB, _ = strconv.ParseInt(m[5], 10, 64)
	if k.Task == "" {
		k.Task = m[2]
	}
	return &k
}

// ParseOOMKillLine parses the comma-separated key=value list after
// "oom-kill:" (constraint, oom_memcg, task_memcg, task, pid, uid, ...).
func ParseOOMKillLine(kv string) nodehealth.OOMKill {
	var k nodehealth.OOMKill
	for _, f := range strings.Split(kv, ",") {
		key, val, _ := strings.Cut(f, "=")
		switch key {
		case "constraint":
			k.Constraint = val
		case "task_memcg":
			k.MemCG = val
		case "task":
			k.Task = val
		case "pid":
			k.PID, _ = strconv.Atoi(val)
		}
	}
	k.PodUID, k.ContainerID = PodFromCgroup(k.MemCG)
	return k
}

// PodFromCgroup extracts the pod UID and container ID from a cgroup path
// written by the kubelet's cgroupfs or systemd driver; both are empty when
// the path is not a pod's.
func PodFromCgroup(path string) (podUID, containerID string) {
	m := podUIDRE.FindStringSubmatch(path)
	if m == nil {
		return "", ""
	}
	podUID = strings.ReplaceAll(m[1], "_", "-")
	last := path[strings.LastIndexByte(path, '/')+1:]
	if c := containerIDRE.FindStringSubmatch(last); c != nil {
		containerID = c[1]
	}
	return podUID, containerID
}
