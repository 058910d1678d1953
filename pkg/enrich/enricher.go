// Package enrich names the Kubernetes objects behind kernel events: a
// process, a cgroup, a network namespace or an IP address becomes a node,
// namespace, pod and container, or a Service. It needs no container-runtime
// client: cgroup paths carry the pod UID and container ID, and the pod
// objects (from informers or a fixed list) carry the rest.
package enrich

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// K8s names where an event happened. Empty fields are unknown.
type K8s struct {
	Node      string `json:"node,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	Container string `json:"container,omitempty"`
	// PodUID is kept for filtering; it is not part of the output.
	PodUID string `json:"-"`
}

// Peer names the Kubernetes object behind an IP address.
type Peer struct {
	// Kind is "pod" or "svc".
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// String renders pod/ns/name or svc/ns/name.
func (p *Peer) String() string {
	if p == nil {
		return ""
	}
	return p.Kind + "/" + p.Namespace + "/" + p.Name
}

// Keys are the identities a kernel event may carry; zero means unknown.
type Keys struct {
	CgroupID uint64
	PID      uint32
	Netns    uint32
}

// Options configures an Enricher.
type Options struct {
	// Source provides pods and Services. Nil means no Kubernetes names
	// (no kubeconfig): events still flow, unlabelled.
	Source Source
	// NodeName is reported in every event's k8s.node.
	NodeName string
	// ProcRoot is /proc unless set (tests).
	ProcRoot string
	// Cgroup2Root is where the unified hierarchy is mounted; discovered
	// from mountinfo when empty. Empty after discovery means no cgroup2.
	Cgroup2Root string
	// RefreshEvery limits how often a lookup miss rescans /proc or the
	// cgroup tree; zero means one second.
	RefreshEvery time.Duration
	Logger       *slog.Logger
}

// Enricher resolves event keys to Kubernetes names. It is safe for
// concurrent use.
type Enricher struct {
	opts Options

	mu          sync.Mutex
	cgroupPaths map[uint64]string
	cgroupScan  time.Time
	// byCgroup caches fully named results per cgroup id (hot path: one
	// lookup per event). Only results that found their pod are kept, so
	// a pod the informer has not seen yet is looked up again.
	byCgroup map[uint64]K8s
	// peers caches IP -> Peer for one RefreshEvery: two lookups per event
	// otherwise, and IPs move between pods only slowly.
	peers     map[netip.Addr]*Peer
	peersFrom time.Time
	netnsRefs map[uint32]netnsEntry
	netnsScan time.Time
	pidRefs   map[uint32]pidEntry
}

type netnsEntry struct {
	ref ContainerRef
	// shared is set when processes of several pods (or of no pod) live in
	// this namespace, e.g. the host's: then it names nobody.
	shared bool
}

type pidEntry struct {
	ref ContainerRef
	ok  bool
}

// New returns an Enricher. It does not fail when cgroup2 is absent: cgroup
// id lookups then find nothing and the other keys are used.
func New(opts Options) *Enricher {
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.RefreshEvery == 0 {
		opts.RefreshEvery = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Cgroup2Root == "" {
		if root, err := Cgroup2Root(opts.ProcRoot); err == nil {
			opts.Cgroup2Root = root
		}
	}
	return &Enricher{opts: opts, cgroupPaths: map[uint64]string{}, byCgroup: map[uint64]K8s{}, netnsRefs: map[uint32]netnsEntry{}, pidRefs: map[uint32]pidEntry{}}
}

// NodeName is the node this enricher labels events with.
func (e *Enricher) NodeName() string { return e.opts.NodeName }

// HasSource reports whether Kubernetes objects are available.
func (e *Enricher) HasSource() bool { return e.opts.Source != nil }

// Source returns the object source, or nil.
func (e *Enricher) Source() Source { return e.opts.Source }

// Resolve names the container behind an event, trying the socket or task
// cgroup first, then the process, then the network namespace.
func (e *Enricher) Resolve(k Keys) K8s {
	if e == nil {
		return K8s{}
	}
	if k.CgroupID != 0 {
		e.mu.Lock()
		cached, hit := e.byCgroup[k.CgroupID]
		e.mu.Unlock()
		if hit {
			return cached
		}
		if ref, ok := e.refByCgroupID(k.CgroupID); ok {
			named := e.named(ref)
			if named.Pod != "" {
				e.mu.Lock()
				if len(e.byCgroup) > 65536 {
					e.byCgroup = map[uint64]K8s{}
				}
				e.byCgroup[k.CgroupID] = named
				e.mu.Unlock()
			}
			return named
		}
	}
	if k.PID != 0 {
		if ref, ok := e.refByPID(k.PID); ok {
			return e.named(ref)
		}
	}
	if k.Netns != 0 {
		if ref, ok := e.refByNetns(k.Netns); ok {
			return e.named(ref)
		}
	}
	return K8s{Node: e.opts.NodeName}
}

// ByCgroupPath names the container of a cgroup path (any hierarchy).
func (e *Enricher) ByCgroupPath(path string) K8s {
	ref, ok := ParseCgroupPath(path)
	if !ok {
		return K8s{Node: e.opts.NodeName}
	}
	return e.named(ref)
}

// Peer names the pod or Service that owns ip, or returns nil.
func (e *Enricher) Peer(ip netip.Addr) *Peer {
	if e == nil || e.opts.Source == nil || !ip.IsValid() {
		return nil
	}
	now := time.Now()
	e.mu.Lock()
	if now.Sub(e.peersFrom) > e.opts.RefreshEvery || len(e.peers) > 65536 {
		e.peers, e.peersFrom = map[netip.Addr]*Peer{}, now
	}
	p, hit := e.peers[ip]
	e.mu.Unlock()
	if hit {
		return p
	}
	if svc := e.opts.Source.ServiceByIP(ip); svc != nil {
		p = &Peer{Kind: "svc", Namespace: svc.Namespace, Name: svc.Name}
	} else if pod := e.opts.Source.PodByIP(ip); pod != nil {
		p = &Peer{Kind: "pod", Namespace: pod.Namespace, Name: pod.Name}
	}
	e.mu.Lock()
	e.peers[ip] = p
	e.mu.Unlock()
	return p
}

func (e *Enricher) named(ref ContainerRef) K8s {
	k := K8s{Node: e.opts.NodeName, PodUID: ref.PodUID}
	if e.opts.Source == nil {
		return k
	}
	p := e.opts.Source.PodByUID(ref.PodUID)
	if p == nil {
		return k
	}
	k.Namespace, k.Pod = p.Namespace, p.Name
	k.Container = containerName(p, ref.ContainerID)
	if k.Node == "" {
		k.Node = p.Spec.NodeName
	}
	return k
}

func (e *Enricher) refByCgroupID(id uint64) (ContainerRef, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	path, ok := e.cgroupPaths[id]
	if !ok && e.opts.Cgroup2Root != "" && time.Since(e.cgroupScan) > e.opts.RefreshEvery {
		e.cgroupScan = time.Now()
		if m, err := WalkCgroupIDs(e.opts.Cgroup2Root); err == nil {
			e.cgroupPaths = m
		} else {
			e.opts.Logger.Debug("cgroup walk failed", "err", err)
		}
		path, ok = e.cgroupPaths[id]
	}
	if !ok {
		return ContainerRef{}, false
	}
	return ParseCgroupPath(path)
}

func (e *Enricher) refByPID(pid uint32) (ContainerRef, bool) {
	e.mu.Lock()
	if ent, ok := e.pidRefs[pid]; ok {
		e.mu.Unlock()
		return ent.ref, ent.ok
	}
	e.mu.Unlock()
	cgs, err := ReadProcCgroups(e.opts.ProcRoot, pid)
	if err != nil {
		// The process is gone: do not cache, another may take its pid.
		return ContainerRef{}, false
	}
	ref, ok := RefFromProcCgroups(cgs)
	e.mu.Lock()
	if len(e.pidRefs) > 65536 {
		e.pidRefs = map[uint32]pidEntry{}
	}
	e.pidRefs[pid] = pidEntry{ref: ref, ok: ok}
	e.mu.Unlock()
	return ref, ok
}

func (e *Enricher) refByNetns(ino uint32) (ContainerRef, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.netnsRefs[ino]
	if !ok && time.Since(e.netnsScan) > e.opts.RefreshEvery {
		e.netnsScan = time.Now()
		e.netnsRefs = e.scanNetns()
		ent, ok = e.netnsRefs[ino]
	}
	if !ok || ent.shared {
		return ContainerRef{}, false
	}
	return ent.ref, true
}

// scanNetns maps each network namespace to the pod whose processes live in
// it. It reads /proc/<pid>/ns/net and /proc/<pid>/cgroup for every process.
func (e *Enricher) scanNetns() map[uint32]netnsEntry {
	out := map[uint32]netnsEntry{}
	ents, err := os.ReadDir(e.opts.ProcRoot)
	if err != nil {
		return out
	}
	for _, d := range ents {
		pid, err := strconv.ParseUint(d.Name(), 10, 32)
		if err != nil {
			continue
		}
		ino, err := NetnsOfPID(e.opts.ProcRoot, uint32(pid))
		if err != nil {
			continue
		}
		cgs, err := ReadProcCgroups(e.opts.ProcRoot, uint32(pid))
		if err != nil {
			continue
		}
		ref, ok := RefFromProcCgroups(cgs)
		cur, seen := out[ino]
		switch {
		case !seen:
			out[ino] = netnsEntry{ref: ref, shared: !ok}
		case !ok || cur.ref.PodUID != ref.PodUID:
			cur.shared = true
			out[ino] = cur
		case cur.ref.ContainerID == "" && ref.ContainerID != "":
			cur.ref = ref
			out[ino] = cur
		}
	}
	return out
}

// NetnsOfPID returns the inode number of a process's network namespace.
func NetnsOfPID(procRoot string, pid uint32) (uint32, error) {
	link, err := os.Readlink(filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10), "ns", "net"))
	if err != nil {
		return 0, fmt.Errorf("read netns of pid %d: %w", pid, err)
	}
	// net:[4026531840]
	s := strings.TrimSuffix(strings.TrimPrefix(link, "net:["), "]")
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("read netns of pid %d: unexpected link %q", pid, link)
	}
	return uint32(n), nil
}

// podContainerIDs returns the runtime IDs of a pod's containers by name.
func podContainerIDs(p *corev1.Pod) map[string]string {
	out := map[string]string{}
	for _, list := range [][]corev1.ContainerStatus{p.Status.ContainerStatuses, p.Status.InitContainerStatuses, p.Status.EphemeralContainerStatuses} {
		for _, cs := range list {
			id := cs.ContainerID
			if i := strings.Index(id, "://"); i >= 0 {
				id = id[i+3:]
			}
			if id != "" {
				out[id] = cs.Name
			}
		}
	}
	return out
}
