package cluster

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Client rate limits for the read when the kubeconfig sets none. client-go's
// defaults (5 QPS, burst 10) would make a paginated read of a 30,000-pod
// cluster wait on the client's own limiter for most of a minute; API
// Priority and Fairness protects the server.
const (
	defaultQPS   = 50
	defaultBurst = 100
)

// NewReadClient returns a clientset tuned for one large read: protobuf
// encoding (several times cheaper to decode than JSON for lists of pods,
// as kube-controller-manager uses) and rate limits fit for a few hundred
// list pages. cfg is not modified.
func NewReadClient(cfg *rest.Config) (kubernetes.Interface, error) {
	c := rest.CopyConfig(cfg)
	c.ContentType = runtime.ContentTypeProtobuf
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	if c.QPS == 0 {
		c.QPS, c.Burst = defaultQPS, defaultBurst
	}
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("build Kubernetes client: %w", err)
	}
	return cs, nil
}
