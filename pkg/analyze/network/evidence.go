package network

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
)

// podNames lists pod names, capped.
func podNames(ps []*corev1.Pod) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return evidence.Join(names)
}

// owners names the distinct workloads that own the pods, e.g.
// "Deployment shop/order-service".
func owners(ix *cluster.Index, ps []*corev1.Pod) string {
	seen := map[string]bool{}
	var out []string
	for _, p := range ps {
		w := ix.OwnerOf(p)
		if w.Kind == "Pod" {
			continue
		}
		s := fmt.Sprintf("%s %s/%s", w.Kind, p.Namespace, w.Name)
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return evidence.JoinN(out, 3)
}

// podsWithOwners renders "a, b (Deployment shop/x)".
func podsWithOwners(ix *cluster.Index, ps []*corev1.Pod) string {
	s := podNames(ps)
	if o := owners(ix, ps); o != "" {
		s += " (" + o + ")"
	}
	return s
}

// selectorString renders a Service selector as kubectl -l takes it.
func selectorString(sel map[string]string) string {
	return labels.SelectorFromSet(sel).String()
}

// protocol returns the effective protocol: empty means TCP, the API default.
func protocol(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// containerPortString renders "3000/TCP named http".
func containerPortString(cp corev1.ContainerPort) string {
	s := fmt.Sprintf("%d/%s", cp.ContainerPort, protocol(cp.Protocol))
	if cp.Name != "" {
		s += " named " + cp.Name
	}
	return s
}

// servicePortString renders the fields of spec.ports[i] that matter, e.g.
// "spec.ports[0]: name=http port=80/TCP targetPort=8080".
func servicePortString(i int, sp corev1.ServicePort) string {
	s := fmt.Sprintf("spec.ports[%d]:", i)
	if sp.Name != "" {
		s += " name=" + sp.Name
	}
	s += fmt.Sprintf(" port=%d/%s targetPort=%s", sp.Port, protocol(sp.Protocol), targetString(sp))
	if sp.NodePort != 0 {
		s += fmt.Sprintf(" nodePort=%d", sp.NodePort)
	}
	return s
}
