package workload

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
	"github.com/kdiag/kdiag/pkg/findings"
)

// app adds a Deployment with replicas pods (web-a, web-b, ...) on node n1
// to the snapshot and returns pointers to its pods for the test to break;
// they stay valid only until the next append to s.Pods.
func app(s *cluster.Snapshot, ns, name string, replicas int) []*corev1.Pod {
	lbls := map[string]string{"app": name}
	d, rs := ct.Deployment(ns, name, int32(replicas), lbls)
	s.Deployments, s.ReplicaSets = append(s.Deployments, d), append(s.ReplicaSets, rs)
	start := len(s.Pods)
	for i := 0; i < replicas; i++ {
		p := ct.RunningPod(ns, name+"-"+string(rune('a'+i)), "n1", lbls)
		ct.Created(&p, time.Hour)
		ct.OwnPod(&p, rs)
		s.Pods = append(s.Pods, p)
	}
	out := make([]*corev1.Pod, replicas)
	for i := range out {
		out[i] = &s.Pods[start+i]
	}
	return out
}

func TestChecksDeclared(t *testing.T) {
	ct.AssertChecks(t, Checks(), findings.AreaWorkload, idCrashLoop, idImagePull, idCreateError, idUnschedulable,
		idStuckCreating, idStuckTerminating, idProbeFailing, idReplicaFailure, idRolloutStuck)
}

func TestHealthyClusterIsSilent(t *testing.T) {
	s := ct.Snapshot()
	app(s, "shop", "web", 3)
	app(s, "shop", "api", 2)
	s.StatefulSets = append(s.StatefulSets, ct.StatefulSetOf("data", "db", 1, nil))
	d := &s.Deployments[0]
	ct.SetDeploymentCondition(d, appsv1.DeploymentProgressing, corev1.ConditionTrue, "NewReplicaSetAvailable", "ReplicaSet has successfully progressed.", time.Hour)
	ct.SetDeploymentCondition(d, appsv1.DeploymentAvailable, corev1.ConditionTrue, "MinimumReplicasAvailable", "", time.Hour)
	pending := ct.PendingPod("shop", "just-created", nil, 20*time.Second) // not stuck yet
	s.Pods = append(s.Pods, pending)
	s.Events = append(s.Events, ct.PodEvent("shop", "web-a", "app", corev1.EventTypeNormal, "Pulled", "Successfully pulled image", time.Hour, 1))
	if fs := Analyze(s); len(fs) != 0 {
		t.Fatalf("healthy cluster: want no findings, got:\n%s", ct.Dump(fs))
	}
	if fs := Analyze(nil); fs != nil {
		t.Fatalf("nil snapshot: want nil, got %v", fs)
	}
}

