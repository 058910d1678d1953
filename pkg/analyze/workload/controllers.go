package workload

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// failedCreateKind reports the controllers whose FailedCreate events say
// they could not create pods.
func failedCreateKind(kind string) bool {
	switch kind {
	case "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController":
		return true
	}
	return false
}

// replicaFailure collects why one workload cannot create its pods.
type replicaFailure struct {
	ns, kind, name string
	lines          []string
	message        string
	shown          map[string]bool
}

// add records an evidence line; a message already shown is not repeated.
func (rf *replicaFailure) add(prefix, msg string) {
	if rf.shown == nil {
		rf.shown = map[string]bool{}
	}
	key := strings.TrimPrefix(msg, "Error creating: ")
	if rf.shown[key] {
		rf.lines = append(rf.lines, prefix+" (same message)")
		return
	}
	rf.shown[key] = true
	rf.lines = append(rf.lines, prefix+": "+evidence.Short(msg))
	if rf.message == "" {
		rf.message = key
	}
}

// replicaFailures reports workloads whose controller cannot create pods:
// a ReplicaFailure condition on a Deployment or ReplicaSet, or FailedCreate
// events on a ReplicaSet, StatefulSet, DaemonSet, Job or
// ReplicationController that still misses pods.
func replicaFailures(s *cluster.Snapshot) []findings.Finding {
	now := s.TakenAt
	ix := s.Index()
	byKey := map[string]*replicaFailure{}
	get := func(ns, kind, name string) *replicaFailure {
		k := ns + "/" + kind + "/" + name
		if byKey[k] == nil {
			byKey[k] = &replicaFailure{ns: ns, kind: kind, name: name}
		}
		return byKey[k]
	}
	for i := range s.Deployments {
		d := &s.Deployments[i]
		if evidence.Gapped(s, cluster.ResDeployments, d.Namespace) {
			continue
		}
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue {
				rf := get(d.Namespace, "Deployment", d.Name)
				rf.add(fmt.Sprintf("deployment status.conditions[ReplicaFailure].status=True reason=%s since %s",
					c.Reason, evidence.Stamp(now, c.LastTransitionTime)), c.Message)
			}
		}
	}
	for i := range s.ReplicaSets {
		rs := &s.ReplicaSets[i]
		if evidence.Gapped(s, cluster.ResReplicaSets, rs.Namespace) {
			continue
		}
		for _, c := range rs.Status.Conditions {
			if c.Type == appsv1.ReplicaSetReplicaFailure && c.Status == corev1.ConditionTrue {
				kind, name := topOfReplicaSet(rs)
				rf := get(rs.Namespace, kind, name)
				rf.add(fmt.Sprintf("replicaset %s status.conditions[ReplicaFailure].status=True reason=%s since %s",
					rs.Name, c.Reason, evidence.Stamp(now, c.LastTransitionTime)), c.Message)
			}
		}
	}
	for i := range s.Events {
		e := &s.Events[i]
		o := e.InvolvedObject
		if e.Reason != "FailedCreate" || e.Type != corev1.EventTypeWarning || !failedCreateKind(o.Kind) ||
			evidence.Gapped(s, cluster.ResEvents, o.Namespace) {
			continue
		}
		kind, name, missing, known := missingPods(s, ix, o.Kind, o.Namespace, o.Name)
		if known && !missing {
			continue // the controller has caught up since: the failure is over
		}
		rf := get(o.Namespace, kind, name)
		rf.add(fmt.Sprintf("%s %s event Warning FailedCreate x%d, last %s", strings.ToLower(o.Kind), o.Name,
			cluster.EventCount(e), evidence.Ago(now, cluster.EventTime(e).Time)), e.Message)
	}

	keys := slices.Sorted(maps.Keys(byKey))
	var out []findings.Finding
	for _, k := range keys {
		rf := byKey[k]
		res := strings.ToLower(rf.kind)
		out = append(out, findings.Finding{
			ID: idReplicaFailure, Severity: findings.Critical, Area: findings.AreaWorkload,
			Object:   findings.ObjectRef{Kind: rf.kind, Namespace: rf.ns, Name: rf.name},
			Title:    fmt.Sprintf("%s %s/%s cannot create its pods: %s", rf.kind, rf.ns, rf.name, evidence.Short(rf.message)),
			Evidence: evidence.Capped(rf.lines),
			Explanation: "The API server refuses the pods the controller tries to create, so the workload runs fewer " +
				"replicas than it should and no pod-level check can see why. The message names the cause: a ResourceQuota " +
				"that is used up, a LimitRange the pod violates, PodSecurity admission, an admission webhook that rejects " +
				"or times out, or a missing ServiceAccount.",
			Remediation: []findings.Remediation{
				findings.Inspect("Show the controller's conditions and FailedCreate events", "kubectl describe "+res+" "+rf.name+" -n "+rf.ns),
				findings.Inspect("Show the namespace's quotas and how much is used", "kubectl describe resourcequota -n "+rf.ns),
				findings.Inspect("List every pod creation failure of the namespace", "kubectl get events -n "+rf.ns+" --field-selector reason=FailedCreate"),
			},
		})
	}
	return out
}

