package kubelet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
)

// leases renews the node Leases in kube-node-lease the way the kubelet's
// lease controller (k8s.io/component-helpers/apimachinery/lease) does: it
// keeps the Lease it wrote last and updates it optimistically, falling back
// to a GET (or a create) on a conflict or when it has none, and renews every
// quarter of the lease duration with 4% jitter, retrying failures with a
// backoff of up to 7 s. It is hand-written because that controller needs a
// goroutine per node, logs through klog and, when stopped, fails its
// in-flight update five times with one error line each, which for 1,000
// nodes floods the output of every test and of `kdiag lab down`. One
// delaying workqueue serves all nodes here, and cancellation is silent.
type leases struct {
	sim      *simulator
	duration time.Duration
	queue    workqueue.TypedRateLimitingInterface[string]

	mu     sync.Mutex
	active map[string]bool
	latest map[string]*coordinationv1.Lease
}

func newLeases(sim *simulator, duration time.Duration) *leases {
	return &leases{
		sim:      sim,
		duration: duration,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 7*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "lab-kubelet-leases"}),
		active: map[string]bool{},
		latest: map[string]*coordinationv1.Lease{},
	}
}

// interval is the renew interval: a quarter of the duration, as the kubelet
// (nodeLeaseRenewIntervalFraction 0.25), plus up to 4% jitter.
func (l *leases) interval() time.Duration {
	base := l.duration / 4
	return base + time.Duration(rand.Float64()*0.04*float64(base))
}

// start begins renewing a node's Lease; it is a no-op while it runs.
func (l *leases) start(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active[name] {
		return
	}
	l.active[name] = true
	l.queue.Add(name)
	l.sim.log.Debug("lease renewal started", "node", name)
}

// stop ends the renewal of a node's Lease; a renewal already queued finds
// the node inactive and does nothing.
func (l *leases) stop(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.active[name] {
		return
	}
	delete(l.active, name)
	delete(l.latest, name)
	l.sim.log.Info("lease renewal stopped (heartbeat=false)", "node", name)
}

// sync renews one Lease and schedules the next renewal.
func (l *leases) sync(ctx context.Context, name string) error {
	l.mu.Lock()
	active, latest := l.active[name], l.latest[name]
	l.mu.Unlock()
	if !active {
		return nil
	}
	client := l.sim.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	var err error
	if latest != nil {
		var updated *coordinationv1.Lease
		if updated, err = client.Update(ctx, l.renewed(latest), metav1.UpdateOptions{FieldManager: fieldManager}); err == nil {
			l.done(name, updated)
			return nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return fmt.Errorf("renew lease of node %s: %w", name, err)
		}
	}
	current, err := client.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		fresh := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: corev1.NamespaceNodeLease}}
		if err := l.setOwner(fresh); err != nil {
			return err
		}
		created, err := client.Create(ctx, l.renewed(fresh), metav1.CreateOptions{FieldManager: fieldManager})
		if err != nil {
			return fmt.Errorf("create lease of node %s: %w", name, err)
		}
		l.done(name, created)
		return nil
	case err != nil:
		return fmt.Errorf("get lease of node %s: %w", name, err)
	}
	updated, err := client.Update(ctx, l.renewed(current), metav1.UpdateOptions{FieldManager: fieldManager})
	if err != nil {
		return fmt.Errorf("renew lease of node %s: %w", name, err)
	}
	l.done(name, updated)
	return nil
}

// done records the Lease written and queues the next renewal, unless the
// node was stopped meanwhile.
func (l *leases) done(name string, lease *coordinationv1.Lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.active[name] {
		return
	}
	l.latest[name] = lease
	l.queue.AddAfter(name, l.interval())
}

// renewed returns a copy of base held by the node and renewed now.
func (l *leases) renewed(base *coordinationv1.Lease) *coordinationv1.Lease {
	lease := base.DeepCopy()
	holder := lease.Name
	seconds := int32(l.duration / time.Second)
	lease.Spec.HolderIdentity = &holder
	lease.Spec.LeaseDurationSeconds = &seconds
	lease.Spec.RenewTime = &metav1.MicroTime{Time: l.sim.now()}
	if len(lease.OwnerReferences) == 0 {
		_ = l.setOwner(lease) // best effort on update, as the kubelet does
	}
	return lease
}

// setOwner makes the Node own its Lease, as the kubelet does, so that
// deleting the Node garbage-collects the Lease. The UID comes from the cache.
func (l *leases) setOwner(lease *coordinationv1.Lease) error {
	node, err := l.sim.nodeLister.Get(lease.Name)
	if err != nil {
		return fmt.Errorf("lease of node %s: node not in cache yet: %w", lease.Name, err)
	}
	lease.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: corev1.SchemeGroupVersion.String(),
		Kind:       "Node",
		Name:       node.Name,
		UID:        node.UID,
	}}
	return nil
}
