package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/apis/kdiag/v1alpha1"
	"github.com/kdiag/kdiag/pkg/fix"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
	"github.com/kdiag/kdiag/pkg/ops"
)

// TestMain gives the package a shared lab; it starts only when a test calls
// labtest.Cluster, so the package's other tests do not pay for it.
func TestMain(m *testing.M) { labtest.Main(m, labtest.Options{Nodes: 1}) }

// TestFixCommandOnLab runs `kdiag fix` as a user would, against a real
// control plane: verify only, apply with --wait, see the record with
// `kdiag ops list`, and find nothing left to fix.
func TestFixCommandOnLab(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := ops.EnsureCRD(ctx, c.RESTConfig()); err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	const ns = "cli-fix"
	labtest.CreateNamespace(t, ctx, cs, ns)
	lbls := map[string]string{"app": "order-service"}
	labtest.CreateDeployment(t, ctx, cs, ns, "order-service", 1, lbls, corev1.PodSpec{Containers: []corev1.Container{{
		Name: "app", Image: "kdiag.io/lab/http-server", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 3000}},
	}}})
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "order-service"},
		Spec: corev1.ServiceSpec{Selector: lbls, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, ctx, "order-service pod running", func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 1 && labtest.PodRunning(&pods.Items[0]), err
	})
	kc := []string{"--kubeconfig", c.KubeconfigPath()}
	run := func(args ...string) (fix.Result, string, error) {
		t.Helper()
		out, errOut, err := runKdiag(t, append(append([]string{}, args...), kc...)...)
		var res fix.Result
		if err == nil && strings.Contains(strings.Join(args, " "), "-o json") {
			if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
				t.Fatalf("kdiag %s: stdout is not JSON: %v\n%s", strings.Join(args, " "), jerr, out)
			}
		}
		return res, errOut, err
	}

	res, _, err := run("fix", "service-target-port-mismatch", ns+"/service/order-service", "--dry-run=server", "-o", "json")
	if err != nil || res.Applied || res.DryRun.Status != "passed" || res.Operation != "" {
		t.Fatalf("--dry-run=server: err %v, result %+v; want verified, not applied, not recorded", err, res)
	}

	res, errOut, err := run("fix", "service-target-port-mismatch", "svc/order-service", "-n", ns, "--yes", "--wait", "-o", "json")
	if err != nil {
		t.Fatalf("apply: %v\nstderr: %s", err, errOut)
	}
	if !res.Applied || res.Operation == "" || res.Recheck == nil || !res.Recheck.Gone || errOut != "" {
		t.Fatalf("apply: result %+v, stderr %q; want applied, recorded, gone, nothing on stderr", res, errOut)
	}
	got, _ := cs.CoreV1().Services(ns).Get(ctx, "order-service", metav1.GetOptions{})
	if tp := got.Spec.Ports[0].TargetPort.String(); tp != "3000" && tp != "http" {
		t.Errorf("targetPort after kdiag fix = %s", tp)
	}

	out, _, err := runKdiag(t, append([]string{"ops", "list", "--type", "Fix", "-o", "json"}, kc...)...)
	if err != nil {
		t.Fatal(err)
	}
	var list v1alpha1.OperationList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, op := range list.Items {
		found = found || (op.Name == res.Operation && op.Status.Phase == v1alpha1.PhaseSucceeded)
	}
	if !found {
		t.Errorf("kdiag ops list --type Fix does not show %s Succeeded:\n%s", res.Operation, out)
	}

	_, _, err = run("fix", "service-target-port-mismatch", "-n", ns, "--yes")
	if err == nil || !strings.Contains(err.Error(), "nothing to fix") {
		t.Errorf("second fix: err = %v, want nothing to fix", err)
	}
}
