package network

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// verdict is how one pod answers one Service port.
type verdict int

const (
	// resolved: the pod declares the target (number, or name with the
	// Service port's protocol).
	resolved verdict = iota
	// undeclared: numeric target, and some container of the pod declares no
	// ports at all. containerPort is informational in Kubernetes, so that
	// container may well listen on the target; kdiag cannot tell.
	undeclared
	// wrongProtocol: the pod declares the target number or name, but only
	// with another protocol.
	wrongProtocol
	// missing: no container declares the target, and every container
	// declares some port (so we know what they expose).
	missing
)

// portTarget is the effective targetPort of a Service port: a name, or a
// number (an unset targetPort means the port itself, as the API defaults).
type portTarget struct {
	name   string
	number int32
}

func targetOf(sp corev1.ServicePort) portTarget {
	if sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "" {
		return portTarget{name: sp.TargetPort.StrVal}
	}
	if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal != 0 {
		return portTarget{number: sp.TargetPort.IntVal}
	}
	return portTarget{number: sp.Port}
}

func (t portTarget) String() string {
	if t.name != "" {
		return t.name
	}
	return strconv.Itoa(int(t.number))
}

// jsonValue is the targetPort as the API server stores it, for JSON patch
// "test" operations.
func (t portTarget) jsonValue() any {
	if t.name != "" {
		return t.name
	}
	return t.number
}

func targetString(sp corev1.ServicePort) string { return targetOf(sp).String() }

// servingContainers returns the containers whose ports a Service can target:
// the regular containers and the sidecars (init containers with
// restartPolicy Always), as the EndpointSlice controller's FindPort does.
func servingContainers(p *corev1.Pod) []*corev1.Container {
	var out []*corev1.Container
	for i := range p.Spec.Containers {
		out = append(out, &p.Spec.Containers[i])
	}
	for i := range p.Spec.InitContainers {
		c := &p.Spec.InitContainers[i]
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			out = append(out, c)
		}
	}
	return out
}

// declaredPorts lists every port the pod's serving containers declare.
func declaredPorts(p *corev1.Pod) []corev1.ContainerPort {
	var out []corev1.ContainerPort
	for _, c := range servingContainers(p) {
		out = append(out, c.Ports...)
	}
	return out
}

// classify says how the pod answers the Service port. It follows
// k8s.io/endpointslice FindPort (a named target must match name AND
// protocol; a number is used as is) and adds what FindPort does not check:
// whether any container declares the number. It is hand-written because
// FindPort only returns an error, not which ports the pod does declare.
// For wrongProtocol it also returns the ports that matched on number or name.
func classify(p *corev1.Pod, sp corev1.ServicePort) (verdict, []corev1.ContainerPort) {
	t := targetOf(sp)
	proto := protocol(sp.Protocol)
	var other []corev1.ContainerPort
	someUndeclared := false
	for _, c := range servingContainers(p) {
		if len(c.Ports) == 0 {
			someUndeclared = true
		}
		for _, cp := range c.Ports {
			hit := (t.name != "" && cp.Name == t.name) || (t.name == "" && cp.ContainerPort == t.number)
			if !hit {
				continue
			}
			if protocol(cp.Protocol) == proto {
				return resolved, nil
			}
			other = append(other, cp)
		}
	}
	switch {
	case len(other) > 0:
		return wrongProtocol, other
	case t.name == "" && someUndeclared:
		return undeclared, nil
	default:
		return missing, nil
	}
}

// portVerdicts groups the selected pods by how they answer one Service port.
type portVerdicts struct {
	byVerdict map[verdict][]*corev1.Pod
	// otherProto collects, per wrongProtocol pod, the ports that matched
	// on number or name.
	otherProto map[*corev1.Pod][]corev1.ContainerPort
}