func TestCrashLoop(t *testing.T) {
	s := ct.Snapshot()
	app(s, "shop", "api", 2) // healthy neighbour
	web := app(s, "shop", "web", 3)
	ct.CrashLooping(web[0], "app", 7, 1, "Error", "panic: DATABASE_URL is not set", 2*time.Minute)
	ct.CrashLooping(web[1], "app", 5, 137, "Error", "", 4*time.Minute)
	s.Events = append(s.Events, ct.PodEvent("shop", web[1].Name, "app", corev1.EventTypeNormal, "Killing",
		"Container app failed liveness probe, will be restarted", 4*time.Minute, 5))
	bare := ct.RunningPod("tools", "migrate", "n1", nil)
	bare.Spec.InitContainers = []corev1.Container{{Name: "init-db", Image: "example/migrate:1"}}
	bare.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "init-db", RestartCount: 3,
		State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 127, Reason: "Error"}}}}
	s.Pods = append(s.Pods, bare)

	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaWorkload)
	if got := ct.WithID(fs, idCrashLoop); len(got) != 2 {
		t.Fatalf("want 2 crashloop findings (Deployment web, Pod migrate), got:\n%s", ct.Dump(got))
	}
	f := ct.MustFind(t, fs, idCrashLoop, "web")
	if f.Severity != findings.Critical || f.Object != (findings.ObjectRef{Kind: "Deployment", Namespace: "shop", Name: "web"}) {
		t.Errorf("severity/object = %s %v", f.Severity, f.Object)
	}
	ct.AssertMentions(t, f, "2 of 3 pods in CrashLoopBackOff", "container app: last exit code 1, Error, after 7 restarts",
		"shop/web-a container app: state.waiting.reason=CrashLoopBackOff, restartCount=7",
		"reason=Error exitCode=1 (application error)", "message: panic: DATABASE_URL is not set",
		"exitCode=137 (SIGKILL", "Killing x5", "1 (Error) in 1 container, 137 (Error) in 1 container")
	if !strings.Contains(f.Explanation, "liveness") {
		t.Errorf("explanation should point at the liveness kills: %s", f.Explanation)
	}
	if f.Remediation[0].Command != "kubectl logs web-a -n shop -c app --previous" {
		t.Errorf("first remediation = %q", f.Remediation[0].Command)
	}
	m := ct.MustFind(t, fs, idCrashLoop, "migrate")
	if m.Object.Kind != "Pod" {
		t.Errorf("bare pod object = %v", m.Object)
	}
	ct.AssertMentions(t, m, "Pod tools/migrate: pod in CrashLoopBackOff", "init container init-db", "127 (command not found)")
	ct.None(t, fs, idCrashLoop, "api")

	t.Run("pods not read: silent", func(t *testing.T) {
		s.Gaps = []cluster.Gap{ct.Gap(cluster.ResPods)}
		if got := ct.WithID(Analyze(s), idCrashLoop); len(got) != 0 {
			t.Fatalf("pods in s.Gaps: want silence, got %s", ct.Dump(got))
		}
	})
}

func TestImagePullError(t *testing.T) {
	tests := []struct {
		name, reason, waitMsg, event, cause string
	}{
		{"tag does not exist", "ImagePullBackOff", `Back-off pulling image "registry.example/shop/web:v2"`,
			`Failed to pull image "registry.example/shop/web:v2": rpc error: code = NotFound desc = failed to pull and unpack image "registry.example/shop/web:v2": failed to resolve reference "registry.example/shop/web:v2": registry.example/shop/web:v2: not found`,
			"the image or tag does not exist"},
		{"credentials", "ErrImagePull", "", `Failed to pull image "registry.example/shop/web:v2": failed to authorize: failed to fetch oauth token: unexpected status: 401 Unauthorized`,
			"refused the credentials"},
		{"registry unreachable", "ErrImagePull", "", `Failed to pull image "registry.example/shop/web:v2": dial tcp: lookup registry.example on 10.0.0.10:53: no such host`,
			"cannot reach the registry"},
		{"malformed name", "InvalidImageName", `Failed to apply default image tag "Registry.Example/Web:v2": couldn't parse image name`, "",
			"malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ct.Snapshot()
			app(s, "shop", "api", 1)
			web := app(s, "shop", "web", 2)
			for _, p := range web {
				p.Spec.Containers[0].Image = "registry.example/shop/web:v2"
				p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
				ct.WaitingContainer(p, "app", tc.reason, tc.waitMsg)
				if tc.event != "" {
					s.Events = append(s.Events, ct.PodEvent("shop", p.Name, "app", corev1.EventTypeWarning, "Failed", tc.event, time.Minute, 4))
				}
			}
			fs := Analyze(s)
			ct.AssertComplete(t, fs, Checks(), findings.AreaWorkload)
			f := ct.MustFind(t, fs, idImagePull, "web")
			if f.Severity != findings.Critical || f.Object.Kind != "Deployment" {
				t.Errorf("severity/object = %s %v", f.Severity, f.Object)
			}
			ct.AssertMentions(t, f, "2 of 2 pods cannot pull image registry.example/shop/web:v2 ("+tc.reason+")", tc.cause,
				`image "registry.example/shop/web:v2": state.waiting.reason=`+tc.reason, "spec.imagePullSecrets=regcred")
			if tc.event != "" {
				ct.AssertMentions(t, f, "Failed x4, last 60s ago: Failed to pull image")
			}
			ct.None(t, fs, idImagePull, "api")
		})
	}

	t.Run("one finding per image", func(t *testing.T) {
		s := ct.Snapshot()
		p := ct.RunningPod("shop", "two", "n1", nil)
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "side", Image: "example/side:9"})
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: "side"})
		ct.WaitingContainer(&p, "app", "ErrImagePull", "not found")
		ct.WaitingContainer(&p, "side", "ImagePullBackOff", "")
		s.Pods = append(s.Pods, p)
		if got := ct.WithID(Analyze(s), idImagePull); len(got) != 2 {
			t.Fatalf("two images failing: want 2 findings, got %s", ct.Dump(got))
		}
	})
}

