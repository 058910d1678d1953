package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/lab/kubelet"
	"github.com/kdiag/kdiag/pkg/lab/labtest"
)

func TestMain(m *testing.M) {
	labtest.Main(m, labtest.Options{Nodes: 3})
}

const (
	itNS    = "wl-it"
	quotaNS = "wl-quota"
)

// TestIntegrationWorkload breaks workloads on the lab's real control plane:
// some through their status, as a kubelet would report it (manual status),
// and some for real (kube-scheduler finds no node with 1000Gi of memory, a
// ResourceQuota makes the ReplicaSet controller fail, the Deployment
// controller gives up on a rollout, a finalizer holds a deleted pod). It
// reads live snapshots, checks that every workload check fires on its
// broken object and never on the healthy neighbour, and that the rollback
// passes a server-side dry run.
func TestIntegrationWorkload(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
	dyn := dynamic.NewForConfigOrDie(c.RESTConfig())
	labtest.CreateNamespace(t, ctx, cs, itNS)
	labtest.CreateNamespace(t, ctx, cs, quotaNS)

	deploy(t, ctx, cs, itNS, "healthy", 2, nil)
	deploy(t, ctx, cs, itNS, "crash", 2, nil)
	deploy(t, ctx, cs, itNS, "pull", 1, func(s *corev1.PodSpec) { s.Containers[0].Image = "registry.invalid/shop/web:v2" })
	deploy(t, ctx, cs, itNS, "cfgerr", 1, nil)
	deploy(t, ctx, cs, itNS, "flaky", 2, func(s *corev1.PodSpec) {
		s.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
			HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}}
	})
	deploy(t, ctx, cs, itNS, "big", 1, func(s *corev1.PodSpec) {
		s.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1000Gi")}
	})
	deploy(t, ctx, cs, itNS, "roll", 1, nil)

	// A quota of one pod: the ReplicaSet controller cannot create the second.
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "pods", Namespace: quotaNS},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("1")}}}
	if _, err := cs.CoreV1().ResourceQuotas(quotaNS).Create(ctx, quota, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, ctx, "the quota's status", func(ctx context.Context) (bool, error) {
		q, err := cs.CoreV1().ResourceQuotas(quotaNS).Get(ctx, "pods", metav1.GetOptions{})
		return err == nil && len(q.Status.Hard) > 0, err
	})
	deploy(t, ctx, cs, quotaNS, "capped", 2, nil)

	// Bare pods: one for a scheduler that does not exist, one bound to a
	// node whose containers never start, one held by a finalizer.
	nosched := barePod("nosched", "")
	nosched.Spec.SchedulerName = "no-such-scheduler"
	creating := barePod("creating", kubelet.DefaultNodePrefix+"1")
	creating.Annotations = map[string]string{kubelet.AnnotationManualStatus: "true"}
	held := barePod("held", kubelet.DefaultNodePrefix+"2")
	held.Finalizers = []string{"kdiag.io/test-hold"}
	for _, p := range []*corev1.Pod{nosched, creating, held} {
		if _, err := cs.CoreV1().Pods(itNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = cs.CoreV1().Pods(itNS).Patch(context.Background(), "held", types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	})

	// Everything that can run runs.
	running := map[string][]string{}
	labtest.WaitFor(t, ctx, "the pods run", func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(itNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		running = map[string][]string{}
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running[p.Labels["app"]] = append(running[p.Labels["app"]], p.Name)
			}
		}
		return len(running["healthy"]) == 2 && len(running["crash"]) == 2 && len(running["pull"]) == 1 &&
			len(running["cfgerr"]) == 1 && len(running["flaky"]) == 2 && len(running["roll"]) == 1 && len(running[""]) == 1, nil
	})

	// What kubelets would report, through manual status.
	for _, name := range running["crash"] {
		setWaiting(t, ctx, cs, name, "CrashLoopBackOff", "back-off 2m40s restarting failed container=app", func(cs *corev1.ContainerStatus) {
			at := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
			cs.RestartCount = 6
			cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 1, Reason: "Error", Message: "panic: DATABASE_URL is not set", StartedAt: at, FinishedAt: at}}
		})
	}
	pullPod := running["pull"][0]
	setWaiting(t, ctx, cs, pullPod, "ImagePullBackOff", `Back-off pulling image "registry.invalid/shop/web:v2"`, nil)
	event(t, ctx, cs, itNS, "Pod", pullPod, "spec.containers{app}", corev1.EventTypeWarning, "Failed",
		`Failed to pull image "registry.invalid/shop/web:v2": failed to resolve reference "registry.invalid/shop/web:v2": registry.invalid/shop/web:v2: not found`, 4)
	setWaiting(t, ctx, cs, running["cfgerr"][0], "CreateContainerConfigError", `secret "db-credentials" not found`, nil)
	labtest.SetPodStatus(t, ctx, cs, itNS, "creating", func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodPending
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Image: "registry.k8s.io/pause:3.10",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}
	}, func(p *corev1.Pod) bool { return len(p.Status.ContainerStatuses) == 1 })
	event(t, ctx, cs, itNS, "Pod", "creating", "", corev1.EventTypeWarning, "FailedMount",
		`MountVolume.SetUp failed for volume "config" : configmap "app-config" not found`, 8)
	// Probe failures, and old ones of a pod that no longer exists.
	for i, name := range running["flaky"] {
		event(t, ctx, cs, itNS, "Pod", name, "spec.containers{app}", corev1.EventTypeWarning, "Unhealthy",
			"Readiness probe failed: HTTP probe failed with statuscode: 503", int32(10+i))
	}
	event(t, ctx, cs, itNS, "Pod", "healthy-gone-x1", "spec.containers{app}", corev1.EventTypeWarning, "Unhealthy",
		"Readiness probe failed: connection refused", 3)

	// A finalizer holds the deleted pod.
	if err := cs.CoreV1().Pods(itNS).Delete(ctx, "held", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// A rollout whose new pods never become ready (the new template hands
	// their status to nobody), with a 3s progress deadline.
	patch := fmt.Sprintf(`{"spec":{"progressDeadlineSeconds":3,"template":{"metadata":{"annotations":{%q:"true"}},"spec":{"containers":[{"name":"app","image":"registry.k8s.io/pause:3.10-v2"}]}}}}`,
		kubelet.AnnotationManualStatus)
	if _, err := cs.AppsV1().Deployments(itNS).Patch(ctx, "roll", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	// Wait for the controllers and the scheduler.
	var snap *cluster.Snapshot
	labtest.WaitFor(t, ctx, "scheduler, ReplicaSet and Deployment controllers", func(ctx context.Context) (bool, error) {
		snap = labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{})
		ix := snap.Index()
		big := false
		for _, p := range ix.PodsInNamespace(itNS) {
			if c := podready.Condition(p, corev1.PodScheduled); p.Labels["app"] == "big" && c != nil && c.Reason == corev1.PodReasonUnschedulable {
				big = true
			}
		}
		capped, roll := ix.Deployment(quotaNS, "capped"), ix.Deployment(itNS, "roll")
		return big && capped != nil && hasDeployCondition(capped, appsv1.DeploymentReplicaFailure, "FailedCreate") &&
			roll != nil && hasDeployCondition(roll, appsv1.DeploymentProgressing, "ProgressDeadlineExceeded"), nil
	})
	fs := Analyze(snap)
	ct.LogFindings(t, fs)

	f := ct.MustFindIn(t, fs, idCrashLoop, itNS, "crash")
	ct.AssertMentions(t, f, "2 of 2 pods in CrashLoopBackOff", "exitCode=1 (application error)", "DATABASE_URL is not set", "restartCount=6")
	f = ct.MustFindIn(t, fs, idImagePull, itNS, "pull")
	ct.AssertMentions(t, f, "registry.invalid/shop/web:v2 (ImagePullBackOff): the image or tag does not exist", "event Warning Failed x4")
	f = ct.MustFindIn(t, fs, idCreateError, itNS, "cfgerr")
	ct.AssertMentions(t, f, `secret "db-credentials" not found`)
	if !hasCommand(f, "kubectl describe secret db-credentials -n "+itNS) {
		t.Errorf("want the command that shows the missing secret: %+v", f.Remediation)
	}
	f = ct.MustFindIn(t, fs, idUnschedulable, itNS, "big")
	if f.Severity != findings.Critical {
		t.Errorf("unschedulable: severity %s", f.Severity)
	}
	ct.AssertMentions(t, f, "Insufficient memory", "requests per pod: memory 1000Gi", "reason=Unschedulable")
	f = ct.MustFindIn(t, fs, idProbeFailing, itNS, "flaky")
	ct.AssertMentions(t, f, "Readiness probe of container app failed 21 times on 2 pods", "statuscode: 503",
		"readinessProbe: httpGet http://:8080/healthz, initialDelaySeconds=0 periodSeconds=10 timeoutSeconds=1 failureThreshold=3")
	if all, _ := json.Marshal(fs); strings.Contains(string(all), "healthy-gone-x1") {
		t.Errorf("probe events of a pod that no longer exists must be ignored")
	}
	f = ct.MustFindIn(t, fs, idReplicaFailure, quotaNS, "capped")
	ct.AssertMentions(t, f, "exceeded quota: pods", "status.conditions[ReplicaFailure].status=True")
	f = ct.MustFindIn(t, fs, idRolloutStuck, itNS, "roll")
	ct.AssertMentions(t, f, "ProgressDeadlineExceeded", "spec.progressDeadlineSeconds=3", "(revision 2)")
	if m := ct.Mutating(f); len(m) != 1 || !strings.Contains(m[0].Command, "--to-revision=1") {
		t.Fatalf("want the rollback to revision 1, got %+v", f.Remediation)
	}
	// Not yet stuck: everything younger than 5 minutes.
	for _, id := range []string{idStuckCreating, idStuckTerminating} {
		if got := ct.WithID(fs, id); len(got) != 0 {
			t.Errorf("%s fired on pods younger than 5m: %s", id, ct.Dump(got))
		}
	}
	ct.NoneAbout(t, fs, itNS, "nosched") // pending only seconds: not yet a problem

	// The rollback passes a server-side dry run, which changes nothing.
	labtest.VerifyFixes(t, ctx, dyn, fs)
	roll, err := cs.AppsV1().Deployments(itNS).Get(ctx, "roll", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := roll.Spec.Template.Spec.Containers[0].Image; img != "registry.k8s.io/pause:3.10-v2" {
		t.Errorf("the dry run must not roll back; image is now %s", img)
	}

	// Ten minutes later (the snapshot's clock, not the test's): the pod no
	// scheduler looks at, the pod whose containers never start and the pod
	// held by its finalizer are stuck.
	later := labtest.ReadLive(t, ctx, cs, cluster.LiveOptions{Now: func() time.Time { return time.Now().Add(10 * time.Minute) }})
	fs = Analyze(later)
	ct.LogFindings(t, fs)
	f = ct.MustFindIn(t, fs, idUnschedulable, itNS, "nosched")
	if f.Severity != findings.Warning {
		t.Errorf("never considered by a scheduler: severity %s, want warning", f.Severity)
	}
	ct.AssertMentions(t, f, "never considered by a scheduler", "spec.schedulerName=no-such-scheduler")
	f = ct.MustFindIn(t, fs, idStuckCreating, itNS, "creating")
	ct.AssertMentions(t, f, "container app ContainerCreating", `FailedMount: MountVolume.SetUp failed for volume "config"`)
	f = ct.MustFindIn(t, fs, idStuckTerminating, itNS, "held")
	ct.AssertMentions(t, f, "held by finalizers", "metadata.finalizers=[kdiag.io/test-hold]")

	// The healthy neighbour is never mentioned, now or later.
	ct.NoneAbout(t, fs, itNS, "healthy")
	ct.NoneAbout(t, Analyze(snap), itNS, "healthy")
}

// TestIntegrationWorkloadGaps reads the lab as a user who may list nothing:
// the workload checks stay silent instead of guessing.
func TestIntegrationWorkloadGaps(t *testing.T) {
	c := labtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := c.ClientCertConfig("kdiag-nobody", nil, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	s, err := cluster.ReadLive(ctx, kubernetes.NewForConfigOrDie(cfg), cluster.LiveOptions{Source: "lab"})
	if err != nil {
		t.Fatalf("read as an unprivileged user: %v", err)
	}
	if s.Has(cluster.ResPods) || s.Has(cluster.ResEvents) {
		t.Fatalf("want gaps for pods and events, got %v", s.Gaps)
	}
	if fs := Analyze(s); len(fs) != 0 {
		t.Fatalf("nothing read, nothing to say; got %s", ct.Dump(fs))
	}
}

func hasDeployCondition(d *appsv1.Deployment, typ appsv1.DeploymentConditionType, reason string) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == typ && c.Reason == reason {
			return true
		}
	}
	return false
}