func judge(pods []*corev1.Pod, sp corev1.ServicePort) portVerdicts {
	pv := portVerdicts{byVerdict: map[verdict][]*corev1.Pod{}, otherProto: map[*corev1.Pod][]corev1.ContainerPort{}}
	for _, p := range pods {
		v, other := classify(p, sp)
		pv.byVerdict[v] = append(pv.byVerdict[v], p)
		if v == wrongProtocol {
			pv.otherProto[p] = other
		}
	}
	return pv
}

// ports runs the targetPort and protocol checks on spec.ports[i].
func (a *analysis) ports(svc *corev1.Service, i int, pods []*corev1.Pod) []findings.Finding {
	sp := svc.Spec.Ports[i]
	pv := judge(pods, sp)
	var out []findings.Finding
	if len(pv.byVerdict[missing]) > 0 {
		out = append(out, a.targetPortMismatch(svc, i, pods, pv))
	}
	if len(pv.byVerdict[wrongProtocol]) > 0 {
		out = append(out, a.protocolMismatch(svc, i, pods, pv))
	}
	return out
}

// portLabel names the Service port in titles when the Service has several.
func portLabel(svc *corev1.Service, sp corev1.ServicePort) string {
	if len(svc.Spec.Ports) < 2 {
		return ""
	}
	if sp.Name != "" {
		return " port " + sp.Name
	}
	return fmt.Sprintf(" port %d", sp.Port)
}

// ofPods renders "its 2 pods" or "1 of its 3 pods".
func ofPods(n, total int) string {
	if n == total {
		if n == 1 {
			return "its pod"
		}
		return fmt.Sprintf("its %d pods", n)
	}
	return fmt.Sprintf("%d of its %d pods", n, total)
}

// portGroups groups pods by the ports they declare, for evidence:
// "pods a, b (Deployment shop/x) declare containerPorts 3000/TCP named http".
func (a *analysis) portGroups(pods []*corev1.Pod) []string {
	type group struct {
		ports string
		pods  []*corev1.Pod
	}
	var groups []*group
	byKey := map[string]*group{}
	for _, p := range pods {
		var ps []string
		for _, c := range servingContainers(p) {
			for _, cp := range c.Ports {
				ps = append(ps, containerPortString(cp)+" (container "+c.Name+")")
			}
		}
		sort.Strings(ps)
		key := strings.Join(ps, ", ")
		g := byKey[key]
		if g == nil {
			g = &group{ports: key}
			byKey[key] = g
			groups = append(groups, g)
		}
		g.pods = append(g.pods, p)
	}
	var out []string
	for i, g := range groups {
		if i == 3 {
			out = append(out, fmt.Sprintf("... and %d more groups of pods with other ports", len(groups)-3))
			break
		}
		n := len(g.pods)
		out = append(out, fmt.Sprintf("%s %s %s containerPorts %s", evidence.Word(n, "pod", "pods"), podsWithOwners(a.ix, g.pods), evidence.Word(n, "declares", "declare"), g.ports))
	}
	return out
}

// exposedSummary renders the distinct ports the pods declare, for titles.
func exposedSummary(pods []*corev1.Pod) string {
	seen := map[string]bool{}
	var ps []string
	for _, p := range pods {
		for _, cp := range declaredPorts(p) {
			s := containerPortString(cp)
			if !seen[s] {
				seen[s] = true
				ps = append(ps, s)
			}
		}
	}
	sort.Strings(ps)
	return evidence.JoinN(ps, 3)
}

