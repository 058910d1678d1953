// Package load fills a lab with a large, realistic workload for benchmarks:
// namespaces of Deployments, each with a Service and a PodDisruptionBudget,
// whose pods the real controllers create and schedule and the simulated
// kubelet runs.
package load

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/pager"
)

// Options sizes the load.
type Options struct {
	Namespaces  int
	Deployments int // in all, spread over the namespaces
	Replicas    int32
	// Workers create objects concurrently; default 16.
	Workers int
	// Timeout bounds the wait for every pod to run; default 20 minutes.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Pods returns how many pods the load runs.
func (o Options) Pods() int { return o.Deployments * int(o.Replicas) }

// Apply creates the objects (idempotently) and waits until every pod is
// Running. One Deployment in fifty gets a PDB that allows no disruption and
// a Service whose targetPort matches no container port, so that doctor has
// real work to do.
func Apply(ctx context.Context, cfg *rest.Config, o Options) error {
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.Timeout <= 0 {
		o.Timeout = 20 * time.Minute
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 1000, 2000
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("load: client: %w", err)
	}
	for i := 0; i < o.Namespaces; i++ {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i)}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("load: namespace %s: %w", ns.Name, err)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Workers)
	for d := 0; d < o.Deployments; d++ {
		g.Go(func() error { return createApp(gctx, cs, d, o) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("load: objects created", "deployments", o.Deployments, "pods", o.Pods())
	want := o.Pods()
	return wait.PollUntilContextTimeout(ctx, 5*time.Second, o.Timeout, true, func(ctx context.Context) (bool, error) {
		running, err := countRunning(ctx, cs)
		if err != nil {
			return false, err
		}
		log.Info("load: waiting for pods", "running", running, "want", want)
		return running >= want, nil
	})
}

func nsName(i int) string { return fmt.Sprintf("bench-%02d", i) }

func createApp(ctx context.Context, cs kubernetes.Interface, d int, o Options) error {
	ns := nsName(d % o.Namespaces)
	name := fmt.Sprintf("app-%05d", d)
	lbls := map[string]string{"app": name}
	broken := d%50 == 7
	replicas := o.Replicas
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "kdiag.io/lab/http-server",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
						Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
					},
				}}},
			},
		},
	}
	target := intstr.FromString("http")
	if broken {
		target = intstr.FromInt32(9999)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Selector: lbls, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: target}}},
	}
	minAvail := intstr.FromInt32(max(replicas-1, 0))
	if broken {
		minAvail = intstr.FromInt32(replicas)
	}
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvail, Selector: &metav1.LabelSelector{MatchLabels: lbls}},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("load: deployment %s/%s: %w", ns, name, err)
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("load: service %s/%s: %w", ns, name, err)
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("load: pdb %s/%s: %w", ns, name, err)
	}
	return nil
}

func countRunning(ctx context.Context, cs kubernetes.Interface) (int, error) {
	n := 0
	p := pager.New(func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		return cs.CoreV1().Pods("").List(ctx, opts)
	})
	err := p.EachListItem(ctx, metav1.ListOptions{FieldSelector: "status.phase=Running"}, func(runtime.Object) error {
		n++
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("load: count running pods: %w", err)
	}
	return n, nil
}
