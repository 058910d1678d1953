package pdb

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/cluster"
	ct "github.com/kdiag/kdiag/pkg/cluster/clustertest"
)

var web = map[string]string{"app": "web"}

// addDeployment adds a Deployment with replicas, its ReplicaSet, and one
// Ready pod per node to the snapshot.
func addDeployment(s *cluster.Snapshot, name string, replicas int32, lbls map[string]string, nodes ...string) {
	d, rs := ct.Deployment("shop", name, replicas, lbls)
	s.Deployments = append(s.Deployments, d)
	s.ReplicaSets = append(s.ReplicaSets, rs)
	s.Pods = append(s.Pods, ct.ReplicaPods(d, rs, nodes...)...)
}

// addDaemonSet adds a DaemonSet and one Ready pod per node.
func addDaemonSet(s *cluster.Snapshot, name string, lbls map[string]string, nodes ...string) {
	s.DaemonSets = append(s.DaemonSets, ct.DaemonSetOf("shop", name, lbls))
	for _, n := range nodes {
		p := ct.RunningPod("shop", name+"-"+n, n, lbls)
		ct.SetController(&p, "apps/v1", "DaemonSet", name)
		s.Pods = append(s.Pods, p)
	}
}

// budgetOf computes the first PDB of the snapshot against its pods.
func budgetOf(s *cluster.Snapshot) (*policyv1.PodDisruptionBudget, Budget) {
	ix := s.Index()
	p := &s.PodDisruptionBudgets[0]
	cov := NewCoverage([]*policyv1.PodDisruptionBudget{p}, ix.PodsInNamespace)
	return p, Compute(p, cov.PodsOf(p), SnapshotControllers(s), s.TakenAt)
}

func pod(s *cluster.Snapshot, name string) *corev1.Pod {
	for i := range s.Pods {
		if s.Pods[i].Name == name {
			return &s.Pods[i]
		}
	}
	panic("no pod " + name)
}

type counts struct{ expected, desired, current, allowed int32 }