// topOfReplicaSet returns the Deployment that controls a ReplicaSet, or the
// ReplicaSet itself.
func topOfReplicaSet(rs *appsv1.ReplicaSet) (kind, name string) {
	if ref := metav1.GetControllerOf(rs); ref != nil && ref.Kind == "Deployment" {
		return "Deployment", ref.Name
	}
	return "ReplicaSet", rs.Name
}

// missingPods resolves the workload a FailedCreate event is about to its
// top-level owner and says whether it still has fewer pods than it wants.
// known is false when the snapshot cannot tell (object or resource not
// read, or a Job, whose objects kdiag does not read).
func missingPods(s *cluster.Snapshot, ix *cluster.Index, kind, ns, name string) (topKind, topName string, missing, known bool) {
	// An object that was read and is gone makes its old events moot.
	switch kind {
	case "ReplicaSet":
		if rs := ix.ReplicaSet(ns, name); rs != nil {
			k, n := topOfReplicaSet(rs)
			return k, n, rs.Status.Replicas < replicas(rs.Spec.Replicas), true
		}
		return kind, name, false, !evidence.Gapped(s, cluster.ResReplicaSets, ns)
	case "StatefulSet":
		if st := ix.StatefulSet(ns, name); st != nil {
			return kind, name, st.Status.Replicas < replicas(st.Spec.Replicas), true
		}
		return kind, name, false, !evidence.Gapped(s, cluster.ResStatefulSets, ns)
	case "DaemonSet":
		if ds := ix.DaemonSet(ns, name); ds != nil {
			return kind, name, ds.Status.CurrentNumberScheduled < ds.Status.DesiredNumberScheduled, true
		}
		return kind, name, false, !evidence.Gapped(s, cluster.ResDaemonSets, ns)
	}
	return kind, name, false, false
}

// replicas returns a desired replica count, defaulting to 1 as the API does.
func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

// revisionAnnotation is where the Deployment controller numbers the
// revisions of a Deployment's ReplicaSets.
const revisionAnnotation = "deployment.kubernetes.io/revision"

