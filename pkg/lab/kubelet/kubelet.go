// Package kubelet is the lab's simulated kubelet. One process plays the
// kubelet of many Nodes: it registers them, keeps their Leases fresh and
// their status reported, and "runs" every Pod scheduled to them by posting
// the status a real kubelet would post (Running, Ready, a pod IP from the
// node's podCIDR, container IDs). No container is started, unless
// Options.Real is set: then pods whose images a resolver knows run as real
// processes on the lab's data plane (see RealPods and package runtime),
// with their real status, and `kubectl logs` is served.
//
// Two annotations hand an object to a test or a scenario instead:
//
//   - AnnotationManualStatus ("lab.kdiag.io/manual-status: true") on a Node
//     or a Pod: the simulator never writes that object's status, so whatever
//     is patched onto it stays (NotReady, DiskPressure, OOMKilled, ...). The
//     Lease of a manual Node is still renewed.
//   - AnnotationHeartbeat ("lab.kdiag.io/heartbeat: false") on a Node: that
//     node's kubelet is dead. Its Lease is no longer renewed (the node
//     lifecycle controller of kube-controller-manager then marks it Unknown),
//     its status is not written and its Pods are left alone, including
//     Pods being deleted, which stay Terminating as on a real dead node.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/kdiag/kdiag/pkg/hostid"
	"github.com/kdiag/kdiag/pkg/lab/runtime"
)

// Annotations and labels shared with scenarios and tests.
const (
	// AnnotationManualStatus set to "true" on a Node or Pod tells the
	// simulator never to write that object's status.
	AnnotationManualStatus = "lab.kdiag.io/manual-status"
	// AnnotationHeartbeat set to "false" on a Node stops its Lease renewal
	// and everything else its kubelet would do: the node is dead.
	AnnotationHeartbeat = "lab.kdiag.io/heartbeat"
	// LabelSimulated marks every Node registered by the simulator.
	LabelSimulated = "lab.kdiag.io/simulated"
	// LabelAgentPool is the node pool label AKS puts on its nodes; the
	// simulator sets it together with AKSLabelAgentPool.
	LabelAgentPool = "agentpool"
	// AKSLabelAgentPool is AKS's namespaced node pool label.
	AKSLabelAgentPool = "kubernetes.azure.com/agentpool"
	// AKSLabelMode is AKS's node pool mode label (System or User).
	AKSLabelMode = "kubernetes.azure.com/mode"
)

// Version strings reported in every Node's nodeInfo.
const (
	KubeletVersion          = "v1.37.2"
	ContainerRuntimeVersion = "containerd://2.1.4"
	KernelVersion           = "6.8.0-1041-azure"
	OSImage                 = "Ubuntu 24.04.3 LTS"
)

// Defaults applied to zero Options fields.
const (
	DefaultNodes                 = 3
	DefaultNodePrefix            = "lab-node-"
	DefaultQPS                   = 500
	DefaultBurst                 = 1000
	DefaultLeaseDuration         = 40 * time.Second
	DefaultStatusReportFrequency = 5 * time.Minute
	DefaultPodWorkers            = 16
	DefaultNodeWorkers           = 4
)

// Pool describes one node pool: the labels and resources of its nodes.
type Pool struct {
	// Name is the pool name, set as the agentpool labels.
	Name string
	// Mode is AKS's pool mode, "System" or "User".
	Mode string
	// InstanceType is the VM size, set as node.kubernetes.io/instance-type.
	InstanceType string
	// Capacity and Allocatable are the node's resources; "pods" defaults to 110.
	Capacity, Allocatable corev1.ResourceList
}