func (a *analysis) targetPortMismatch(svc *corev1.Service, i int, pods []*corev1.Pod, pv portVerdicts) findings.Finding {
	sp := svc.Spec.Ports[i]
	t := targetOf(sp)
	bad := pv.byVerdict[missing]
	good, unknown, wrong := pv.byVerdict[resolved], pv.byVerdict[undeclared], pv.byVerdict[wrongProtocol]
	sev := findings.Critical
	if len(good) > 0 || len(unknown) > 0 {
		sev = findings.Warning // some pods may still serve
	}
	they := "they expose"
	if len(bad) == 1 {
		they = "it exposes"
	}
	title := fmt.Sprintf("Service %s/%s%s targetPort %s matches no containerPort of %s (%s %s)",
		svc.Namespace, svc.Name, portLabel(svc, sp), t, ofPods(len(bad), len(pods)), they, exposedSummary(bad))

	ev := []string{servicePortString(i, sp)}
	if t.name != "" {
		ev = append(ev, fmt.Sprintf("no container of %s defines a port named %q with protocol %s",
			ofPods(len(bad), len(pods)), t.name, protocol(sp.Protocol)))
	} else {
		ev = append(ev, fmt.Sprintf("no container of %s declares containerPort %d", ofPods(len(bad), len(pods)), t.number))
	}
	ev = append(ev, a.portGroups(bad)...)
	if len(good) > 0 {
		ev = append(ev, fmt.Sprintf("%s %s declare %s: %s", evidence.Plural(len(good), "pod"), evidence.Word(len(good), "does", "do"), t, podsWithOwners(a.ix, good)))
	}
	if len(unknown) > 0 {
		ev = append(ev, fmt.Sprintf("%s %s a container that declares no ports, so what it listens on is unknown: %s",
			evidence.Plural(len(unknown), "pod"), evidence.Word(len(unknown), "has", "have"), podNames(unknown)))
	}
	if len(wrong) > 0 {
		ev = append(ev, fmt.Sprintf("%s %s %s with another protocol (see %s): %s",
			evidence.Plural(len(wrong), "pod"), evidence.Word(len(wrong), "declares", "declare"), t, idProtocolMismatch, podNames(wrong)))
	}
	ev = append(ev, a.sliceEvidence(svc, sp)...)

	var expl string
	if t.name != "" {
		expl = fmt.Sprintf("A named targetPort is looked up by name and protocol in each pod's containerPorts. No container defines %q, so the EndpointSlice controller publishes these pods without port %s and kube-proxy has no backend for it: connections fail. This usually follows a rename of the container port or a Service copied from another app.",
			t.name, portName(sp))
	} else {
		expl = fmt.Sprintf("kube-proxy forwards traffic for port %d to port %d on each pod, but the containers declare other ports, so nothing listens there and connections are refused (the classic \"connection refused\" between two apps). This usually follows a change of the app's listen port or a Service copied from another app.",
			sp.Port, t.number)
	}

	var rem []findings.Remediation
	if len(good) == 0 && len(unknown) == 0 && len(wrong) == 0 {
		if fix, ok := targetPortFix(svc, i, bad); ok {
			rem = append(rem, fix)
		}
	}
	rem = append(rem, a.portInspections(svc)...)
	return findings.Finding{
		ID: idTargetPortMismatch, Severity: sev, Area: findings.AreaNetwork, Object: objectRef(svc),
		Title: title, Evidence: ev, Explanation: expl, Remediation: rem,
	}
}

func portName(sp corev1.ServicePort) string {
	if sp.Name != "" {
		return sp.Name
	}
	return strconv.Itoa(int(sp.Port))
}

