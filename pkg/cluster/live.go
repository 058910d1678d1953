package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/pager"
)

// LiveOptions tunes a live read.
type LiveOptions struct {
	// Source names the cluster in reports, e.g. the kubeconfig context.
	Source string
	// Namespace limits namespaced resources to one namespace; "" reads all.
	// Nodes, node Leases and the cluster DNS objects in kube-system are read
	// in any case, because node and DNS checks need them.
	Namespace string
	// PageSize is the limit of each paginated list call; 0 means 500.
	PageSize int64
	// Parallel is how many lists run at once; 0 means 4.
	Parallel int
	// Progress, if set, is called after each page with the resource and the
	// number of objects read so far. It may be called concurrently.
	Progress func(r Resource, n int)
	// Now returns the time recorded as TakenAt; nil means time.Now.
	Now func() time.Time
}

// ErrUnreachable is wrapped by the error ReadLive returns when the API server
// cannot be reached at all.
var ErrUnreachable = errors.New("API server unreachable")

// ErrUnauthorized is wrapped by the error ReadLive returns when the API
// server rejects the credentials (expired or revoked token or certificate).
var ErrUnauthorized = errors.New("credentials rejected")

// dnsLabel selects the cluster DNS objects in kube-system, for CoreDNS and
// kube-dns alike.
const dnsLabel = "k8s-app=kube-dns"

// ReadLive reads the cluster once with paginated lists, one list per
// resource (and namespace), in parallel. A resource that cannot be read
// (RBAC, timeout) becomes a Gap; the read fails as a whole only when the API
// server is unreachable or rejects the credentials, which it checks first
// with one cheap request.
func ReadLive(ctx context.Context, cs kubernetes.Interface, opts LiveOptions) (*Snapshot, error) {
	if opts.PageSize <= 0 {
		opts.PageSize = 500
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := probe(ctx, cs); err != nil {
		return nil, err
	}
	s := &Snapshot{Source: opts.Source, Live: true, Namespace: opts.Namespace}
	r := &liveReader{cs: cs, opts: opts, snap: s}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Parallel)
	for _, job := range r.jobs() {
		g.Go(func() error {
			r.run(gctx, job)
			return nil
		})
	}
	_ = g.Wait() // jobs never fail the group: failures become gaps
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reading the cluster: %w", err)
	}
	s.TakenAt = opts.Now()
	return s, nil
}

// probe asks for the server version, which every authenticated user may
// read, to tell "unreachable" and "bad credentials" apart from per-resource
// RBAC denials.
func probe(ctx context.Context, cs kubernetes.Interface) error {
	rc := cs.Discovery().RESTClient()
	if rc == nil { // fake clientsets have no REST client
		_, err := cs.Discovery().ServerVersion()
		return classifyProbe(err)
	}
	err := rc.Get().AbsPath("/version").Do(ctx).Error()
	return classifyProbe(err)
}

func classifyProbe(err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w (401 Unauthorized): the token or client certificate in your kubeconfig is expired or revoked; refresh your credentials (for AKS: az aks get-credentials) and retry", ErrUnauthorized)
	case isConnectionError(err):
		return fmt.Errorf("%w: %s", ErrUnreachable, oneLine(err))
	case apierrors.IsForbidden(err):
		return nil // /version denied is unusual but does not stop the read
	default:
		return fmt.Errorf("%w: %s", ErrUnreachable, oneLine(err))
	}
}

func isConnectionError(err error) bool {
	var ue *url.Error
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.As(err, &oe) ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "no such host")
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

type listJob struct {
	res       Resource
	namespace string
	selector  string
	// keep filters objects after decoding; nil keeps everything.
	keep func(runtime.Object) bool
	page pager.ListPageFunc
	// sink collects one list's objects and adds them to the snapshot once
	// the whole list succeeded.
	sink func() sink
}

// sink collects the objects of one list. add copies each object out of its
// page as it arrives, so that a page is garbage as soon as it is read;
// commit adds the collected objects to the snapshot (under the reader's
// lock), without a second copy when the snapshot has none of them yet.
type sink interface {
	add(runtime.Object)
	commit()
}

type typedSink[T any] struct {
	dst *[]T
	buf []T
}

func (s *typedSink[T]) add(o runtime.Object) { s.buf = append(s.buf, *any(o).(*T)) }

func (s *typedSink[T]) commit() {
	if len(*s.dst) == 0 {
		*s.dst = s.buf
		return
	}
	*s.dst = append(*s.dst, s.buf...)
}

// into returns a sink factory for a snapshot slice.
func into[T any](dst *[]T) func() sink {
	return func() sink { return &typedSink[T]{dst: dst} }
}

type liveReader struct {
	cs   kubernetes.Interface
	opts LiveOptions
	snap *Snapshot
	mu   sync.Mutex
}