// Options configure Run. Every zero value means the documented default.
type Options struct {
	// Nodes is how many nodes to register (default 3).
	Nodes int
	// NodePrefix names the nodes NodePrefix+"1" ... (default "lab-node-").
	NodePrefix string
	// Logger receives the simulator's logs (default slog.Default()).
	Logger *slog.Logger
	// Pools split the nodes, in contiguous blocks of equal size, into node
	// pools (default DefaultPools()).
	Pools []Pool
	// Zones are spread round-robin over the nodes as
	// topology.kubernetes.io/zone (default lab-1, lab-2, lab-3).
	Zones []string
	// QPS and Burst of the client (default 500 and 1000).
	QPS   float32
	Burst int
	// LeaseDuration is each node Lease's duration; it is renewed every
	// quarter of it, as the kubelet does (default 40 s, renewed every 10 s).
	LeaseDuration time.Duration
	// StatusReportFrequency is how often an unchanged node status is
	// reported again (default 5 min, the kubelet's nodeStatusReportFrequency).
	StatusReportFrequency time.Duration
	// PodWorkers and NodeWorkers are the number of concurrent syncs.
	PodWorkers, NodeWorkers int
	// HostID labels every node (label hostid.Label) with the machine whose
	// kernel runs their pods, so that `kdiag trace` here knows the nodes
	// are local. Empty means hostid.Get(); "-" leaves the label off.
	HostID string
	// Real, when set, runs pods whose images resolve to a program as real
	// processes on the lab's data plane, and serves their logs (see
	// RealPods). Nil simulates every pod.
	Real *RealPods
}

func (o Options) withDefaults() Options {
	if o.Nodes <= 0 {
		o.Nodes = DefaultNodes
	}
	if o.NodePrefix == "" {
		o.NodePrefix = DefaultNodePrefix
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if len(o.Pools) == 0 {
		o.Pools = DefaultPools()
	}
	if len(o.Zones) == 0 {
		o.Zones = []string{"lab-1", "lab-2", "lab-3"}
	}
	if o.QPS <= 0 {
		o.QPS = DefaultQPS
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.StatusReportFrequency <= 0 {
		o.StatusReportFrequency = DefaultStatusReportFrequency
	}
	if o.PodWorkers <= 0 {
		o.PodWorkers = DefaultPodWorkers
	}
	if o.NodeWorkers <= 0 {
		o.NodeWorkers = DefaultNodeWorkers
	}
	return o
}

// Run registers the nodes and simulates their kubelets until ctx is done.
// It returns nil when ctx is cancelled, and an error when the API server
// cannot be reached or refuses the registration.
func Run(ctx context.Context, cfg *rest.Config, opts Options) error {
	if cfg == nil {
		return errors.New("kubelet: no REST config")
	}
	opts = opts.withDefaults()
	if opts.HostID == "" {
		id, err := hostid.Get()
		if err != nil {
			opts.Logger.Warn("nodes are not labelled with this machine's id; kdiag trace needs NODE_NAME to know they are local", "err", err)
		}
		opts.HostID = id
	}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS = opts.QPS
	cfg.Burst = opts.Burst
	if cfg.UserAgent == "" {
		cfg.UserAgent = "kdiag-lab-kubelet"
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubelet: build client for %s: %w", cfg.Host, err)
	}
	return newSimulator(client, opts).run(ctx)
}

// simulator is one process playing the kubelets of many nodes.
type simulator struct {
	client kubernetes.Interface
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	ipam   *ipam

	nodeLister corelisters.NodeLister
	podLister  corelisters.PodLister
	podIndexer cache.Indexer

	nodeQueue workqueue.TypedRateLimitingInterface[string]
	podQueue  workqueue.TypedRateLimitingInterface[string]

	leases *leases
	// noPodCIDR remembers the nodes already warned about a missing podCIDR.
	noPodCIDR sync.Map

	// rt runs real pods (nil: every pod is simulated); gateways remembers
	// the node gateways already put on the bridge; logs serves their logs.
	rt       *runtime.Runtime
	gateways sync.Map
	logs     *logServer
}

func newSimulator(client kubernetes.Interface, opts Options) *simulator {
	opts = opts.withDefaults()
	s := &simulator{
		client: client,
		opts:   opts,
		log:    opts.Logger,
		now:    time.Now,
		ipam:   newIPAM(),
	}
	s.leases = newLeases(s, opts.LeaseDuration)
	return s
}

// nodeIndex returns the 1-based index of a node this simulator owns, or 0.
func (s *simulator) nodeIndex(name string) int {
	rest, ok := strings.CutPrefix(name, s.opts.NodePrefix)
	if !ok {
		return 0
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 1 || i > s.opts.Nodes || strconv.Itoa(i) != rest {
		return 0
	}
	return i
}

func (s *simulator) nodeName(i int) string { return s.opts.NodePrefix + strconv.Itoa(i) }

const podsByNodeIndex = "spec.nodeName"

func (s *simulator) run(ctx context.Context) error {
	if err := s.checkAPI(ctx); err != nil {
		return err
	}
	if err := s.registerNodes(ctx); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	nodeFactory := informers.NewSharedInformerFactoryWithOptions(s.client, 0, informers.WithTransform(stripManagedFields))
	podFactory := informers.NewSharedInformerFactoryWithOptions(s.client, 0,
		informers.WithTransform(stripManagedFields),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermNotEqualSelector("spec.nodeName", "").String()
		}))
	nodeInformer := nodeFactory.Core().V1().Nodes()
	podInformer := podFactory.Core().V1().Pods()
	if err := podInformer.Informer().AddIndexers(cache.Indexers{podsByNodeIndex: func(obj any) ([]string, error) {
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Spec.NodeName == "" {
			return nil, nil
		}
		return []string{p.Spec.NodeName}, nil
	}}); err != nil {
		return fmt.Errorf("kubelet: index pods by node: %w", err)
	}
	s.nodeLister = nodeInformer.Lister()
	s.podLister = podInformer.Lister()
	s.podIndexer = podInformer.Informer().GetIndexer()

	s.nodeQueue = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "lab-kubelet-nodes"})
	s.podQueue = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "lab-kubelet-pods"})
	if s.opts.Real != nil {
		if err := s.setupReal(ctx); err != nil {
			return err
		}
		defer func() {
			sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer scancel()
			if err := s.rt.Shutdown(sctx); err != nil {
				s.log.Error("stop real pods", "err", err)
			}
		}()
	}

	if _, err := nodeInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.onNode(nil, obj) },
		UpdateFunc: func(old, obj any) { s.onNode(old, obj) },
		DeleteFunc: func(obj any) { s.onNode(nil, obj) },
	}); err != nil {
		return fmt.Errorf("kubelet: watch nodes: %w", err)
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    s.onPod,
		UpdateFunc: func(_, obj any) { s.onPod(obj) },
		DeleteFunc: s.onPod,
	}); err != nil {
		return fmt.Errorf("kubelet: watch pods: %w", err)
	}

	nodeFactory.Start(ctx.Done())
	podFactory.Start(ctx.Done())
	var wg sync.WaitGroup
	defer func() {
		s.nodeQueue.ShutDown()
		s.podQueue.ShutDown()
		s.leases.queue.ShutDown()
		cancel()
		wg.Wait()
		nodeFactory.Shutdown()
		podFactory.Shutdown()
	}()
	for typ, ok := range nodeFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return s.syncError(ctx, "nodes", typ.String())
		}
	}
	for typ, ok := range podFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return s.syncError(ctx, "pods", typ.String())
		}
	}
	// Learn the pod IPs already handed out (by an earlier run, or patched
	// onto manual Pods) before any new one is allocated.
	if err := s.claimExistingPodIPs(); err != nil {
		return err
	}

	for range s.opts.NodeWorkers {
		wg.Go(func() { runWorker(ctx, s.nodeQueue, s.syncNode, s.log) })
	}
	for range leaseWorkers {
		wg.Go(func() { runWorker(ctx, s.leases.queue, s.leases.sync, s.log) })
	}
	for range s.opts.PodWorkers {
		wg.Go(func() { runWorker(ctx, s.podQueue, s.syncPod, s.log) })
	}
	s.log.Info("simulated kubelet running", "nodes", s.opts.Nodes, "prefix", s.opts.NodePrefix)
	<-ctx.Done()
	return nil
}

