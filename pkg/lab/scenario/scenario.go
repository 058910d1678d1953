// Package scenario puts the lab's cluster into the states of the seed talk:
// broken on purpose, in ways that kdiag's checks must find.
//
// A scenario is a set of manifests embedded in the binary, applied with
// server-side apply (field manager "kdiag-lab"), followed by what no
// manifest can say: status written by hand on objects the simulated kubelet
// leaves alone (annotation lab.kdiag.io/manual-status), taints and Events.
// Apply is idempotent and waits until the cluster has converged.
//
// With simulated pods (Apply) scenarios are API objects only. When the lab
// runs pods for real (ApplyWith and Options.RealPods), the same manifests
// run as processes, and a scenario also configures what lives outside the
// cluster, such as the upstream DNS server of the lab's nodes; states that
// a real pod reaches by itself (an OOM kill) are then left to happen.
package scenario

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// FieldManager is the server-side apply field manager of every object a
// scenario writes.
const FieldManager = "kdiag-lab"

// LabelScenario marks every object a scenario creates with its name.
const LabelScenario = "lab.kdiag.io/scenario"

// DefaultTimeout bounds Apply when its context has no deadline.
const DefaultTimeout = 3 * time.Minute

// manifests holds every scenario's YAML; go:embed needs a package-level
// variable, which is only ever read.
//
//go:embed manifests
var manifests embed.FS

// scenario is one named cluster state.
type scenario struct {
	name string
	// setup runs before the manifests are applied (e.g. breaking nodes,
	// so that no workload lands on them).
	setup func(ctx context.Context, e *env) error
	// finish runs after the manifests are applied: manual statuses, Events.
	finish func(ctx context.Context, e *env) error
	// converged lists what has not converged yet; empty means done.
	converged func(ctx context.Context, e *env) ([]string, error)
	// objects rewrites manifest objects for the cluster at hand.
	objects func(ctx context.Context, e *env, objs []*unstructured.Unstructured) error
}

// registry returns every scenario by name. It is a function, not a
// package variable, so that nothing is shared mutable state.
func registry() map[string]scenario {
	return map[string]scenario{
		storeDemoName: storeDemo(),
	}
}

// Names returns the names of all scenarios, sorted.
func Names() []string {
	names := make([]string, 0, len(registry()))
	for n := range registry() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Options say what kind of lab a scenario is applied to.
type Options struct {
	// RealPods says the lab runs pods as real processes (see package
	// runtime) rather than as simulated status.
	RealPods bool
	// Dir is the lab's directory; with RealPods, the scenario writes the
	// configuration of the lab's upstream DNS server there
	// (programs.UpstreamConfigFile).
	Dir string
}

// Apply puts the cluster behind cfg into the named scenario, with simulated
// pods, and waits until it has converged: workloads Running (except the
// ones broken on purpose), controllers' status observed, hand-written
// statuses in place. It is idempotent. Without a deadline on ctx it gives
// up after DefaultTimeout, with an error naming what did not converge.
func Apply(ctx context.Context, cfg *rest.Config, name string) error {
	return ApplyWith(ctx, cfg, name, Options{})
}

// ApplyWith is Apply for a lab described by opts.
func ApplyWith(ctx context.Context, cfg *rest.Config, name string, opts Options) error {
	s, ok := registry()[name]
	if !ok {
		return fmt.Errorf("unknown scenario %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	if cfg == nil {
		return errors.New("scenario: no REST config")
	}
	if opts.RealPods && opts.Dir == "" {
		return fmt.Errorf("scenario %s: real pods need the lab directory (Options.Dir)", name)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	e, err := newEnv(cfg)
	if err != nil {
		return fmt.Errorf("scenario %s: %w", name, err)
	}
	e.opts = opts
	if err := s.run(ctx, e); err != nil {
		return fmt.Errorf("scenario %s: %w", name, err)
	}
	return nil
}

func (s scenario) run(ctx context.Context, e *env) error {
	objs, err := loadManifests(s.name)
	if err != nil {
		return err
	}
	if s.setup != nil {
		if err := s.setup(ctx, e); err != nil {
			return err
		}
	}
	if s.objects != nil {
		if err := s.objects(ctx, e, objs); err != nil {
			return err
		}
	}
	for _, o := range objs {
		if err := e.apply(ctx, o); err != nil {
			return err
		}
	}
	if s.finish != nil {
		if err := s.finish(ctx, e); err != nil {
			return err
		}
	}
	return waitConverged(ctx, e, s.converged)
}

// waitConverged polls until nothing is left to converge or ctx ends.
func waitConverged(ctx context.Context, e *env, check func(context.Context, *env) ([]string, error)) error {
	if check == nil {
		return nil
	}
	start := time.Now()
	var pending []string
	var lastErr error
	err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := check(ctx, e)
		if err != nil {
			lastErr = err
			return false, permanent(err)
		}
		pending, lastErr = p, nil
		return len(p) == 0, nil
	})
	if err == nil {
		return nil
	}
	if lastErr != nil && permanent(lastErr) != nil {
		return fmt.Errorf("check convergence: %w", lastErr)
	}
	waited := time.Since(start).Round(time.Second)
	if lastErr != nil {
		return fmt.Errorf("did not converge within %s: %w", waited, lastErr)
	}
	return fmt.Errorf("did not converge within %s: %s", waited, strings.Join(pending, "; "))
}

// loadManifests decodes the scenario's embedded YAML files, in file name
// order and document order within a file.
func loadManifests(name string) ([]*unstructured.Unstructured, error) {
	dir := path.Join("manifests", name)
	entries, err := fs.ReadDir(manifests, dir)
	if err != nil {
		return nil, fmt.Errorf("read manifests of %s: %w", name, err)
	}
	var objs []*unstructured.Unstructured
	for _, ent := range entries {
		if ent.IsDir() || !(strings.HasSuffix(ent.Name(), ".yaml") || strings.HasSuffix(ent.Name(), ".yml")) {
			continue
		}
		file := path.Join(dir, ent.Name())
		data, err := manifests.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", file, err)
		}
		got, err := decodeYAML(data)
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", file, err)
		}
		objs = append(objs, got...)
	}
	return objs, nil
}

