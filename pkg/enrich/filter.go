package enrich

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Filter selects pods the way kubectl flags do. The zero Filter selects
// everything.
type Filter struct {
	// Namespace (-n) selects pods of one namespace.
	Namespace string
	// PodPrefix (-p) selects pods whose name starts with it.
	PodPrefix string
	// Container (-c) selects containers by name.
	Container string
	// Selector (-l) selects pods by labels; nil selects all.
	Selector labels.Selector
	// Node (--node) selects the pods scheduled on one node. It must be a
	// node hosted on this machine: local mode traces only this kernel (a
	// machine hosts several nodes in the lab).
	Node string
}

// Empty reports whether the filter selects everything.
func (f Filter) Empty() bool {
	return f.Namespace == "" && f.PodPrefix == "" && f.Container == "" && (f.Selector == nil || f.Selector.Empty()) && f.Node == ""
}

// String describes the filter like the flags that built it.
func (f Filter) String() string {
	var parts []string
	if f.Namespace != "" {
		parts = append(parts, "-n "+f.Namespace)
	}
	if f.PodPrefix != "" {
		parts = append(parts, "-p "+f.PodPrefix)
	}
	if f.Container != "" {
		parts = append(parts, "-c "+f.Container)
	}
	if f.Selector != nil && !f.Selector.Empty() {
		parts = append(parts, "-l "+f.Selector.String())
	}
	if f.Node != "" {
		parts = append(parts, "--node "+f.Node)
	}
	return strings.Join(parts, " ")
}

// MatchPod reports whether the pod passes the pod-level parts of the filter.
func (f Filter) MatchPod(p *corev1.Pod) bool {
	if f.Namespace != "" && p.Namespace != f.Namespace {
		return false
	}
	if f.PodPrefix != "" && !strings.HasPrefix(p.Name, f.PodPrefix) {
		return false
	}
	if f.Selector != nil && !f.Selector.Matches(labels.Set(p.Labels)) {
		return false
	}
	if f.Container != "" && !hasContainer(p, f.Container) {
		return false
	}
	if f.Node != "" && p.Spec.NodeName != f.Node {
		return false
	}
	return true
}

func hasContainer(p *corev1.Pod, name string) bool {
	for _, c := range p.Spec.Containers {
		if c.Name == name {
			return true
		}
	}
	for _, c := range p.Spec.InitContainers {
		if c.Name == name {
			return true
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == name {
			return true
		}
	}
	return false
}

// ErrNoMatch is returned (wrapped) when a filter selects no pod.
var ErrNoMatch = errors.New("no pod matches the filter")

// Selection is the result of applying a Filter on this node: the pods it
// selects and the kernel-side keys (cgroup v2 ids, netns inodes) that
// identify their containers, for BPF filter maps.
type Selection struct {
	filter Filter
	e      *Enricher
	// PodUIDs are the selected pods.
	PodUIDs map[string]bool
	// CgroupIDs are the cgroup v2 ids of the selected containers (and, with
	// no container filter, of the pod-level cgroups).
	CgroupIDs map[uint64]bool
	// Netns are the network namespaces of the selected pods. Empty when a
	// container filter is set: a pod's containers share one namespace.
	Netns map[uint32]bool
}

// Select applies a filter. A filter that selects nothing is an error that
// says so; an empty filter returns nil (no filtering).
func (e *Enricher) Select(f Filter) (*Selection, error) {
	if f.Empty() {
		return nil, nil
	}
	if e == nil {
		return nil, fmt.Errorf("filter %s needs Kubernetes access to find the pods: no kubeconfig or API server", f)
	}
	if f.Node != "" && e.opts.NodeName != "" && f.Node != e.opts.NodeName {
		return nil, fmt.Errorf("--node %s: this is node %s; local tracing sees only its own node", f.Node, e.opts.NodeName)
	}
	if e.opts.Source == nil {
		return nil, fmt.Errorf("filter %s needs Kubernetes access to find the pods: no kubeconfig or API server", f)
	}
	s := &Selection{filter: f, e: e}
	s.Refresh()
	if len(s.PodUIDs) == 0 {
		where := ""
		if e.opts.NodeName != "" {
			where = " on node " + e.opts.NodeName
		}
		return nil, fmt.Errorf("%s%s: %w", f, where, ErrNoMatch)
	}
	return s, nil
}

// Refresh recomputes the selection: pods come and go, containers restart.
func (s *Selection) Refresh() {
	e := s.e
	uids := map[string]bool{}
	ids := map[string]string{} // container runtime ID -> name, selected pods only
	for _, p := range e.opts.Source.Pods() {
		if !s.filter.MatchPod(p) {
			continue
		}
		uids[string(p.UID)] = true
		for id, name := range podContainerIDs(p) {
			ids[id] = name
		}
	}
	cgroups := map[uint64]bool{}
	if e.opts.Cgroup2Root != "" {
		if paths, err := WalkCgroupIDs(e.opts.Cgroup2Root); err == nil {
			for id, path := range paths {
				ref, ok := ParseCgroupPath(path)
				if ok && uids[ref.PodUID] && s.containerWanted(ref, ids) {
					cgroups[id] = true
				}
			}
		}
	}
	netns := map[uint32]bool{}
	if s.filter.Container == "" {
		if ents, err := os.ReadDir(e.opts.ProcRoot); err == nil {
			for _, d := range ents {
				pid, err := strconv.ParseUint(d.Name(), 10, 32)
				if err != nil {
					continue
				}
				cgs, err := ReadProcCgroups(e.opts.ProcRoot, uint32(pid))
				if err != nil {
					continue
				}
				ref, ok := RefFromProcCgroups(cgs)
				if !ok || !uids[ref.PodUID] {
					continue
				}
				if ino, err := NetnsOfPID(e.opts.ProcRoot, uint32(pid)); err == nil && !s.isHostNetns(ino) {
					netns[ino] = true
				}
			}
		}
	}
	s.PodUIDs, s.CgroupIDs, s.Netns = uids, cgroups, netns
}

// isHostNetns keeps the host's namespace out of the netns filter, where a
// host-network pod would otherwise let every host process through.
func (s *Selection) isHostNetns(ino uint32) bool {
	host, err := NetnsOfPID(s.e.opts.ProcRoot, 1)
	return err == nil && host == ino
}

func (s *Selection) containerWanted(ref ContainerRef, ids map[string]string) bool {
	if s.filter.Container == "" {
		return true
	}
	if ref.ContainerID == "" {
		return false
	}
	for id, name := range ids {
		if name == s.filter.Container && (strings.HasPrefix(id, ref.ContainerID) || strings.HasPrefix(ref.ContainerID, id)) {
			return true
		}
	}
	return false
}

// Match reports whether an enriched event belongs to the selection; a nil
// selection matches everything. Used in user space for events that the
// kernel could not filter.
func (s *Selection) Match(k K8s) bool {
	if s == nil {
		return true
	}
	if !s.PodUIDs[k.PodUID] {
		return false
	}
	return s.filter.Container == "" || k.Container == s.filter.Container
}
