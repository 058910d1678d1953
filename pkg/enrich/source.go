package enrich

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Source answers the Kubernetes questions that enrichment asks. It is fed
// either by informers (a live cluster) or by a fixed list (tests, offline).
type Source interface {
	// PodByUID returns the pod with this UID, or nil.
	PodByUID(uid string) *corev1.Pod
	// PodByIP returns the (non host-network) pod that owns this IP, or nil.
	PodByIP(ip netip.Addr) *corev1.Pod
	// ServiceByIP returns the Service whose cluster IP this is, or nil.
	ServiceByIP(ip netip.Addr) *corev1.Service
	// Pods returns the pods that enrichment may select (this node's pods).
	Pods() []*corev1.Pod
}

// StaticSource is a Source over a fixed set of objects.
type StaticSource struct {
	mu       sync.RWMutex
	pods     []*corev1.Pod
	byUID    map[string]*corev1.Pod
	byIP     map[netip.Addr]*corev1.Pod
	services map[netip.Addr]*corev1.Service
}

// NewStaticSource indexes pods and services once.
func NewStaticSource(pods []*corev1.Pod, services []*corev1.Service) *StaticSource {
	s := &StaticSource{}
	s.Set(pods, services)
	return s
}

// Set replaces the objects the source serves.
func (s *StaticSource) Set(pods []*corev1.Pod, services []*corev1.Service) {
	byUID := map[string]*corev1.Pod{}
	byIP := map[netip.Addr]*corev1.Pod{}
	for _, p := range pods {
		byUID[string(p.UID)] = p
		for _, ip := range podIPs(p) {
			byIP[ip] = p
		}
	}
	svcs := map[netip.Addr]*corev1.Service{}
	for _, svc := range services {
		for _, ip := range serviceIPs(svc) {
			svcs[ip] = svc
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pods, s.byUID, s.byIP, s.services = pods, byUID, byIP, svcs
}

// PodByUID implements Source.
func (s *StaticSource) PodByUID(uid string) *corev1.Pod {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byUID[uid]
}

// PodByIP implements Source.
func (s *StaticSource) PodByIP(ip netip.Addr) *corev1.Pod {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byIP[ip.Unmap()]
}

// ServiceByIP implements Source.
func (s *StaticSource) ServiceByIP(ip netip.Addr) *corev1.Service {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.services[ip.Unmap()]
}

// Pods implements Source.
func (s *StaticSource) Pods() []*corev1.Pod {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]*corev1.Pod(nil), s.pods...)
}

func podIPs(p *corev1.Pod) []netip.Addr {
	if p.Spec.HostNetwork {
		return nil
	}
	var out []netip.Addr
	seen := map[string]bool{}
	for _, s := range append([]string{p.Status.PodIP}, ipStrings(p.Status.PodIPs)...) {
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

func ipStrings(ips []corev1.PodIP) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.IP)
	}
	return out
}

func serviceIPs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, s := range append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...) {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

const (
	podUIDIndex    = "uid"
	podIPIndex     = "ip"
	serviceIPIdx   = "clusterIP"
	informerResync = 0
)

// InformerSource is a Source backed by client-go informers: this node's
// pods (field selector spec.nodeName) for process enrichment and filters,
// and, when remote IPs are to be named, all pods and Services.
type InformerSource struct {
	nodeName  string
	localPods cache.Indexer
	allPods   cache.Indexer
	services  cache.Indexer
}

// InformerOptions configures NewInformerSource.
type InformerOptions struct {
	// NodeName restricts the local pods to those scheduled on this node.
	// Empty means every pod (for a laptop pointed at a one-node cluster).
	NodeName string
	// ResolveRemote also watches every pod and Service of the cluster so
	// that the far end of a connection is named.
	ResolveRemote bool
	// SyncTimeout bounds the initial list; zero means 30s.
	SyncTimeout time.Duration
}

// NewInformerSource starts the informers and waits until they have synced.
// They stop when ctx is done.
func NewInformerSource(ctx context.Context, client kubernetes.Interface, opts InformerOptions) (*InformerSource, error) {
	timeout := opts.SyncTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	s := &InformerSource{nodeName: opts.NodeName}
	var syncs []cache.InformerSynced
	// The informers stop with ctx, or at once when they fail to sync.
	ctx, stop := context.WithCancel(ctx)
	ok := false
	defer func() {
		if !ok {
			stop()
		}
	}()

	localFactory := informers.NewSharedInformerFactoryWithOptions(client, informerResync,
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			if opts.NodeName != "" {
				lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", opts.NodeName).String()
			}
		}))
	local := localFactory.Core().V1().Pods().Informer()
	if err := local.AddIndexers(podIndexers()); err != nil {
		return nil, fmt.Errorf("index pods: %w", err)
	}
	s.localPods = local.GetIndexer()
	syncs = append(syncs, local.HasSynced)
	localFactory.Start(ctx.Done())

	if opts.ResolveRemote {
		allFactory := informers.NewSharedInformerFactory(client, informerResync)
		all := allFactory.Core().V1().Pods().Informer()
		if err := all.AddIndexers(podIndexers()); err != nil {
			return nil, fmt.Errorf("index pods: %w", err)
		}
		svc := allFactory.Core().V1().Services().Informer()
		if err := svc.AddIndexers(cache.Indexers{serviceIPIdx: func(obj any) ([]string, error) {
			s, ok := obj.(*corev1.Service)
			if !ok {
				return nil, nil
			}
			return addrStrings(serviceIPs(s)), nil
		}}); err != nil {
			return nil, fmt.Errorf("index services: %w", err)
		}
		s.allPods, s.services = all.GetIndexer(), svc.GetIndexer()
		syncs = append(syncs, all.HasSynced, svc.HasSynced)
		allFactory.Start(ctx.Done())
	}

	syncCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), syncs...) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("list pods and services from the API server: %w", err)
		}
		return nil, fmt.Errorf("list pods and services from the API server: not synced within %s (unreachable or forbidden?)", timeout)
	}
	ok = true
	return s, nil
}

