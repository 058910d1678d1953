package exporter

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// PodResolver finds a pod on this node by UID.
type PodResolver interface {
	PodByUID(uid string) (*corev1.Pod, bool)
}

// PodCache is a PodResolver backed by an informer on this node's pods
// (field selector spec.nodeName), indexed by UID.
type PodCache struct {
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
}

const uidIndex = "uid"

// NewPodCache builds the cache; Start fills it.
func NewPodCache(cs kubernetes.Interface, node string) (*PodCache, error) {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
	}))
	inf := f.Core().V1().Pods().Informer()
	if err := inf.AddIndexers(cache.Indexers{uidIndex: func(obj any) ([]string, error) {
		if p, ok := obj.(*corev1.Pod); ok {
			return []string{string(p.UID)}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, fmt.Errorf("index pods by UID: %w", err)
	}
	return &PodCache{factory: f, informer: inf}, nil
}

// Start runs the informer until ctx ends and waits up to timeout for its
// first list; a timeout is returned as an error but the informer keeps going.
func (p *PodCache) Start(ctx context.Context, timeout time.Duration) error {
	p.factory.Start(ctx.Done())
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !cache.WaitForCacheSync(wctx.Done(), p.informer.HasSynced) {
		return fmt.Errorf("list this node's pods: not synced within %s", timeout)
	}
	return nil
}

// Shutdown waits for the informer's goroutines after ctx of Start ended.
func (p *PodCache) Shutdown() { p.factory.Shutdown() }

// PodByUID returns the pod with that UID, if it runs on this node.
func (p *PodCache) PodByUID(uid string) (*corev1.Pod, bool) {
	objs, err := p.informer.GetIndexer().ByIndex(uidIndex, uid)
	if err != nil || len(objs) == 0 {
		return nil, false
	}
	pod, ok := objs[0].(*corev1.Pod)
	return pod, ok
}