// targetPortFix builds the JSON patch that points spec.ports[i].targetPort
// at the one port every mismatched pod declares with the right protocol.
// It keeps the style: a named target becomes the container port's name
// when it has one. With several candidates it prefers the one named like
// the Service port; otherwise it offers no patch rather than guess.
func targetPortFix(svc *corev1.Service, i int, pods []*corev1.Pod) (findings.Remediation, bool) {
	sp := svc.Spec.Ports[i]
	proto := protocol(sp.Protocol)
	// candidates: ports declared by every pod with the Service's protocol.
	var common []corev1.ContainerPort
	for n, p := range pods {
		var mine []corev1.ContainerPort
		for _, cp := range declaredPorts(p) {
			if protocol(cp.Protocol) == proto {
				mine = append(mine, cp)
			}
		}
		if n == 0 {
			common = mine
			continue
		}
		var keep []corev1.ContainerPort
		for _, c := range common {
			for _, m := range mine {
				if c.ContainerPort == m.ContainerPort && c.Name == m.Name {
					keep = append(keep, c)
					break
				}
			}
		}
		common = keep
	}
	common = uniquePorts(common)
	var pick *corev1.ContainerPort
	switch {
	case len(common) == 1:
		pick = &common[0]
	case len(common) > 1 && sp.Name != "":
		for k := range common {
			if common[k].Name == sp.Name {
				pick = &common[k]
			}
		}
	}
	if pick == nil {
		return findings.Remediation{}, false
	}
	t := targetOf(sp)
	var value any = pick.ContainerPort
	show := strconv.Itoa(int(pick.ContainerPort))
	if t.name != "" && pick.Name != "" {
		value, show = pick.Name, pick.Name
	}
	base := fmt.Sprintf("/spec/ports/%d", i)
	patch := []map[string]any{
		{"op": "test", "path": base + "/port", "value": sp.Port},
		{"op": "test", "path": base + "/targetPort", "value": t.jsonValue()},
		{"op": "replace", "path": base + "/targetPort", "value": value},
	}
	desc := fmt.Sprintf("Point targetPort of port %s at %s, the port the pods declare (the test operations make the patch fail if the Service changed meanwhile)",
		portName(sp), show)
	return findings.MustPatch(desc, serviceGVR(), "service", svc.Namespace, svc.Name, types.JSONPatchType, patch), true
}