func TestCreateContainerError(t *testing.T) {
	s := ct.Snapshot()
	app(s, "shop", "api", 1)
	web := app(s, "shop", "web", 2)
	ct.WaitingContainer(web[0], "app", "CreateContainerConfigError", `secret "db-credentials" not found`)
	ct.WaitingContainer(web[1], "app", "CreateContainerConfigError", `secret "db-credentials" not found`)
	keyPod := ct.RunningPod("shop", "worker", "n1", nil)
	ct.WaitingContainer(&keyPod, "app", "CreateContainerConfigError", "couldn't find key DB_URL in ConfigMap shop/settings")
	s.Pods = append(s.Pods, keyPod)
	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaWorkload)
	f := ct.MustFind(t, fs, idCreateError, "web")
	if f.Severity != findings.Critical {
		t.Errorf("severity = %s", f.Severity)
	}
	ct.AssertMentions(t, f, `2 of 2 pods cannot start container app (CreateContainerConfigError): secret "db-credentials" not found`,
		"shop/web-a container app: state.waiting.reason=CreateContainerConfigError")
	if !hasCommand(f, "kubectl describe secret db-credentials -n shop") {
		t.Errorf("want a command to inspect the missing secret, got %+v", f.Remediation)
	}
	k := ct.MustFind(t, fs, idCreateError, "worker")
	if !hasCommand(k, "kubectl describe configmap settings -n shop") || !strings.Contains(k.Remediation[1].Description, "key DB_URL") {
		t.Errorf("want a command to inspect the ConfigMap's keys, got %+v", k.Remediation)
	}
	ct.None(t, fs, idCreateError, "api")
	if len(ct.WithID(fs, idStuckCreating)) != 0 {
		t.Errorf("a create error is not also 'stuck creating'")
	}
}

func hasCommand(f *findings.Finding, cmd string) bool {
	for _, r := range f.Remediation {
		if r.Command == cmd {
			return true
		}
	}
	return false
}

func TestUnschedulable(t *testing.T) {
	const msg = "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/disk-pressure: }, 2 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
	s := ct.Snapshot()
	lbls := map[string]string{"app": "big"}
	d, rs := ct.Deployment("shop", "big", 2, lbls)
	s.Deployments, s.ReplicaSets = append(s.Deployments, d), append(s.ReplicaSets, rs)
	for _, name := range []string{"big-a", "big-b"} {
		p := ct.PendingPod("shop", name, lbls, 14*time.Minute)
		ct.OwnPod(&p, rs)
		ct.SetMemory(&p, "app", "12Gi", "12Gi")
		p.Spec.NodeSelector = map[string]string{"agentpool": "user"}
		ct.Unschedulable(&p, msg, 14*time.Minute)
		s.Pods = append(s.Pods, p)
		s.Events = append(s.Events, ct.PodEvent("shop", name, "", corev1.EventTypeWarning, "FailedScheduling", msg, time.Minute, 9))
	}
	orphan := ct.PendingPod("batch", "nosched", nil, 30*time.Minute)
	orphan.Spec.SchedulerName = "my-scheduler"
	young := ct.PendingPod("batch", "young", nil, time.Minute)
	gated := ct.PendingPod("batch", "gated", nil, time.Hour)
	gated.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "example.com/quota"}}
	bound := ct.ContainerCreating("batch", "bound", "n1", time.Minute)
	s.Pods = append(s.Pods, orphan, young, gated, bound)
	app(s, "shop", "web", 1)

	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaWorkload)
	f := ct.MustFind(t, fs, idUnschedulable, "big")
	if f.Severity != findings.Critical || f.Object.Kind != "Deployment" {
		t.Errorf("severity/object = %s %v", f.Severity, f.Object)
	}
	ct.AssertMentions(t, f, "2 of 2 pods unschedulable (pending 14m): 0/3 nodes are available", "2 Insufficient memory",
		"status.conditions[PodScheduled].status=False reason=Unschedulable", "FailedScheduling x9, last 60s ago",
		"requests per pod: memory 12Gi", "spec.nodeSelector: agentpool=user", "scheduler message: 0/3 nodes are available")
	if n := strings.Count(strings.Join(f.Evidence, "\n"), "2 Insufficient memory"); n != 1 {
		t.Errorf("the scheduler's message should be quoted once, not %d times", n)
	}
	o := ct.MustFind(t, fs, idUnschedulable, "nosched")
	if o.Severity != findings.Warning {
		t.Errorf("pending without condition: severity %s, want warning", o.Severity)
	}
	ct.AssertMentions(t, o, "Pending for 30m and never considered by a scheduler", "spec.schedulerName=my-scheduler")
	for _, n := range []string{"young", "gated", "bound", "web"} {
		ct.None(t, fs, idUnschedulable, n)
	}
}