func podIndexers() cache.Indexers {
	return cache.Indexers{
		podUIDIndex: func(obj any) ([]string, error) {
			p, ok := obj.(*corev1.Pod)
			if !ok {
				return nil, nil
			}
			return []string{string(p.UID)}, nil
		},
		podIPIndex: func(obj any) ([]string, error) {
			p, ok := obj.(*corev1.Pod)
			if !ok {
				return nil, nil
			}
			return addrStrings(podIPs(p)), nil
		},
	}
}

func addrStrings(ips []netip.Addr) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

func firstPod(idx cache.Indexer, index, key string) *corev1.Pod {
	if idx == nil {
		return nil
	}
	objs, err := idx.ByIndex(index, key)
	if err != nil {
		return nil
	}
	var best *corev1.Pod
	for _, o := range objs {
		p, ok := o.(*corev1.Pod)
		if !ok {
			continue
		}
		// Prefer a running pod over a finished one that kept its IP.
		if best == nil || p.Status.Phase == corev1.PodRunning {
			best = p
		}
	}
	return best
}

// PodByUID implements Source.
func (s *InformerSource) PodByUID(uid string) *corev1.Pod {
	if p := firstPod(s.localPods, podUIDIndex, uid); p != nil {
		return p
	}
	return firstPod(s.allPods, podUIDIndex, uid)
}

// PodByIP implements Source.
func (s *InformerSource) PodByIP(ip netip.Addr) *corev1.Pod {
	key := ip.Unmap().String()
	if p := firstPod(s.localPods, podIPIndex, key); p != nil {
		return p
	}
	return firstPod(s.allPods, podIPIndex, key)
}

// ServiceByIP implements Source.
func (s *InformerSource) ServiceByIP(ip netip.Addr) *corev1.Service {
	if s.services == nil {
		return nil
	}
	objs, err := s.services.ByIndex(serviceIPIdx, ip.Unmap().String())
	if err != nil || len(objs) == 0 {
		return nil
	}
	svc, _ := objs[0].(*corev1.Service)
	return svc
}

// Pods implements Source.
func (s *InformerSource) Pods() []*corev1.Pod {
	var out []*corev1.Pod
	for _, o := range s.localPods.List() {
		if p, ok := o.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out
}

// containerName returns the name of the container with this runtime ID in
// the pod's status (regular, init and ephemeral containers), or "".
func containerName(p *corev1.Pod, containerID string) string {
	if p == nil || containerID == "" {
		return ""
	}
	lists := [][]corev1.ContainerStatus{p.Status.ContainerStatuses, p.Status.InitContainerStatuses, p.Status.EphemeralContainerStatuses}
	for _, list := range lists {
		for _, cs := range list {
			// containerd://<id>, cri-o://<id>, docker://<id>
			id := cs.ContainerID
			if i := strings.Index(id, "://"); i >= 0 {
				id = id[i+3:]
			}
			if id != "" && (id == containerID || strings.HasPrefix(id, containerID) || strings.HasPrefix(containerID, id)) {
				return cs.Name
			}
		}
	}
	return ""
}
