package exporter

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/kdiag/kdiag/pkg/nodehealth"
)

// eventScheme is the scheme the recorder uses to build references.
func eventScheme() *runtime.Scheme { return scheme.Scheme }

// countingSink counts the events the broadcaster writes.
type countingSink struct {
	typedcorev1.EventSinkImpl
	e *Exporter
}

func (s *countingSink) Create(ev *corev1.Event) (*corev1.Event, error) {
	out, err := s.EventSinkImpl.Create(ev)
	s.record(err)
	return out, err
}

func (s *countingSink) Update(ev *corev1.Event) (*corev1.Event, error) {
	out, err := s.EventSinkImpl.Update(ev)
	s.record(err)
	return out, err
}

func (s *countingSink) Patch(ev *corev1.Event, data []byte) (*corev1.Event, error) {
	out, err := s.EventSinkImpl.Patch(ev, data)
	s.record(err)
	return out, err
}

func (s *countingSink) record(err error) {
	if m := s.e.opts.Metrics; m != nil {
		res := "ok"
		if err != nil {
			res = "error"
		}
		m.APIWrites.WithLabelValues("event", res).Inc()
	}
}

// OOMMessage describes an OOM kill for an Event on the victim's pod: the
// container, its memory limit and its usage at the kill.
func OOMMessage(pod *corev1.Pod, k *nodehealth.OOMKill) string {
	c := containerOf(pod, k.ContainerID)
	usage := resource.NewQuantity(k.UsageBytes(), resource.BinarySI).String()
	name, limit := "unknown", "unknown"
	if c != nil {
		name = c.Name
		limit = "no memory limit"
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
			limit = "memory limit " + q.String()
		}
	}
	return fmt.Sprintf("Container %s was OOM-killed: process %s (pid %d) used %s of its %s (constraint %s)",
		name, k.Task, k.PID, usage, limit, orUnknown(k.Constraint))
}

// containerOf finds the container whose ID ends the memory cgroup path;
// when the ID is unknown, a pod with a single container has no ambiguity.
func containerOf(pod *corev1.Pod, id string) *corev1.Container {
	name := ""
	if id != "" {
		for _, st := range append(append([]corev1.ContainerStatus{}, pod.Status.ContainerStatuses...), pod.Status.InitContainerStatuses...) {
			if strings.HasSuffix(st.ContainerID, "://"+id) {
				name = st.Name
			}
		}
	}
	if name == "" && len(pod.Spec.Containers) == 1 {
		name = pod.Spec.Containers[0].Name
	}
	for _, list := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