// stripManagedFields drops managed fields from cached Pods and Nodes:
// they are most of a Pod's size and the simulator never reads them, so this
// keeps 30,000 cached Pods affordable. It changes a shallow copy, never the
// object it is given, which a client may share with other watchers.
func stripManagedFields(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		if len(o.ManagedFields) > 0 {
			c := *o
			c.ManagedFields = nil
			return &c, nil
		}
	case *corev1.Node:
		if len(o.ManagedFields) > 0 {
			c := *o
			c.ManagedFields = nil
			return &c, nil
		}
	}
	return obj, nil
}

func (s *simulator) syncError(ctx context.Context, what, typ string) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("kubelet: %s cache (%s) never synced", what, typ)
}

// checkAPI fails fast, with one line, when the API server is unreachable or
// refuses to list nodes, instead of retrying forever like a real kubelet.
func (s *simulator) checkAPI(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := s.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		return fmt.Errorf("kubelet: cannot list nodes on the API server: %w", err)
	}
	return nil
}

// registerNodes creates the nodes that do not exist yet, like the kubelet's
// registerWithAPIServer. Existing nodes are left as they are; their status is
// reconciled by syncNode.
func (s *simulator) registerNodes(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	created := make([]bool, s.opts.Nodes+1)
	for i := 1; i <= s.opts.Nodes; i++ {
		g.Go(func() error {
			node := s.newNode(i)
			_, err := s.client.CoreV1().Nodes().Create(gctx, node, metav1.CreateOptions{FieldManager: fieldManager})
			switch {
			case err == nil:
				created[i] = true
				return nil
			case apierrors.IsAlreadyExists(err):
				return nil
			default:
				return fmt.Errorf("kubelet: register node %s: %w", node.Name, err)
			}
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	n := 0
	for _, c := range created {
		if c {
			n++
		}
	}
	s.log.Info("nodes registered", "created", n, "existing", s.opts.Nodes-n)
	return nil
}

// leaseWorkers renew Leases concurrently: 1,000 nodes need 100 renewals a
// second, a few in flight at a time.
const leaseWorkers = 8

// fieldManager is the field manager of every write of the simulator.
const fieldManager = "kdiag-lab-kubelet"

func (s *simulator) onNode(oldObj, obj any) {
	node, ok := nodeFrom(obj)
	if !ok || s.nodeIndex(node.Name) == 0 {
		return
	}
	s.nodeQueue.Add(node.Name)
	old, _ := nodeFrom(oldObj)
	if old == nil {
		return
	}
	// Pods wait for the node's podCIDR and stop being run when the node
	// dies; re-examine them when either changes.
	if len(old.Spec.PodCIDRs) != len(node.Spec.PodCIDRs) || old.Spec.PodCIDR != node.Spec.PodCIDR ||
		heartbeatOn(old) != heartbeatOn(node) {
		s.enqueuePodsOn(node.Name)
	}
}

func nodeFrom(obj any) (*corev1.Node, bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	n, ok := obj.(*corev1.Node)
	return n, ok && n != nil
}

func (s *simulator) onPod(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok || s.nodeIndex(p.Spec.NodeName) == 0 {
		return
	}
	key, err := cache.MetaNamespaceKeyFunc(p)
	if err != nil {
		return
	}
	s.podQueue.Add(key)
}

func (s *simulator) enqueuePodsOn(node string) {
	objs, err := s.podIndexer.ByIndex(podsByNodeIndex, node)
	if err != nil {
		s.log.Error("list pods of node", "node", node, "err", err)
		return
	}
	for _, obj := range objs {
		s.onPod(obj)
	}
}

// claimExistingPodIPs records the IPs of live pods on our nodes.
func (s *simulator) claimExistingPodIPs() error {
	pods, err := s.podLister.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("kubelet: list cached pods: %w", err)
	}
	for _, p := range pods {
		if s.nodeIndex(p.Spec.NodeName) == 0 || p.Spec.HostNetwork || podTerminal(p) {
			continue
		}
		s.claimPodIPs(p)
	}
	return nil
}

func (s *simulator) claimPodIPs(p *corev1.Pod) {
	key := p.Namespace + "/" + p.Name
	for _, pip := range p.Status.PodIPs {
		addr, err := netip.ParseAddr(pip.IP)
		if err != nil {
			continue
		}
		if owner := s.ipam.claim(p.Spec.NodeName, key, addr); owner != key {
			s.log.Warn("pod IP already used by another pod", "pod", key, "ip", addr, "owner", owner)
		}
	}
}

// runWorker processes one queue until it shuts down, retrying failed keys
// with the queue's rate limiter.
func runWorker(ctx context.Context, q workqueue.TypedRateLimitingInterface[string], sync func(context.Context, string) error, log *slog.Logger) {
	for {
		key, shutdown := q.Get()
		if shutdown {
			return
		}
		err := sync(ctx, key)
		switch {
		case err == nil:
			q.Forget(key)
		case ctx.Err() != nil:
			q.Forget(key)
		default:
			if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
				log.Warn("sync failed, will retry", "key", key, "err", err)
			}
			q.AddRateLimited(key)
		}
		q.Done(key)
	}
}

func heartbeatOn(o metav1.Object) bool {
	return o.GetAnnotations()[AnnotationHeartbeat] != "false"
}

func manualStatus(o metav1.Object) bool {
	return o.GetAnnotations()[AnnotationManualStatus] == "true"
}