func TestCompute(t *testing.T) {
	sel := ct.PDBSelector(web)
	tests := []struct {
		name  string
		build func(s *cluster.Snapshot)
		want  counts
		// reasons is what Reasons must return (nil: allows disruptions).
		reasons       []Reason
		syncErr       string // substring of SyncError; "" means none
		indeterminate bool
		missing       int32
	}{
		{
			name: "seed: minAvailable 1 over a single replica",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "nginx", 1, web, "n1")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 1))
			},
			want: counts{1, 1, 1, 0}, reasons: []Reason{ReasonMinAvailableAtLeastExpected},
		},
		{
			name: "healthy: minAvailable 2 over 3 replicas",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 2))
			},
			want: counts{3, 2, 3, 1},
		},
		{
			name: "minAvailable larger than the pods",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 5))
			},
			want: counts{3, 5, 3, 0}, reasons: []Reason{ReasonMinAvailableAtLeastExpected},
		},
		{
			name: "minAvailable 50% of 3 rounds up to 2",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "50%"))
			},
			want: counts{3, 2, 3, 1},
		},
		{
			name: "minAvailable 50% of 1 rounds up to 1",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 1, web, "n1")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "50%"))
			},
			want: counts{1, 1, 1, 0}, reasons: []Reason{ReasonMinAvailableAtLeastExpected},
		},
		{
			name: "minAvailable 33% of 10 rounds up to 4",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 10, web, "n1", "n1", "n1", "n1", "n1", "n2", "n2", "n2", "n2", "n2")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "33%"))
			},
			want: counts{10, 4, 10, 6},
		},
		{
			name: "minAvailable 100%",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "100%"))
			},
			want: counts{3, 3, 3, 0}, reasons: []Reason{ReasonMinAvailableAtLeastExpected},
		},
		{
			name: "percentage uses the controller's replicas, not the pods",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 4, web, "n1", "n2") // 2 of 4 pods exist
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "50%"))
			},
			want: counts{4, 2, 2, 0}, reasons: []Reason{ReasonUnhealthyPods}, missing: 2,
		},
		{
			name: "maxUnavailable 10% of 3 rounds up to 1",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), "10%"))
			},
			want: counts{3, 2, 3, 1},
		},
		{
			name: "maxUnavailable 0",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), 0))
			},
			want: counts{3, 3, 3, 0}, reasons: []Reason{ReasonMaxUnavailableZero},
		},
		{
			name: "maxUnavailable 0%",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 2, web, "n1", "n2")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), "0%"))
			},
			want: counts{2, 2, 2, 0}, reasons: []Reason{ReasonMaxUnavailableZero},
		},
		{
			name: "maxUnavailable 1 with one of 3 pods unready",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				ct.SetPodReady(pod(s, "web-5d8f7c-1"), false)
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), 1))
			},
			want: counts{3, 2, 2, 0}, reasons: []Reason{ReasonUnhealthyPods},
		},
		{
			name: "minAvailable 1 over one unready replica: both reasons",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "nginx", 1, web, "n1")
				ct.SetPodReady(pod(s, "nginx-5d8f7c-0"), false)
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 1))
			},
			want: counts{1, 1, 0, 0}, reasons: []Reason{ReasonMinAvailableAtLeastExpected, ReasonUnhealthyPods},
		},
		{
			name: "a terminating pod is not healthy",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 2, web, "n1", "n2")
				now := metav1.NewTime(ct.Now())
				pod(s, "web-5d8f7c-0").DeletionTimestamp = &now
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 1))
			},
			want: counts{2, 1, 1, 0}, reasons: []Reason{ReasonUnhealthyPods},
		},
		{
			name: "an eviction in flight (disruptedPods younger than 2m) is not healthy, an older one is",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 3, web, "n1", "n2", "n3")
				p := ct.MinAvailable(ct.PDB("shop", "b", sel), 1)
				p.Status.DisruptedPods = map[string]metav1.Time{
					"web-5d8f7c-0": metav1.NewTime(ct.Now().Add(-time.Minute)),
					"web-5d8f7c-1": metav1.NewTime(ct.Now().Add(-3 * time.Minute)),
				}
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, p)
			},
			want: counts{3, 1, 2, 1},
		},
		{
			name: "integer minAvailable over DaemonSet pods counts pods",
			build: func(s *cluster.Snapshot) {
				addDaemonSet(s, "agent", web, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 1))
			},
			want: counts{3, 1, 3, 2},
		},
		{
			name: "maxUnavailable over DaemonSet pods fails to sync",
			build: func(s *cluster.Snapshot) {
				addDaemonSet(s, "agent", web, "n1", "n2", "n3")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), 1))
			},
			want: counts{0, 0, 3, 0}, reasons: []Reason{ReasonSyncFailed}, syncErr: "does not implement the scale subresource",
		},
		{
			name: "percentage over a missing ReplicaSet fails to sync",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 2, web, "n1", "n2")
				s.ReplicaSets = nil
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "50%"))
			},
			want: counts{0, 0, 2, 0}, reasons: []Reason{ReasonSyncFailed}, syncErr: "found no controllers",
		},
		{
			name: "a ReplicaSet whose Deployment is gone uses its own scale",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 2, web, "n1", "n2")
				s.Deployments = nil
				*s.ReplicaSets[0].Spec.Replicas = 3
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), 1))
			},
			want: counts{3, 2, 2, 0}, reasons: []Reason{ReasonUnhealthyPods}, missing: 1,
		},
		{
			name: "StatefulSet with a percentage",
			build: func(s *cluster.Snapshot) {
				s.StatefulSets = append(s.StatefulSets, ct.StatefulSetOf("shop", "db", 3, web))
				for _, n := range []string{"n1", "n2", "n3"} {
					p := ct.RunningPod("shop", "db-"+n, n, web)
					ct.SetController(&p, "apps/v1", "StatefulSet", "db")
					s.Pods = append(s.Pods, p)
				}
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), "34%"))
			},
			want: counts{3, 1, 3, 2},
		},
		{
			name: "unmanaged pods are left out of a maxUnavailable budget",
			build: func(s *cluster.Snapshot) {
				s.Pods = append(s.Pods, ct.RunningPod("shop", "bare", "n1", web))
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), 1))
			},
			want: counts{0, 0, 1, 0}, reasons: []Reason{ReasonNoExpectedPods},
		},
		{
			name: "unmanaged pods count for an integer minAvailable",
			build: func(s *cluster.Snapshot) {
				s.Pods = append(s.Pods, ct.RunningPod("shop", "bare-1", "n1", web), ct.RunningPod("shop", "bare-2", "n2", web))
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 1))
			},
			want: counts{2, 1, 2, 1},
		},
		{
			name: "neither minAvailable nor maxUnavailable",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 2, web, "n1", "n2")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.PDB("shop", "b", sel))
			},
			want: counts{0, 0, 2, 0}, reasons: []Reason{ReasonNoBudget},
		},
		{
			name: "no pods",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 2, map[string]string{"app": "other"}, "n1", "n2")
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), 1))
			},
			want: counts{0, 1, 0, 0}, reasons: []Reason{ReasonNoPods},
		},
		{
			name: "a controller kdiag does not read makes a percentage indeterminate",
			build: func(s *cluster.Snapshot) {
				p := ct.RunningPod("shop", "rc-1", "n1", web)
				ct.SetController(&p, "v1", "ReplicationController", "rc")
				s.Pods = append(s.Pods, p)
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", sel), "50%"))
			},
			want: counts{0, 0, 1, 0}, reasons: []Reason{ReasonNoExpectedPods}, indeterminate: true,
		},
		{
			name: "a ReplicaSet gap makes a percentage indeterminate",
			build: func(s *cluster.Snapshot) {
				addDeployment(s, "web", 2, web, "n1", "n2")
				s.ReplicaSets = nil
				s.Gaps = append(s.Gaps, cluster.Gap{Resource: cluster.ResReplicaSets, Reason: cluster.GapForbidden})
				s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MaxUnavailable(ct.PDB("shop", "b", sel), 1))
			},
			want: counts{0, 0, 2, 0}, reasons: []Reason{ReasonNoExpectedPods}, indeterminate: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ct.Snapshot()
			tc.build(s)
			_, b := budgetOf(s)
			got := counts{b.ExpectedPods, b.DesiredHealthy, b.CurrentHealthy, b.DisruptionsAllowed}
			if got != tc.want {
				t.Errorf("expected/desired/current/allowed = %v, want %v", got, tc.want)
			}
			if r := b.Reasons(); !slices.Equal(r, tc.reasons) {
				t.Errorf("Reasons = %v, want %v", r, tc.reasons)
			}
			if tc.syncErr == "" && b.SyncError != "" || !strings.Contains(b.SyncError, tc.syncErr) {
				t.Errorf("SyncError = %q, want it to contain %q", b.SyncError, tc.syncErr)
			}
			if b.Indeterminate != tc.indeterminate {
				t.Errorf("Indeterminate = %v, want %v", b.Indeterminate, tc.indeterminate)
			}
			if m := b.Missing(); m != tc.missing {
				t.Errorf("Missing = %d, want %d", m, tc.missing)
			}
		})
	}
}

func TestComputeResolvesDeploymentThroughReplicaSet(t *testing.T) {
	s := ct.Snapshot()
	addDeployment(s, "web", 2, web, "n1", "n2")
	s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, ct.MinAvailable(ct.PDB("shop", "b", ct.PDBSelector(web)), 1))
	_, b := budgetOf(s)
	if len(b.Controllers) != 1 {
		t.Fatalf("Controllers = %v, want one Deployment", b.Controllers)
	}
	c := b.Controllers[0]
	if c.Kind != "Deployment" || c.Name != "web" || c.Replicas != 2 || c.Scale != ScaleKnown {
		t.Errorf("controller = %+v, want Deployment/web with 2 known replicas", c)
	}
	for _, m := range b.Members {
		if !m.Managed || !m.Controller.same(c) || !m.Healthy {
			t.Errorf("member %s = %+v, want managed by Deployment/web and healthy", m.Pod.Name, m)
		}
	}
}
