package pdb

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kdiag/kdiag/pkg/cluster"
)

// SnapshotControllers returns a ControllerFunc that resolves pods against a
// snapshot the way the disruption controller's finders do: a ReplicaSet owned
// by a Deployment resolves to the Deployment, a ReplicaSet whose Deployment is
// gone to the ReplicaSet itself (the controller falls back to its scale
// subresource), and a UID that does not match the object found counts as not
// found. Kinds the snapshot does not hold resolve to ScaleUnknown.
func SnapshotControllers(s *cluster.Snapshot) ControllerFunc {
	ix := s.Index()
	hasRS, hasDeploy, hasSTS := s.Has(cluster.ResReplicaSets), s.Has(cluster.ResDeployments), s.Has(cluster.ResStatefulSets)
	return func(pod *corev1.Pod) (Controller, bool) {
		ref := metav1.GetControllerOf(pod)
		if ref == nil {
			return Controller{}, false
		}
		c := Controller{Kind: ref.Kind, Name: ref.Name, UID: ref.UID, Scale: ScaleUnknown}
		group := groupOf(ref.APIVersion)
		switch {
		case ref.Kind == "ReplicaSet" && (group == "apps" || group == "extensions"):
			if !hasRS {
				return c, true
			}
			rs := ix.ReplicaSet(pod.Namespace, ref.Name)
			if rs == nil || (ref.UID != "" && rs.UID != ref.UID) {
				c.Scale = ScaleNotFound
				return c, true
			}
			if dref := metav1.GetControllerOf(rs); dref != nil && dref.Kind == "Deployment" {
				if !hasDeploy {
					return Controller{Kind: "Deployment", Name: dref.Name, UID: dref.UID, Scale: ScaleUnknown}, true
				}
				if d := ix.Deployment(pod.Namespace, dref.Name); d != nil && (dref.UID == "" || d.UID == dref.UID) {
					return Controller{Kind: "Deployment", Name: d.Name, UID: d.UID, Replicas: replicas(d.Spec.Replicas), Scale: ScaleKnown}, true
				}
				// The Deployment is gone: the controller's last finder reads
				// the ReplicaSet's own scale.
			}
			c.UID, c.Replicas, c.Scale = rs.UID, replicas(rs.Spec.Replicas), ScaleKnown
			return c, true
		case ref.Kind == "StatefulSet" && group == "apps":
			if !hasSTS {
				return c, true
			}
			sts := ix.StatefulSet(pod.Namespace, ref.Name)
			if sts == nil || (ref.UID != "" && sts.UID != ref.UID) {
				c.Scale = ScaleNotFound
				return c, true
			}
			c.UID, c.Replicas, c.Scale = sts.UID, replicas(sts.Spec.Replicas), ScaleKnown
			return c, true
		case ref.Kind == "DaemonSet" && group == "apps",
			ref.Kind == "Job" && group == "batch",
			ref.Kind == "Node" && group == "":
			// No scale subresource; a mirror (static) pod's controller is
			// its Node.
			c.Scale = ScaleUnsupported
			return c, true
		default:
			// ReplicationControllers and custom resources (Argo Rollouts,
			// operators) are not in the snapshot.
			return c, true
		}
	}
}

func groupOf(apiVersion string) string {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return ""
	}
	return gv.Group
}

// replicas applies the API default of 1 to an unset replica count.
func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}