func (r *liveReader) jobs() []listJob {
	ns := r.opts.Namespace
	cs := r.cs
	s := r.snap
	var jobs []listJob
	add := func(res Resource, namespace, selector string, page pager.ListPageFunc, keep func(runtime.Object) bool, sk func() sink) {
		jobs = append(jobs, listJob{res: res, namespace: namespace, selector: selector, page: page, keep: keep, sink: sk})
	}
	add(ResNodes, "", "", func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return cs.CoreV1().Nodes().List(ctx, o)
	}, nil, into(&s.Nodes))
	add(ResLeases, corev1.NamespaceNodeLease, "", func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).List(ctx, o)
	}, nil, into(&s.Leases))
	add(ResConfigMaps, metav1.NamespaceSystem, "", func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).List(ctx, o)
	}, keepConfigMap, into(&s.ConfigMaps))

	// Namespaced resources: in the chosen namespace (or all), plus the
	// cluster DNS objects when the namespace is another one.
	scopes := []struct{ ns, selector string }{{ns, ""}}
	if ns != "" && ns != metav1.NamespaceSystem {
		scopes = append(scopes, struct{ ns, selector string }{metav1.NamespaceSystem, dnsLabel})
	}
	for _, sc := range scopes {
		nsx, sel := sc.ns, sc.selector
		add(ResPods, nsx, sel, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Pods(nsx).List(ctx, o)
		}, nil, into(&s.Pods))
		add(ResServices, nsx, sel, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Services(nsx).List(ctx, o)
		}, nil, into(&s.Services))
		sliceSel := sel
		if sel != "" {
			sliceSel = discoveryv1.LabelServiceName + "=kube-dns"
		}
		add(ResEndpointSlices, nsx, sliceSel, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.DiscoveryV1().EndpointSlices(nsx).List(ctx, o)
		}, nil, into(&s.EndpointSlices))
		add(ResDeployments, nsx, sel, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.AppsV1().Deployments(nsx).List(ctx, o)
		}, nil, into(&s.Deployments))
		add(ResReplicaSets, nsx, sel, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.AppsV1().ReplicaSets(nsx).List(ctx, o)
		}, nil, into(&s.ReplicaSets))
		if sel != "" {
			continue // the DNS scope needs no more than pods, services, slices and the Deployment
		}
		add(ResStatefulSets, nsx, "", func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.AppsV1().StatefulSets(nsx).List(ctx, o)
		}, nil, into(&s.StatefulSets))
		add(ResDaemonSets, nsx, "", func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.AppsV1().DaemonSets(nsx).List(ctx, o)
		}, nil, into(&s.DaemonSets))
		add(ResPDBs, nsx, "", func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.PolicyV1().PodDisruptionBudgets(nsx).List(ctx, o)
		}, nil, into(&s.PodDisruptionBudgets))
		add(ResEvents, nsx, "", func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Events(nsx).List(ctx, o)
		}, keepEvent, into(&s.Events))
	}
	return jobs
}

// trim drops what no analyzer reads and what makes up a large share of a
// big cluster's objects: managed fields, and the last-applied annotation
// that kubectl apply leaves. The snapshot then holds far less memory.
func trim(o runtime.Object) {
	m, err := meta.Accessor(o)
	if err != nil {
		return
	}
	m.SetManagedFields(nil)
	if a := m.GetAnnotations(); a != nil {
		if _, ok := a[corev1.LastAppliedConfigAnnotation]; ok {
			delete(a, corev1.LastAppliedConfigAnnotation)
		}
	}
}

// keepEvent keeps every event except the Normal events of a pod's or
// workload's ordinary life, which no check reads. In a large cluster those
// are most of the events (two or three per pod), so the read skips them.
func keepEvent(o runtime.Object) bool {
	e := o.(*corev1.Event)
	if e.Type != corev1.EventTypeNormal {
		return true
	}
	switch e.Reason {
	case "Scheduled", "Pulling", "Pulled", "Created", "Started", "SuccessfulCreate", "SuccessfulDelete", "ScalingReplicaSet":
		return false
	}
	return true
}

// keepConfigMap keeps the kube-system ConfigMaps that analyzers read: the
// CoreDNS Corefile, AKS's coredns-custom, and the kdiag agent's node
// reports (kdiag-node-report-<node> labelled kdiag.io/node-report=true,
// see pkg/nodehealth/diagnose; named here, not imported, to keep the
// snapshot free of the agent's packages).
func keepConfigMap(o runtime.Object) bool {
	cm := o.(*corev1.ConfigMap)
	if strings.HasPrefix(cm.Name, "kdiag-node-report-") && cm.Labels["kdiag.io/node-report"] == "true" {
		return true
	}
	return cm.Name == "coredns" || cm.Name == "coredns-custom" || cm.Name == "kube-dns"
}

func (r *liveReader) run(ctx context.Context, job listJob) {
	p := pager.New(job.page)
	p.PageSize = r.opts.PageSize
	// Processing a page is only an append: fetching pages ahead would
	// only hold more of them in memory at once.
	p.PageBufferSize = 0
	n := 0
	sk := job.sink()
	err := p.EachListItem(ctx, metav1.ListOptions{LabelSelector: job.selector}, func(o runtime.Object) error {
		n++
		if job.keep == nil || job.keep(o) {
			trim(o)
			sk.add(o)
		}
		if r.opts.Progress != nil && n%int(r.opts.PageSize) == 0 {
			r.opts.Progress(job.res, n)
		}
		return nil
	})
	if err != nil {
		r.mu.Lock()
		r.snap.Gaps = append(r.snap.Gaps, gapFromError(job.res, job.namespace, err))
		r.mu.Unlock()
		return
	}
	// Objects are added only once the whole list succeeded, so that a
	// resource is either complete or recorded as a gap, never half read.
	r.mu.Lock()
	sk.commit()
	r.mu.Unlock()
	if r.opts.Progress != nil {
		r.opts.Progress(job.res, n)
	}
}

func gapFromError(res Resource, ns string, err error) Gap {
	g := Gap{Resource: res, Namespace: ns, Reason: GapError, Message: oneLine(err)}
	switch {
	case apierrors.IsForbidden(err):
		g.Reason = GapForbidden
	case apierrors.IsUnauthorized(err):
		g.Reason = GapUnauthorized
	case apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) || errors.Is(err, context.DeadlineExceeded):
		g.Reason = GapTimeout
	}
	return g
}