// rolloutsStuck reports Deployments whose rollout exceeded its progress
// deadline.
func rolloutsStuck(s *cluster.Snapshot) []findings.Finding {
	now := s.TakenAt
	var stuck []*appsv1.Deployment
	for i := range s.Deployments {
		d := &s.Deployments[i]
		if evidence.Gapped(s, cluster.ResDeployments, d.Namespace) || d.Spec.Paused {
			continue
		}
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded" {
				stuck = append(stuck, d)
			}
		}
	}
	if len(stuck) == 0 {
		return nil
	}
	sort.Slice(stuck, func(i, j int) bool {
		if stuck[i].Namespace != stuck[j].Namespace {
			return stuck[i].Namespace < stuck[j].Namespace
		}
		return stuck[i].Name < stuck[j].Name
	})
	// The ReplicaSets of each stuck Deployment, by revision, newest first.
	want := map[types.UID]bool{}
	for _, d := range stuck {
		want[d.UID] = true
	}
	sets := map[types.UID][]*appsv1.ReplicaSet{}
	for i := range s.ReplicaSets {
		rs := &s.ReplicaSets[i]
		if ref := metav1.GetControllerOf(rs); ref != nil && ref.Kind == "Deployment" && want[ref.UID] {
			sets[ref.UID] = append(sets[ref.UID], rs)
		}
	}
	var out []findings.Finding
	for _, d := range stuck {
		var c appsv1.DeploymentCondition
		for _, x := range d.Status.Conditions {
			if x.Type == appsv1.DeploymentProgressing {
				c = x
			}
		}
		rss := sets[d.UID]
		sort.Slice(rss, func(i, j int) bool { return revision(rss[i]) > revision(rss[j]) })
		want := replicas(d.Spec.Replicas)
		deadline := int32(600)
		if d.Spec.ProgressDeadlineSeconds != nil {
			deadline = *d.Spec.ProgressDeadlineSeconds
		}
		ev := []string{
			fmt.Sprintf("status.conditions[Progressing].status=False reason=ProgressDeadlineExceeded since %s: %s",
				evidence.Stamp(now, c.LastTransitionTime), evidence.Short(c.Message)),
			fmt.Sprintf("spec.replicas=%d, status: updatedReplicas=%d readyReplicas=%d availableReplicas=%d unavailableReplicas=%d",
				want, d.Status.UpdatedReplicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas, d.Status.UnavailableReplicas),
			fmt.Sprintf("spec.progressDeadlineSeconds=%d", deadline),
		}
		if len(rss) > 0 {
			ev = append(ev, fmt.Sprintf("new ReplicaSet %s (revision %d): %d of %d pods ready", rss[0].Name, revision(rss[0]),
				rss[0].Status.ReadyReplicas, replicas(rss[0].Spec.Replicas)))
		}
		title := fmt.Sprintf("Deployment %s/%s rollout stuck for %s: %d of %d replicas updated",
			d.Namespace, d.Name, evidence.Since(now, c.LastTransitionTime), d.Status.UpdatedReplicas, want)
		if len(rss) > 0 {
			title += fmt.Sprintf(", new ReplicaSet %s has %d ready", rss[0].Name, rss[0].Status.ReadyReplicas)
		}
		rem := []findings.Remediation{
			findings.Inspect("Show the rollout's conditions and ReplicaSets", "kubectl describe deployment "+d.Name+" -n "+d.Namespace),
			findings.Inspect("List the revisions to see what changed", "kubectl rollout history deployment/"+d.Name+" -n "+d.Namespace),
			findings.Inspect("List the pods of the new revision and why they are not ready", "kubectl get pods -n "+d.Namespace+" -o wide"+labelFlag(d)),
		}
		if len(rss) > 1 {
			if r, ok := undoRemediation(d, rss[1]); ok {
				rem = append(rem, r)
			}
		}
		out = append(out, findings.Finding{
			ID: idRolloutStuck, Severity: findings.Warning, Area: findings.AreaWorkload,
			Object: findings.ObjectRef{Kind: "Deployment", Namespace: d.Namespace, Name: d.Name},
			Title:  title, Evidence: ev,
			Explanation: "The new revision's pods did not become available within progressDeadlineSeconds, so the " +
				"Deployment controller stopped reporting progress; the old pods keep serving while the rollout hangs. " +
				"The pod findings of this Deployment (crash loops, image pulls, scheduling, probes) say why. Fix the " +
				"new revision, or roll back to the previous one.",
			Remediation: rem,
		})
	}
	return out
}

// revision returns a ReplicaSet's revision number, 0 when unknown.
func revision(rs *appsv1.ReplicaSet) int64 {
	n, err := strconv.ParseInt(rs.Annotations[revisionAnnotation], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// labelFlag renders the Deployment's matchLabels as a kubectl -l flag.
func labelFlag(d *appsv1.Deployment) string {
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchLabels) == 0 {
		return ""
	}
	kv := make([]string, 0, len(d.Spec.Selector.MatchLabels))
	for k, v := range d.Spec.Selector.MatchLabels {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return " -l " + strings.Join(kv, ",")
}

// undoRemediation builds the rollback kubectl rollout undo performs: a JSON
// patch that puts the previous ReplicaSet's pod template (without the
// pod-template-hash label) back into the Deployment. A test of
// metadata.generation first makes the patch fail if the Deployment changed
// since the snapshot.
func undoRemediation(d *appsv1.Deployment, prev *appsv1.ReplicaSet) (findings.Remediation, bool) {
	rev := revision(prev)
	if rev == 0 {
		return findings.Remediation{}, false
	}
	tmpl := prev.Spec.Template.DeepCopy()
	delete(tmpl.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	var ops []map[string]any
	if d.Generation > 0 {
		ops = append(ops, map[string]any{"op": "test", "path": "/metadata/generation", "value": d.Generation})
	}
	ops = append(ops, map[string]any{"op": "replace", "path": "/spec/template", "value": tmpl})
	r, err := findings.Patch(fmt.Sprintf("Roll back to revision %d (ReplicaSet %s), as kubectl rollout undo does", rev, prev.Name),
		appsv1.SchemeGroupVersion.WithResource("deployments"), "deployment", d.Namespace, d.Name, types.JSONPatchType, ops)
	if err != nil {
		return findings.Remediation{}, false
	}
	r.Command = fmt.Sprintf("kubectl rollout undo deployment/%s -n %s --to-revision=%d", d.Name, d.Namespace, rev)
	return r, true
}