func TestStuckCreating(t *testing.T) {
	s := ct.Snapshot()
	s.Nodes = append(s.Nodes, ct.ReadyNode("n1"))
	stuck := ct.ContainerCreating("shop", "cfg", "n1", 12*time.Minute)
	fresh := ct.ContainerCreating("shop", "fresh", "n1", 2*time.Minute)
	pulling := ct.ContainerCreating("shop", "pulling", "n1", 20*time.Minute)
	ct.WaitingContainer(&pulling, "app", "ImagePullBackOff", "")
	s.Pods = append(s.Pods, stuck, fresh, pulling)
	s.Events = append(s.Events, ct.PodEvent("shop", "cfg", "", corev1.EventTypeWarning, "FailedMount",
		`MountVolume.SetUp failed for volume "config" : configmap "app-config" not found`, 30*time.Second, 8))
	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaWorkload)
	f := ct.MustFind(t, fs, idStuckCreating, "cfg")
	if f.Severity != findings.Warning {
		t.Errorf("severity = %s", f.Severity)
	}
	ct.AssertMentions(t, f, "stuck starting for up to 12m on n1", `FailedMount: MountVolume.SetUp failed for volume "config"`,
		"container app ContainerCreating", "FailedMount x8")
	ct.None(t, fs, idStuckCreating, "fresh")
	ct.None(t, fs, idStuckCreating, "pulling")
	ct.MustFind(t, fs, idImagePull, "pulling")
}

func TestStuckTerminating(t *testing.T) {
	s := ct.Snapshot()
	dead := ct.NotReadyNode("dead", corev1.ConditionUnknown, "NodeStatusUnknown", "", time.Hour)
	s.Nodes = append(s.Nodes, ct.ReadyNode("n1"), dead)
	st := ct.StatefulSetOf("data", "db", 2, nil)
	s.StatefulSets = append(s.StatefulSets, st)
	onDead := ct.RunningPod("data", "db-0", "dead", nil)
	ct.SetController(&onDead, "apps/v1", "StatefulSet", "db")
	onDead.DeletionTimestamp = &metav1.Time{Time: ct.Now().Add(-40 * time.Minute)}
	held := ct.RunningPod("shop", "held", "n1", nil)
	held.Finalizers = []string{"example.com/cleanup"}
	held.DeletionTimestamp = &metav1.Time{Time: ct.Now().Add(-10 * time.Minute)}
	justDeleted := ct.RunningPod("shop", "leaving", "n1", nil)
	justDeleted.DeletionTimestamp = &metav1.Time{Time: ct.Now().Add(-time.Minute)}
	s.Pods = append(s.Pods, onDead, held, justDeleted)

	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaWorkload)
	f := ct.MustFind(t, fs, idStuckTerminating, "db")
	if f.Object != (findings.ObjectRef{Kind: "StatefulSet", Namespace: "data", Name: "db"}) || f.Severity != findings.Warning {
		t.Errorf("object/severity = %v %s", f.Object, f.Severity)
	}
	ct.AssertMentions(t, f, "1 of 2 pods stuck Terminating, up to 40m past the grace period; 1 pod on a node that is not Ready",
		"node dead: node dead is not Ready (Ready=Unknown NodeStatusUnknown)")
	h := ct.MustFind(t, fs, idStuckTerminating, "held")
	ct.AssertMentions(t, h, "held by finalizers", "metadata.finalizers=[example.com/cleanup]")
	if !strings.Contains(h.Explanation, "finalizer") {
		t.Errorf("explanation = %s", h.Explanation)
	}
	ct.None(t, fs, idStuckTerminating, "leaving")
}