// decodeYAML splits a multi-document YAML stream into objects, skipping
// empty documents. Each object must have apiVersion, kind and name.
func decodeYAML(data []byte) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("document %d: apiVersion, kind and metadata.name are required", i)
		}
		objs = append(objs, u)
	}
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("---")) {
			out = append(out, line...)
		}
	}
	return out
}

// env holds the clients of one Apply.
type env struct {
	cfg     *rest.Config
	client  kubernetes.Interface
	dynamic dynamic.Interface
	mapper  meta.RESTMapper
	now     func() time.Time
	opts    Options
}

func newEnv(cfg *rest.Config) (*env, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "kdiag-lab-scenario"
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build dynamic client: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build discovery client: %w", err)
	}
	return &env{
		cfg:     cfg,
		client:  client,
		dynamic: dyn,
		mapper:  restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
		now:     time.Now,
	}, nil
}

// apply server-side applies one object, taking ownership of every field it
// sets (force), so that re-applying resets a scenario edited by hand.
func (e *env) apply(ctx context.Context, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	ref := describe(obj)
	mapping, err := e.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("apply %s: find its resource: %w", ref, err)
	}
	var ri dynamic.ResourceInterface = e.dynamic.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := obj.GetNamespace()
		if ns == "" {
			return fmt.Errorf("apply %s: namespaced object without namespace", ref)
		}
		ri = e.dynamic.Resource(mapping.Resource).Namespace(ns)
	}
	if _, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return fmt.Errorf("apply %s: %w", ref, err)
	}
	return nil
}

// applyTyped applies a typed object through the same path as manifests.
func (e *env) applyTyped(ctx context.Context, obj runtime.Object, apiVersion, kind string) error {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("convert %s: %w", kind, err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	// Server-side apply refuses these on input.
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "metadata", "managedFields")
	unstructured.RemoveNestedField(u.Object, "metadata", "resourceVersion")
	unstructured.RemoveNestedField(u.Object, "metadata", "uid")
	return e.apply(ctx, u)
}

// describe names an object as kind namespace/name.
func describe(obj *unstructured.Unstructured) string {
	if ns := obj.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s %s/%s", obj.GetKind(), ns, obj.GetName())
	}
	return fmt.Sprintf("%s %s", obj.GetKind(), obj.GetName())
}

// permanent returns err when retrying cannot help (RBAC, authentication),
// and nil for errors worth another try (timeouts, objects not created yet).
func permanent(err error) error {
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		return err
	}
	return nil
}

// notFoundOr returns msg for a NotFound error and err otherwise; used when
// an object not existing yet simply means "not converged".
func notFoundOr(err error, msg string) (string, error) {
	if apierrors.IsNotFound(err) {
		return msg, nil
	}
	return "", err
}
