package repair_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/ops"
	"github.com/kdiag/kdiag/pkg/repair"
)

// manifests reads the objects of a multi-document YAML file under
// deploy/repair.
func manifests(t *testing.T, name string) []*unstructured.Unstructured {
	t.Helper()
	return labtest.Manifests(t, "../../deploy/repair/"+name)
}

// apply creates the file's objects (dryRun: only a server-side dry run)
// and deletes them when the test ends.
func apply(t *testing.T, cfg *rest.Config, file string, dryRun bool) {
	t.Helper()
	labtest.ApplyManifests(t, cfg, "../../deploy/repair/"+file, dryRun)
}

func TestManifestsPassServerSideDryRun(t *testing.T) {
	c := labtest.Cluster(t)
	for _, f := range []string{"rbac.yaml", "rbac-clusterapi.yaml", "deployment.yaml"} {
		apply(t, c.RESTConfig(), f, true)
	}
}

// syncBuffer is a log sink safe for the controller's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestControllerWorksWithExactlyItsRBAC applies deploy/repair/rbac.yaml and
// runs a whole repair (leader election, drain with an eviction, events,
// Operation record, uncordon) as its ServiceAccount: nothing may be
// forbidden.
func TestControllerWorksWithExactlyItsRBAC(t *testing.T) {
	l := newLab(t)
	c := labtest.Cluster(t)
	ctx := context.Background()
	if err := ops.EnsureCRD(ctx, l.cfg); err != nil {
		t.Fatalf("install the Operation CRD: %v", err)
	}
	apply(t, l.cfg, "rbac.yaml", false)
	// RBAC matches a ServiceAccount subject by user name: a client
	// certificate with that name stands for the pod's token.
	sa, err := c.ClientCertConfig("system:serviceaccount:kube-system:kdiag-repair", []string{"system:serviceaccounts", "system:serviceaccounts:kube-system"}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	labtest.CreateNamespace(t, ctx, l.cs, "repair-rbac")
	spec := labtest.PauseSpec()
	spec.NodeSelector = map[string]string{corev1.LabelHostname: node2}
	labtest.CreateDeployment(t, ctx, l.cs, "repair-rbac", "web", 1, map[string]string{"app": "web"}, spec)
	labtest.WaitForPods(t, ctx, l.cs, "repair-rbac", metav1.ListOptions{LabelSelector: "app=web"}, 1, labtest.PodReady)

	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(logs, testLog{t}), &slog.HandlerOptions{Level: slog.LevelInfo}))
	rec, err := repair.NewOperationRecorder(sa, logger)
	if err != nil {
		t.Fatal(err)
	}
	o := options(repair.DefaultLeaseName)
	ctx2, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- repair.Run(ctx2, repair.Config{REST: sa, Provider: l.exec(), Ops: rec, Logger: logger}, o)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	since := time.Now()
	l.breakNode(node2)
	l.waitActions("reboot and reimage of "+node2, func([]string) bool { return slices.Contains(l.recordedOn(node2), "reimage") })
	l.heal(node2)
	n := l.waitFor(node2+" repaired", phase(t, repair.PhaseSucceeded), node2)
	if n.Spec.Unschedulable {
		t.Errorf("%s still cordoned after the repair", node2)
	}
	want := []string{"NodeRebootStart", "NodeRebootError", "NodeReimageStart", "NodeReimageEnd"}
	labtest.WaitFor(t, ctx, "the repair events on "+node2, func(context.Context) (bool, error) {
		return slices.Equal(l.reasons(node2, since), want), nil
	})
	st := stateOf(t, n)
	u, err := dynamic.NewForConfigOrDie(l.cfg).Resource(v1alpha1.OperationGVR()).Get(ctx, st.Operation, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the Operation %q of the repair: %v", st.Operation, err)
	}
	if p, _, _ := unstructured.NestedString(u.Object, "status", "phase"); p != "Succeeded" {
		t.Errorf("Operation %s: phase %q, want Succeeded", st.Operation, p)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("controller: %v", err)
	}
	done <- nil
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(strings.ToLower(line), "forbidden") {
			t.Errorf("RBAC denial in the controller's logs: %s", line)
		}
	}
}
