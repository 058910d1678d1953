package clustertest

import (
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kdiag/kdiag/pkg/cluster"
)

// SynthOptions sizes a synthetic cluster for benchmarks.
type SynthOptions struct {
	Nodes int
	Pods  int
	// PodsPerDeployment groups pods into Deployments, each with a Service
	// and a PDB; default 10.
	PodsPerDeployment int
	// Namespaces spreads the Deployments; default 50.
	Namespaces int
}

// Synthetic builds a large, realistic snapshot: nodes with leases,
// Deployments with ReplicaSets, Services, EndpointSlices and PDBs, pods
// with the fields a real API server returns (managed fields, owner
// references, resources, probes, container statuses) and a few events per
// Deployment. One Deployment in fifty is broken the way the seed's are
// (wrong targetPort, PDB allowing no disruption), so analyzers do real work.
func Synthetic(o SynthOptions) *cluster.Snapshot {
	if o.PodsPerDeployment <= 0 {
		o.PodsPerDeployment = 10
	}
	if o.Namespaces <= 0 {
		o.Namespaces = 50
	}
	s := Snapshot()
	now := metav1.NewTime(Now())
	for i := 0; i < o.Nodes; i++ {
		n := ReadyNode(fmt.Sprintf("aks-np%d-%08d-vmss%06d", i%3+1, 40000000+i, i))
		n.Labels["agentpool"] = fmt.Sprintf("np%d", i%3+1)
		n.Spec.PodCIDR = fmt.Sprintf("10.%d.%d.0/24", 244+i/65536%8, i/256%256)
		n.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi"), corev1.ResourcePods: resource.MustParse("110")}
		n.Status.Allocatable = n.Status.Capacity
		s.Nodes = append(s.Nodes, n)
		rt := metav1.NewMicroTime(Now().Add(-3 * time.Second))
		s.Leases = append(s.Leases, coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: n.Name},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(n.Name), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &rt},
		})
	}
	deployments := (o.Pods + o.PodsPerDeployment - 1) / o.PodsPerDeployment
	pod := 0
	for d := 0; d < deployments && pod < o.Pods; d++ {
		ns := fmt.Sprintf("team-%02d", d%o.Namespaces)
		name := fmt.Sprintf("svc-%05d", d)
		lbls := map[string]string{"app": name, "tier": "backend"}
		replicas := int32(min(o.PodsPerDeployment, o.Pods-pod))
		dep, rs := Deployment(ns, name, replicas, lbls)
		s.Deployments = append(s.Deployments, dep)
		s.ReplicaSets = append(s.ReplicaSets, rs)
		target := intstr.FromInt32(8080)
		broken := d%50 == 7
		if broken {
			target = intstr.FromInt32(9999)
		}
		s.Services = append(s.Services, corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-svc-" + name)},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, ClusterIP: fmt.Sprintf("10.0.%d.%d", d/256%256, d%256),
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: target, Protocol: corev1.ProtocolTCP}}},
		})
		minAvail := intstr.FromInt32(replicas - 1)
		if broken {
			minAvail = intstr.FromInt32(replicas)
		}
		allowed := int32(1)
		if broken {
			allowed = 0
		}
		s.PodDisruptionBudgets = append(s.PodDisruptionBudgets, policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
			Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvail, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}},
			Status: policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, DisruptionsAllowed: allowed,
				CurrentHealthy: replicas, DesiredHealthy: minAvail.IntVal, ExpectedPods: replicas},
		})
		slice := discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(target.IntVal), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
		for r := int32(0); r < replicas; r++ {
			node := s.Nodes[pod%len(s.Nodes)].Name
			p := RunningPod(ns, fmt.Sprintf("%s-5d8f7c-%05d", name, r), node, map[string]string{"app": name, "tier": "backend", "pod-template-hash": "5d8f7c"},
				corev1.ContainerPort{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP})
			OwnPod(&p, rs)
			realisticPod(&p, now, pod)
			s.Pods = append(s.Pods, p)
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{p.Status.PodIP},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: p.Name},
				NodeName:   ptr.To(node),
			})
			pod++
		}
		s.EndpointSlices = append(s.EndpointSlices, slice)
		s.Events = append(s.Events,
			Event("Deployment", ns, name, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled up replica set "+rs.Name+" to "+fmt.Sprint(replicas), 2*time.Hour, 1),
			Event("Pod", ns, name+"-5d8f7c-00000", corev1.EventTypeNormal, "Pulled", "Container image already present on machine", time.Hour, 1))
	}
	return s
}

// realisticPod fills in what a real API server returns for a pod, so that
// decoding and memory figures in benchmarks are close to a real cluster's.
func realisticPod(p *corev1.Pod, now metav1.Time, i int) {
	p.ResourceVersion = fmt.Sprint(100000 + i)
	p.CreationTimestamp = metav1.NewTime(now.Add(-3 * time.Hour))
	p.GenerateName = p.Name[:len(p.Name)-5]
	p.Annotations = map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-05-19T08:00:00Z"}
	p.ManagedFields = []metav1.ManagedFieldsEntry{{
		Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1",
		FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:generateName":{},"f:labels":{".":{},"f:app":{},"f:pod-template-hash":{},"f:tier":{}},"f:ownerReferences":{".":{},"k:{\"uid\":\"x\"}":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:image":{},"f:name":{},"f:ports":{},"f:resources":{}}}}}`)},
	}}
	c := &p.Spec.Containers[0]
	c.Image = "myregistry.azurecr.io/team/app:1.42.7"
	c.Env = []corev1.EnvVar{{Name: "LOG_LEVEL", Value: "info"}, {Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Value: "http://otel-collector.observability:4317"}}
	c.Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}, PeriodSeconds: 10}
	c.VolumeMounts = []corev1.VolumeMount{{Name: "kube-api-access-x", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}}
	p.Spec.Volumes = []corev1.Volume{{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}}}
	p.Spec.ServiceAccountName = "default"
	p.Spec.Tolerations = []corev1.Toleration{
		{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
		{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
	}
	p.Status.PodIP = fmt.Sprintf("10.%d.%d.%d", 244+i/65536%8, i/256%256, i%256)
	p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
	p.Status.HostIP = "10.224.0.4"
	p.Status.QOSClass = corev1.PodQOSBurstable
	p.Status.StartTime = &p.CreationTimestamp
	cs := &p.Status.ContainerStatuses[0]
	cs.Image, cs.ImageID = c.Image, "myregistry.azurecr.io/team/app@sha256:3b1f0a9c2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
	cs.ContainerID = fmt.Sprintf("containerd://%064x", i)
	cs.Started = ptr.To(true)
	cs.State.Running.StartedAt = p.CreationTimestamp
}