func TestProbeFailing(t *testing.T) {
	s := ct.Snapshot()
	app(s, "shop", "api", 1)
	web := app(s, "shop", "web", 3)
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
		PeriodSeconds: 10, TimeoutSeconds: 1, FailureThreshold: 3}
	for _, p := range web {
		p.Spec.Containers[0].ReadinessProbe = probe
	}
	web[0].Status.ContainerStatuses[0].Ready = false
	s.Events = append(s.Events,
		ct.PodEvent("shop", "web-a", "app", corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503", time.Minute, 30),
		ct.PodEvent("shop", "web-b", "app", corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: Get \"http://10.244.1.5:8080/healthz\": context deadline exceeded", 5*time.Minute, 12),
		ct.PodEvent("shop", "web-c", "app", corev1.EventTypeWarning, "Unhealthy", "Liveness probe failed: dial tcp 10.244.1.6:8080: connect: connection refused", 3*time.Minute, 4),
		ct.PodEvent("shop", "web-c", "app", corev1.EventTypeNormal, "Killing", "Container app failed liveness probe, will be restarted", 3*time.Minute, 2),
		ct.PodEvent("shop", "web-old-z", "app", corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: gone", 50*time.Minute, 3),
		ct.PodEvent("shop", "api-a", "app", corev1.EventTypeNormal, "Pulled", "Container image already present", time.Minute, 1),
	)
	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaWorkload)
	got := ct.WithID(fs, idProbeFailing)
	if len(got) != 2 {
		t.Fatalf("want 2 probe findings (web readiness, web liveness), got:\n%s", ct.Dump(got))
	}
	var rd, lv findings.Finding
	for _, f := range got {
		if strings.Contains(f.Title, "Readiness") {
			rd = f
		} else {
			lv = f
		}
	}
	if rd.Severity != findings.Warning || rd.Object != (findings.ObjectRef{Kind: "Deployment", Namespace: "shop", Name: "web"}) {
		t.Errorf("severity/object = %s %v", rd.Severity, rd.Object)
	}
	ct.AssertMentions(t, &rd, "Readiness probe of container app failed 42 times on 2 pods, last 60s ago (HTTP probe failed with statuscode: 503); 1 pod not ready",
		"shop/web-b container app: Readiness probe failed x12, last 5m ago", "context deadline exceeded",
		"readinessProbe: httpGet http://:8080/healthz, initialDelaySeconds=0 periodSeconds=10 timeoutSeconds=1 failureThreshold=3")
	ct.AssertMentions(t, &lv, "Liveness probe of container app failed 4 times on 1 pod", "restarted the container 2 times after failed liveness probes")
	if all, _ := json.Marshal(got); strings.Contains(string(all), "web-old-z") {
		t.Errorf("events of a pod that no longer exists must be ignored")
	}
	ct.None(t, fs, idProbeFailing, "api")

	t.Run("events not read: silent", func(t *testing.T) {
		s2 := ct.Snapshot()
		s2.Pods = s.Pods
		s2.Events = s.Events
		s2.Gaps = []cluster.Gap{ct.Gap(cluster.ResEvents)}
		if got := ct.WithID(Analyze(s2), idProbeFailing); len(got) != 0 {
			t.Fatalf("events in s.Gaps: want silence, got %s", ct.Dump(got))
		}
	})
	t.Run("pods not read: reported per pod from events alone", func(t *testing.T) {
		s3 := ct.Snapshot()
		s3.Events = s.Events
		s3.Gaps = []cluster.Gap{ct.Gap(cluster.ResPods)}
		f := ct.MustFind(t, Analyze(s3), idProbeFailing, "web-a")
		if f.Object.Kind != "Pod" {
			t.Errorf("object = %v", f.Object)
		}
	})
}