func uniquePorts(ps []corev1.ContainerPort) []corev1.ContainerPort {
	seen := map[string]bool{}
	var out []corev1.ContainerPort
	for _, p := range ps {
		k := containerPortString(p)
		if !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	return out
}

// sliceEvidence says what the Service's EndpointSlices publish for the
// port: the resolved target port, or that the endpoints carry no such port.
func (a *analysis) sliceEvidence(svc *corev1.Service, sp corev1.ServicePort) []string {
	if !evidence.ReadIn(a.s, cluster.ResEndpointSlices, svc.Namespace) {
		return nil
	}
	var out []string
	for _, es := range a.ix.EndpointSlices(svc.Namespace, svc.Name) {
		if len(es.Endpoints) == 0 {
			continue
		}
		var found *int32
		for _, p := range es.Ports {
			if p.Name != nil && *p.Name == sp.Name {
				found = p.Port
				break
			}
		}
		if found == nil {
			out = append(out, fmt.Sprintf("EndpointSlice %s: its %s carry no port %q", es.Name, evidence.Plural(len(es.Endpoints), "endpoint"), sp.Name))
		} else {
			out = append(out, fmt.Sprintf("EndpointSlice %s: port %q -> %d on %s", es.Name, sp.Name, *found, evidence.Plural(len(es.Endpoints), "endpoint")))
		}
		if len(out) == 3 {
			break
		}
	}
	return out
}

// portInspections are the read-only commands that show both sides of a
// Service port.
func (a *analysis) portInspections(svc *corev1.Service) []findings.Remediation {
	sel := selectorString(svc.Spec.Selector)
	return []findings.Remediation{
		findings.Inspect("Show the ports the selected pods declare",
			fmt.Sprintf("kubectl get pods -n %s -l %s -o custom-columns='POD:.metadata.name,PORTS:.spec.containers[*].ports[*].containerPort,NAMES:.spec.containers[*].ports[*].name'", svc.Namespace, sel)),
		findings.Inspect("Show the Service ports and targetPorts",
			fmt.Sprintf("kubectl get service %s -n %s -o jsonpath='{range .spec.ports[*]}{.name} {.port}/{.protocol} -> {.targetPort}{\"\\n\"}{end}'", svc.Name, svc.Namespace)),
		findings.Inspect("Show the endpoints and ports kube-proxy uses",
			fmt.Sprintf("kubectl get endpointslices -n %s -l kubernetes.io/service-name=%s -o wide", svc.Namespace, svc.Name)),
	}
}

func (a *analysis) protocolMismatch(svc *corev1.Service, i int, pods []*corev1.Pod, pv portVerdicts) findings.Finding {
	sp := svc.Spec.Ports[i]
	t := targetOf(sp)
	wrong := pv.byVerdict[wrongProtocol]
	good := pv.byVerdict[resolved]
	proto := protocol(sp.Protocol)

	declared := map[string]bool{}
	var protos []string
	for _, p := range wrong {
		for _, cp := range pv.otherProto[p] {
			s := string(protocol(cp.Protocol))
			if !declared[s] {
				declared[s] = true
				protos = append(protos, s)
			}
		}
	}
	sort.Strings(protos)

	sev := findings.Warning
	if t.name != "" && len(good) == 0 {
		sev = findings.Critical // named lookups fail: endpoints get no port at all
	}
	title := fmt.Sprintf("Service %s/%s%s uses %s but %s %s targetPort %s as %s",
		svc.Namespace, svc.Name, portLabel(svc, sp), proto, ofPods(len(wrong), len(pods)), evidence.Word(len(wrong), "declares", "declare"), t, strings.Join(protos, "/"))
	ev := []string{servicePortString(i, sp)}
	for _, p := range capPods(wrong, evidence.MaxListed) {
		var ps []string
		for _, cp := range pv.otherProto[p] {
			ps = append(ps, containerPortString(cp))
		}
		ev = append(ev, fmt.Sprintf("pod %s declares %s, not %s", p.Name, strings.Join(ps, ", "), proto))
	}
	if len(wrong) > evidence.MaxListed {
		ev = append(ev, fmt.Sprintf("... and %d more pods alike", len(wrong)-evidence.MaxListed))
	}
	if o := owners(a.ix, wrong); o != "" {
		ev = append(ev, "owned by "+o)
	}
	if len(good) > 0 {
		ev = append(ev, fmt.Sprintf("%s %s %s with %s: %s", evidence.Plural(len(good), "pod"), evidence.Word(len(good), "declares", "declare"), t, proto, podNames(good)))
	}
	var expl string
	if t.name != "" {
		expl = fmt.Sprintf("The EndpointSlice controller resolves a named targetPort by name AND protocol. The pods define %q only for %s, so for %s the lookup fails and the endpoints get no port %s: kube-proxy has no backend and %s traffic fails.",
			t.name, strings.Join(protos, "/"), proto, portName(sp), proto)
	} else {
		expl = fmt.Sprintf("kube-proxy forwards %s traffic to port %d, but the containers declare that port for %s only. Unless the process also listens on %s (declared ports are informational), packets are dropped or refused. A common case is a DNS or syslog Service declared UDP in front of a TCP-only container, or the reverse.",
			proto, t.number, strings.Join(protos, "/"), proto)
	}
	var rem []findings.Remediation
	if t.name != "" && len(good) == 0 && len(pv.byVerdict[missing]) == 0 && len(protos) == 1 {
		base := fmt.Sprintf("/spec/ports/%d", i)
		patch := []map[string]any{
			{"op": "test", "path": base + "/port", "value": sp.Port},
			{"op": "test", "path": base + "/protocol", "value": string(proto)},
			{"op": "replace", "path": base + "/protocol", "value": protos[0]},
		}
		rem = append(rem, findings.MustPatch(
			fmt.Sprintf("Make port %s use %s, the protocol the containers declare for %q (if the app really serves %s, fix the containerPort instead)", portName(sp), protos[0], t.name, proto),
			serviceGVR(), "service", svc.Namespace, svc.Name, types.JSONPatchType, patch))
	}
	rem = append(rem, a.portInspections(svc)...)
	return findings.Finding{
		ID: idProtocolMismatch, Severity: sev, Area: findings.AreaNetwork, Object: objectRef(svc),
		Title: title, Evidence: ev, Explanation: expl, Remediation: rem,
	}
}

func capPods(ps []*corev1.Pod, n int) []*corev1.Pod {
	if len(ps) > n {
		return ps[:n]
	}
	return ps
}
