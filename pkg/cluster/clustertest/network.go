package clustertest

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ServiceSelecting returns a ClusterIP Service created an hour before Now
// with the given selector and ports.
func ServiceSelecting(ns, name string, selector map[string]string, ports ...corev1.ServicePort) corev1.Service {
	return corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-svc-" + ns + "-" + name),
			CreationTimestamp: metav1.NewTime(Now().Add(-time.Hour))},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Selector: selector, Ports: ports},
	}
}

// SvcPort returns a Service port; proto "" means TCP.
func SvcPort(name string, port int32, target intstr.IntOrString, proto corev1.Protocol) corev1.ServicePort {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: proto}
}

// CPort returns a container port; proto "" means TCP.
func CPort(name string, port int32, proto corev1.Protocol) corev1.ContainerPort {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	return corev1.ContainerPort{Name: name, ContainerPort: port, Protocol: proto}
}

// SetPodIP gives the pod an IP, as the kubelet does once its sandbox runs.
func SetPodIP(p *corev1.Pod, ip string) {
	p.Status.PodIP = ip
	p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
}

// SetContainerWaiting makes the pod's first container wait with the given
// reason (e.g. CrashLoopBackOff) and restarts, and the pod not ready, as
// the kubelet reports it.
func SetContainerWaiting(p *corev1.Pod, reason, message string, restarts int32) {
	since := metav1.NewTime(Now().Add(-10 * time.Minute))
	for i := range p.Status.Conditions {
		c := &p.Status.Conditions[i]
		if c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
			c.Status = corev1.ConditionFalse
			c.Reason = "ContainersNotReady"
			c.Message = "containers with unready status: [" + p.Spec.Containers[0].Name + "]"
			c.LastTransitionTime = since
		}
	}
	if len(p.Status.ContainerStatuses) > 0 {
		cs := &p.Status.ContainerStatuses[0]
		cs.Ready = false
		cs.RestartCount = restarts
		cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
	}
}

// EndpointSliceFor returns the IPv4 EndpointSlice the EndpointSlice
// controller would write for the Service and pods: one endpoint per pod with
// an IP, ready as the pod's Ready condition says, and the ports resolved
// from the first pod (a named targetPort that no container defines yields
// no port, as in the controller).
func EndpointSliceFor(svc corev1.Service, pods ...corev1.Pod) discoveryv1.EndpointSlice {
	es := discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name + "-x7k2p",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, sp := range svc.Spec.Ports {
		var num int32
		switch {
		case sp.TargetPort.Type == intstr.String:
			if len(pods) > 0 {
				for _, c := range pods[0].Spec.Containers {
					for _, cp := range c.Ports {
						if cp.Name == sp.TargetPort.StrVal && cp.Protocol == sp.Protocol {
							num = cp.ContainerPort
						}
					}
				}
			}
			if num == 0 {
				continue
			}
		case sp.TargetPort.IntVal != 0:
			num = sp.TargetPort.IntVal
		default:
			num = sp.Port
		}
		name, proto := sp.Name, sp.Protocol
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: &name, Port: &num, Protocol: &proto})
	}
	for i := range pods {
		p := &pods[i]
		if p.Status.PodIP == "" {
			continue
		}
		ready := false
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		terminating := p.DeletionTimestamp != nil
		serving := ready
		node := p.Spec.NodeName
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptrTo(ready && !terminating), Serving: &serving, Terminating: &terminating},
			NodeName:   &node,
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
		})
	}
	return es
}

func ptrTo[T any](v T) *T { return &v }

// ConfigMapOf returns a ConfigMap with the given data.
func ConfigMapOf(ns, name string, data map[string]string) corev1.ConfigMap {
	return corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-cm-" + ns + "-" + name)}, Data: data}
}

// KubeadmCorefile is the Corefile kubeadm installs.
const KubeadmCorefile = `.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
`

// AKSCorefile is the Corefile AKS installs: it imports the *.override keys
// of the coredns-custom ConfigMap into the default server block and the
// *.server keys as extra server blocks.
const AKSCorefile = `.:53 {
    errors
    ready
    health {
      lameduck 5s
    }
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
      ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
    import custom/*.override
}
import custom/*.server
`

// CoreDNS returns the cluster DNS Deployment "coredns" in kube-system, as
// AKS and kubeadm label it (k8s-app=kube-dns), with replicas desired and
// ready of them ready, mounting the coredns ConfigMap at /etc/coredns and
// coredns-custom at /etc/coredns/custom, and the ReplicaSet it owns.
func CoreDNS(replicas, ready int32) (appsv1.Deployment, appsv1.ReplicaSet) {
	lbls := map[string]string{"k8s-app": "kube-dns"}
	d, rs := Deployment("kube-system", "coredns", replicas, lbls)
	d.Labels = map[string]string{"k8s-app": "kube-dns"}
	optional := true
	d.Spec.Template.Spec = corev1.PodSpec{
		Containers: []corev1.Container{{
			Name: "coredns", Image: "registry.k8s.io/coredns/coredns:v1.12.1",
			Args: []string{"-conf", "/etc/coredns/Corefile"},
			Ports: []corev1.ContainerPort{
				{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
				{Name: "metrics", ContainerPort: 9153, Protocol: corev1.ProtocolTCP},
			},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "config-volume", MountPath: "/etc/coredns", ReadOnly: true},
				{Name: "custom-config-volume", MountPath: "/etc/coredns/custom", ReadOnly: true},
			},
		}},
		Volumes: []corev1.Volume{
			{Name: "config-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"},
				Items:                []corev1.KeyToPath{{Key: "Corefile", Path: "Corefile"}}}}},
			{Name: "custom-config-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "coredns-custom"}, Optional: &optional}}},
		},
	}
	d.Status.ReadyReplicas, d.Status.AvailableReplicas = ready, ready
	d.Status.UnavailableReplicas = replicas - ready
	cond := corev1.ConditionTrue
	reason, msg := "MinimumReplicasAvailable", "Deployment has minimum availability."
	if ready == 0 {
		cond, reason, msg = corev1.ConditionFalse, "MinimumReplicasUnavailable", "Deployment does not have minimum availability."
	}
	d.Status.Conditions = []appsv1.DeploymentCondition{{
		Type: appsv1.DeploymentAvailable, Status: cond, Reason: reason, Message: msg,
		LastTransitionTime: metav1.NewTime(Now().Add(-15 * time.Minute)),
	}}
	return d, rs
}

// KubeDNSService returns the cluster DNS Service kube-system/kube-dns with
// the given ClusterIP, selecting k8s-app=kube-dns on port 53 UDP and TCP.
func KubeDNSService(clusterIP string) corev1.Service {
	svc := ServiceSelecting("kube-system", "kube-dns", map[string]string{"k8s-app": "kube-dns"},
		SvcPort("dns", 53, intstr.FromInt32(53), corev1.ProtocolUDP),
		SvcPort("dns-tcp", 53, intstr.FromInt32(53), corev1.ProtocolTCP),
		SvcPort("metrics", 9153, intstr.FromInt32(9153), corev1.ProtocolTCP))
	svc.Labels = map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
	svc.Spec.ClusterIP = clusterIP
	svc.Spec.ClusterIPs = []string{clusterIP}
	return svc
}