func TestReplicaFailure(t *testing.T) {
	const quota = `pods "web-5d8f7c-x2v9q" is forbidden: exceeded quota: compute, requested: limits.memory=1Gi, used: limits.memory=10Gi, limited: limits.memory=10Gi`
	s := ct.Snapshot()
	web := app(s, "shop", "web", 1)
	_ = web
	d := &s.Deployments[0]
	ct.SetDeploymentCondition(d, appsv1.DeploymentReplicaFailure, corev1.ConditionTrue, "FailedCreate", quota, 6*time.Minute)
	rs := &s.ReplicaSets[0]
	ct.SetReplicaSetCondition(rs, appsv1.ReplicaSetReplicaFailure, corev1.ConditionTrue, "FailedCreate", quota, 6*time.Minute)
	s.Events = append(s.Events, ct.Event("ReplicaSet", "shop", rs.Name, corev1.EventTypeWarning, "FailedCreate", "Error creating: "+quota, time.Minute, 14))
	rs.Status.Replicas = 0

	db := ct.StatefulSetOf("data", "db", 3, nil)
	db.Status.Replicas = 1
	ok := ct.StatefulSetOf("data", "cache", 2, nil) // recovered: old events only
	s.StatefulSets = append(s.StatefulSets, db, ok)
	psa := `create Pod db-1 in StatefulSet db failed error: pods "db-1" is forbidden: violates PodSecurity "restricted:latest": privileged (container "db" must not set securityContext.privileged=true)`
	s.Events = append(s.Events,
		ct.Event("StatefulSet", "data", "db", corev1.EventTypeWarning, "FailedCreate", psa, 2*time.Minute, 6),
		ct.Event("StatefulSet", "data", "cache", corev1.EventTypeWarning, "FailedCreate", "create Pod cache-1 failed: quota", 40*time.Minute, 2),
		ct.Event("StatefulSet", "data", "deleted", corev1.EventTypeWarning, "FailedCreate", "create Pod deleted-0 failed", 40*time.Minute, 2))

	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaWorkload)
	got := ct.WithID(fs, idReplicaFailure)
	if len(got) != 2 {
		t.Fatalf("want 2 replica failures (Deployment web merged with its ReplicaSet, StatefulSet db), got:\n%s", ct.Dump(got))
	}
	f := ct.MustFind(t, fs, idReplicaFailure, "web")
	if f.Severity != findings.Critical || f.Object.Kind != "Deployment" {
		t.Errorf("severity/object = %s %v", f.Severity, f.Object)
	}
	ct.AssertMentions(t, f, "Deployment shop/web cannot create its pods: pods \"web-5d8f7c-x2v9q\" is forbidden: exceeded quota",
		"deployment status.conditions[ReplicaFailure].status=True reason=FailedCreate", "replicaset web-5d8f7c status.conditions[ReplicaFailure]",
		"FailedCreate x14", "(same message)")
	st := ct.MustFind(t, fs, idReplicaFailure, "db")
	ct.AssertMentions(t, st, "violates PodSecurity", "statefulset db event Warning FailedCreate x6")
	ct.None(t, fs, idReplicaFailure, "cache")
	ct.None(t, fs, idReplicaFailure, "deleted")
}