// deploy creates a Deployment of pause pods labelled app=name, with mutate
// (if set) applied to its pod spec.
func deploy(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, name string, replicas int32, mutate func(*corev1.PodSpec)) {
	t.Helper()
	spec := labtest.PauseSpec()
	if mutate != nil {
		mutate(&spec)
	}
	labtest.CreateDeployment(t, ctx, cs, ns, name, replicas, nil, spec)
}

func barePod(name, node string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: itNS}, Spec: labtest.PauseSpec()}
	p.Spec.NodeName = node
	return p
}

// event records a core/v1 event about an object, as a kubelet or controller would.
func event(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, kind, name, fieldPath, typ, reason, msg string, count int32) {
	t.Helper()
	now := metav1.Now()
	e := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: name + "." + strings.ToLower(reason) + ".", Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: kind, Namespace: ns, Name: name, APIVersion: "v1", FieldPath: fieldPath},
		Type:           typ, Reason: reason, Message: msg, Count: count,
		FirstTimestamp: metav1.NewTime(now.Add(-10 * time.Minute)), LastTimestamp: now,
		Source: corev1.EventSource{Component: "kubelet"},
	}
	if _, err := cs.CoreV1().Events(ns).Create(ctx, e, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create event %s %s: %v", reason, name, err)
	}
}

// setWaiting hands a pod's status to the test and puts its container in
// the waiting state with the kubelet's reason and message.
func setWaiting(t *testing.T, ctx context.Context, cs kubernetes.Interface, name, reason, msg string, more func(*corev1.ContainerStatus)) {
	t.Helper()
	labtest.TakeStatus(t, ctx, cs.CoreV1().Pods(itNS).Patch, name)
	labtest.SetPodStatus(t, ctx, cs, itNS, name, func(p *corev1.Pod) {
		for k := range p.Status.Conditions {
			if c := &p.Status.Conditions[k]; c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
				c.Status, c.Reason = corev1.ConditionFalse, "ContainersNotReady"
			}
		}
		for k := range p.Status.ContainerStatuses {
			s := &p.Status.ContainerStatuses[k]
			s.Ready, s.Started = false, nil
			s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
			if more != nil {
				more(s)
			}
		}
	}, func(p *corev1.Pod) bool {
		for _, s := range p.Status.ContainerStatuses {
			if s.State.Waiting == nil || s.State.Waiting.Reason != reason {
				return false
			}
		}
		return len(p.Status.ContainerStatuses) > 0
	})
}
