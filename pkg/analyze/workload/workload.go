// Package workload analyzes why pods do not run: crash loops, image pulls,
// containers that cannot be created, scheduling, pods stuck starting or
// terminating, failing probes, and controllers that cannot create pods or
// finish a rollout.
package workload

import (
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// Check IDs of the workload area; docs/checks/<ID>.md explains each.
const (
	idCrashLoop        = "pod-crashloop"
	idImagePull        = "pod-image-pull-error"
	idCreateError      = "pod-create-container-error"
	idUnschedulable    = "pod-unschedulable"
	idStuckCreating    = "pod-stuck-creating"
	idStuckTerminating = "pod-stuck-terminating"
	idProbeFailing     = "probe-failing"
	idReplicaFailure   = "workload-replica-failure"
	idRolloutStuck     = "deployment-rollout-stuck"
)

// Checks returns every check the workload analyzer can report.
func Checks() []findings.Check {
	return []findings.Check{
		{ID: idCrashLoop, Area: findings.AreaWorkload, Severity: findings.Critical,
			Summary: "Containers in CrashLoopBackOff, grouped by owning workload, with the last termination reason, exit code and message"},
		{ID: idImagePull, Area: findings.AreaWorkload, Severity: findings.Critical,
			Summary: "Containers that cannot pull their image (ErrImagePull, ImagePullBackOff, InvalidImageName), with the registry's answer"},
		{ID: idCreateError, Area: findings.AreaWorkload, Severity: findings.Critical,
			Summary: "Containers the kubelet cannot create or start (CreateContainerConfigError and the like), e.g. a missing ConfigMap or Secret key"},
		{ID: idUnschedulable, Area: findings.AreaWorkload, Severity: findings.Critical,
			Summary: "Pending pods the scheduler cannot place, with its message; warning for pending pods no scheduler has looked at"},
		{ID: idStuckCreating, Area: findings.AreaWorkload, Severity: findings.Warning,
			Summary: "Pods scheduled for more than 5m whose containers have not started (volume mounts, pod sandbox, init containers)"},
		{ID: idStuckTerminating, Area: findings.AreaWorkload, Severity: findings.Warning,
			Summary: "Pods still Terminating more than 5m after their grace period, with their finalizers and node"},
		{ID: idProbeFailing, Area: findings.AreaWorkload, Severity: findings.Warning,
			Summary: "Failing liveness, readiness or startup probes, from the kubelet's Unhealthy events, with counts and last seen"},
		{ID: idReplicaFailure, Area: findings.AreaWorkload, Severity: findings.Critical,
			Summary: "Controllers whose pods the API server refuses (quota, PodSecurity, webhooks): ReplicaFailure or FailedCreate"},
		{ID: idRolloutStuck, Area: findings.AreaWorkload, Severity: findings.Warning,
			Summary: "Deployments whose rollout exceeded progressDeadlineSeconds, with the new ReplicaSet and a rollback"},
	}
}

// Analyze runs every workload check on the snapshot. It is a pure function
// of the snapshot: ages are measured against s.TakenAt.
func Analyze(s *cluster.Snapshot) []findings.Finding {
	if s == nil {
		return nil
	}
	var out []findings.Finding
	out = append(out, crashLoops(s)...)
	out = append(out, imagePullErrors(s)...)
	out = append(out, createErrors(s)...)
	out = append(out, unschedulable(s)...)
	out = append(out, stuckCreating(s)...)
	out = append(out, stuckTerminating(s)...)
	out = append(out, probeFailures(s)...)
	out = append(out, replicaFailures(s)...)
	out = append(out, rolloutsStuck(s)...)
	findings.Sort(out)
	return out
}