func TestRolloutStuck(t *testing.T) {
	s := ct.Snapshot()
	lbls := map[string]string{"app": "web"}
	d, oldRS := ct.Deployment("shop", "web", 3, lbls)
	d.Generation = 7
	d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "app", Image: "example/web:2"}}
	d.Status.UpdatedReplicas, d.Status.AvailableReplicas, d.Status.ReadyReplicas, d.Status.UnavailableReplicas = 1, 3, 3, 1
	ct.SetDeploymentCondition(&d, appsv1.DeploymentProgressing, corev1.ConditionFalse, "ProgressDeadlineExceeded",
		`ReplicaSet "web-7b9f" has timed out progressing.`, 8*time.Minute)
	oldRS.Annotations = map[string]string{revisionAnnotation: "3"}
	oldRS.Spec.Template = corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", appsv1.DefaultDeploymentUniqueLabelKey: "5d8f7c"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/web:1"}}},
	}
	newRS := *oldRS.DeepCopy()
	newRS.Name, newRS.UID = "web-7b9f", "uid-rs-new"
	newRS.Annotations = map[string]string{revisionAnnotation: "4"}
	one := int32(1)
	newRS.Spec.Replicas = &one
	newRS.Spec.Template.Spec.Containers[0].Image = "example/web:2"

	healthy, hrs := ct.Deployment("shop", "api", 2, map[string]string{"app": "api"})
	ct.SetDeploymentCondition(&healthy, appsv1.DeploymentProgressing, corev1.ConditionTrue, "NewReplicaSetAvailable", "", time.Hour)
	paused, prs := ct.Deployment("shop", "paused", 1, map[string]string{"app": "paused"})
	paused.Spec.Paused = true
	ct.SetDeploymentCondition(&paused, appsv1.DeploymentProgressing, corev1.ConditionFalse, "ProgressDeadlineExceeded", "", time.Hour)
	s.Deployments = append(s.Deployments, d, healthy, paused)
	s.ReplicaSets = append(s.ReplicaSets, oldRS, newRS, hrs, prs)

	fs := Analyze(s)
	ct.AssertComplete(t, fs, Checks(), findings.AreaWorkload)
	f := ct.MustFind(t, fs, idRolloutStuck, "web")
	if f.Severity != findings.Warning || f.Object.Kind != "Deployment" {
		t.Errorf("severity/object = %s %v", f.Severity, f.Object)
	}
	ct.AssertMentions(t, f, "rollout stuck for 8m: 1 of 3 replicas updated, new ReplicaSet web-7b9f has 0 ready", `ReplicaSet "web-7b9f" has timed out progressing.`,
		"new ReplicaSet web-7b9f (revision 4)", "spec.progressDeadlineSeconds=600")
	m := ct.Mutating(f)
	if len(m) != 1 {
		t.Fatalf("want one rollback remediation, got %+v", f.Remediation)
	}
	if m[0].Command != "kubectl rollout undo deployment/web -n shop --to-revision=3" || m[0].Action.PatchType != "application/json-patch+json" {
		t.Errorf("rollback = %q %s", m[0].Command, m[0].Action.PatchType)
	}
	var ops []map[string]any
	if err := json.Unmarshal(m[0].Action.Patch, &ops); err != nil || len(ops) != 2 {
		t.Fatalf("patch %s: %v", m[0].Action.Patch, err)
	}
	if ops[0]["op"] != "test" || ops[0]["path"] != "/metadata/generation" || ops[0]["value"] != float64(7) {
		t.Errorf("first op should test the generation: %v", ops[0])
	}
	body := string(m[0].Action.Patch)
	if ops[1]["path"] != "/spec/template" || !strings.Contains(body, "example/web:1") || strings.Contains(body, appsv1.DefaultDeploymentUniqueLabelKey) {
		t.Errorf("second op should restore revision 3's template without the hash label: %s", body)
	}
	ct.None(t, fs, idRolloutStuck, "api")
	ct.None(t, fs, idRolloutStuck, "paused")
}

func TestExitCodeMeaning(t *testing.T) {
	for _, tc := range []struct {
		code   int32
		reason string
		want   string
	}{
		{1, "Error", "application error"}, {127, "Error", "command not found"}, {137, "OOMKilled", "memory limit"},
		{137, "Error", "SIGKILL"}, {139, "Error", "signal 11 (SIGSEGV)"}, {0, "Completed", "restartPolicy"}, {42, "Error", ""},
	} {
		if got := exitCodeMeaning(tc.code, tc.reason); !strings.Contains(got, tc.want) || (tc.want == "" && got != "") {
			t.Errorf("exitCodeMeaning(%d, %s) = %q, want it to contain %q", tc.code, tc.reason, got, tc.want)
		}
	}
}

func TestDeterministic(t *testing.T) {
	a, _ := json.Marshal(Analyze(bigSnapshot(200, 10)))
	b, _ := json.Marshal(Analyze(bigSnapshot(200, 10)))
	if string(a) != string(b) {
		t.Fatal("two runs on equal snapshots differ")
	}
	if len(a) < 100 {
		t.Fatal("the big snapshot should produce findings")
	}
}
