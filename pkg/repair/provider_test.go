package repair

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/kdiag/kdiag/pkg/lab/kubelet"
)

func TestExecProvider(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "actions")
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{ProviderID: "azure:///vm1"}}
	for _, tc := range []struct {
		name    string
		cmd     []string
		wantOut string
		wantErr string
	}{
		{"shell string", []string{`echo "$KDIAG_ACTION $KDIAG_NODE $KDIAG_PROVIDER_ID" >>` + log + `; echo done`}, "done", ""},
		{"argv", []string{"/bin/sh", "-c", `echo argv-$KDIAG_ACTION`}, "argv-reimage", ""},
		{"exit 3", []string{`echo cannot reach the BMC; exit 3`}, "cannot reach the BMC", "exit status 3"},
		{"missing program", []string{"/nonexistent/kdiag-reboot", "now"}, "", "no such file"},
		{"missing program in a shell", []string{"/nonexistent/kdiag-reboot"}, "not found", "exit status 127"},
		{"no command", nil, "", "no command configured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := ExecProvider{Command: tc.cmd}.Do(context.Background(), n, Reimage)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error: want %q, got %v", tc.wantErr, err)
			}
			if !strings.Contains(out, tc.wantOut) {
				t.Errorf("output: want %q in %q", tc.wantOut, out)
			}
		})
	}
	b, err := os.ReadFile(log)
	if err != nil || strings.TrimSpace(string(b)) != "reimage n1 azure:///vm1" {
		t.Errorf("the command's environment: want KDIAG_ACTION, KDIAG_NODE and KDIAG_PROVIDER_ID, got %q (%v)", b, err)
	}
	t.Run("timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := ExecProvider{Command: []string{"sleep 10"}}.Do(ctx, n, Reboot)
		if err == nil || !strings.Contains(err.Error(), "deadline") {
			t.Errorf("want a deadline error, got %v", err)
		}
	})
}

func TestClipKeepsTheEnd(t *testing.T) {
	long := strings.Repeat("x", 2*maxOutput) + " the end"
	got := clip(long)
	if len(got) > maxOutput+3 || !strings.HasSuffix(got, "the end") {
		t.Errorf("clip: want at most %d bytes ending with the end, got %d bytes", maxOutput+3, len(got))
	}
}

var machineGVR = schema.GroupVersionResource{Group: "cluster.x-k8s.io", Version: "v1beta1", Resource: "machines"}

func capi(objs ...runtime.Object) (ClusterAPIProvider, *dynamicfake.FakeDynamicClient) {
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{machineGVR: "MachineList"}, objs...)
	mapper := meta.NewDefaultRESTMapper([]schema.GroupVersion{machineGVR.GroupVersion()})
	mapper.Add(machineGVR.GroupVersion().WithKind("Machine"), meta.RESTScopeNamespace)
	return ClusterAPIProvider{Client: dyn, Mapper: mapper}, dyn
}

func machine(ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("cluster.x-k8s.io/v1beta1")
	u.SetKind("Machine")
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

func TestClusterAPIProvider(t *testing.T) {
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: map[string]string{
		CAPIMachineAnnotation: "md-0-abc", CAPIClusterNamespaceAnnotation: "capi",
	}}}
	p, dyn := capi(machine("capi", "md-0-abc"))
	if _, err := p.Do(ctx, n, Reboot); err != nil {
		t.Fatalf("reboot: %v", err)
	}
	m, err := dyn.Resource(machineGVR).Namespace("capi").Get(ctx, "md-0-abc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.GetAnnotations()[CAPIRemediateAnnotation]; !ok {
		t.Errorf("reboot: Machine not annotated %s: %v", CAPIRemediateAnnotation, m.GetAnnotations())
	}
	if _, err := p.Do(ctx, n, Redeploy); err != nil {
		t.Fatalf("redeploy: %v", err)
	}
	if _, err := dyn.Resource(machineGVR).Namespace("capi").Get(ctx, "md-0-abc", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("redeploy: want the Machine deleted, get says %v", err)
	}
	if out, err := p.Do(ctx, n, Redeploy); err != nil || !strings.Contains(out, "already deleted") {
		t.Errorf("second redeploy: want 'already deleted', got %q, %v", out, err)
	}

	for _, tc := range []struct {
		name    string
		node    *corev1.Node
		mapper  bool
		wantErr string
	}{
		{"no machine annotation", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}, true, "has no Machine"},
		{"machine missing", n, true, "not found"},
		{"CAPI not installed", n, false, "is Cluster API installed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := capi()
			if !tc.mapper {
				p.Mapper = meta.NewDefaultRESTMapper(nil)
			}
			_, err := p.Do(ctx, tc.node, Reimage)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("want an error with %q, got %v", tc.wantErr, err)
			}
		})
	}
}

func TestLabProvider(t *testing.T) {
	ctx := context.Background()
	broken := func() *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:        "lab-node-1",
			Labels:      map[string]string{kubelet.LabelSimulated: "true"},
			Annotations: map[string]string{kubelet.AnnotationHeartbeat: "false", kubelet.AnnotationManualStatus: "true", "keep": "me"},
		}}
	}
	cs := k8sfake.NewClientset(broken())
	p := LabProvider{Client: cs, HealsAt: Reimage}
	if out, err := p.Do(ctx, broken(), Reboot); err != nil || !strings.Contains(out, "stays broken") {
		t.Fatalf("reboot before HealsAt: want 'stays broken', got %q, %v", out, err)
	}
	n, _ := cs.CoreV1().Nodes().Get(ctx, "lab-node-1", metav1.GetOptions{})
	if n.Annotations[kubelet.AnnotationHeartbeat] != "false" {
		t.Fatalf("reboot before HealsAt changed the node: %v", n.Annotations)
	}
	if _, err := p.Do(ctx, broken(), Reimage); err != nil {
		t.Fatalf("reimage: %v", err)
	}
	n, _ = cs.CoreV1().Nodes().Get(ctx, "lab-node-1", metav1.GetOptions{})
	if _, ok := n.Annotations[kubelet.AnnotationHeartbeat]; ok || n.Annotations[kubelet.AnnotationManualStatus] != "" || n.Annotations["keep"] != "me" {
		t.Errorf("reimage: want the lab annotations removed and the others kept, got %v", n.Annotations)
	}
	real := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "aks-np1-0"}}
	if _, err := p.Do(ctx, real, Reimage); err == nil || !strings.Contains(err.Error(), "not a simulated lab node") {
		t.Errorf("a real node: want a refusal, got %v", err)
	}
}
