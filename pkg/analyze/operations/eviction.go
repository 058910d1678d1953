package operations

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
	"github.com/kdiag/kdiag/pkg/pdb"
)

// maxTitleMessage caps the event message a title quotes; the evidence
// quotes it in full (up to evidence.MaxMessage).
const maxTitleMessage = 120

// drainReasons are event reasons that tools emit for a failed drain or
// eviction (lower case): cluster-autoscaler (ScaleDownFailed), Karpenter and
// node-pool upgraders (FailedDraining), AKS upgrades (Drain), and the
// spellings other drainers use.
var drainReasons = map[string]bool{
	"scaledownfailed": true, "faileddraining": true, "drainfailed": true, "faileddrain": true,
	"nodedrainfailed": true, "failedtodrain": true, "drainerror": true, "drain": true,
	"evictionfailed": true, "failedeviction": true, "failedtoevict": true, "failedevict": true,
}

// excludedReasons are Warning events that mention evictions but are not
// failed drains: the kubelet's node-pressure evictions (the node area
// reports them) and the disruption controller's own events about a budget
// (pdb-blocks-disruption and pdb-no-matching-pods quote them).
var excludedReasons = map[string]bool{
	"evicted": true, "evictionthresholdmet": true, "preempting": true,
	"nopods": true, "unmanagedpods": true, "calculateexpectedpodcountfailed": true,
}

// drainMarkers are message fragments (lower case) of failed evictions: the
// eviction API's own refusal, kubectl drain's retry line, and the wording
// of cluster-autoscaler, AKS and Karpenter.
var drainMarkers = []string{
	"disruption budget", "cannot evict", "failed to evict", "error when evicting", "failed to drain",
	"drain failed", "draining failed", "eviction failed", "failed eviction", "evictions failed",
	"more than one poddisruptionbudget",
}

// isDrainFailure reports whether a Warning event records a failed drain or
// eviction. "Too many requests" alone is not enough (registries answer
// image pulls with it); it counts only next to "evict".
func isDrainFailure(e *corev1.Event) bool {
	if e.Type != corev1.EventTypeWarning {
		return false
	}
	reason := strings.ToLower(e.Reason)
	if excludedReasons[reason] {
		return false
	}
	if drainReasons[reason] {
		return true
	}
	msg := strings.ToLower(e.Message)
	for _, m := range drainMarkers {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return strings.Contains(msg, "evict") &&
		(strings.Contains(msg, "too many requests") || strings.Contains(msg, "toomanyrequests") || strings.Contains(msg, "429"))
}

// eventGroup is the failed-drain events about one object.
type eventGroup struct {
	kind, ns, name string
	events         []*corev1.Event
	count          int32
	first, last    metav1.Time
	reasons        []string
}

// drainEventGroups groups the snapshot's failed-drain events by the object
// they are about, sorted by kind, namespace and name.
func (a *analysis) drainEventGroups() []*eventGroup {
	if !a.grouped {
		a.groups, a.grouped = a.groupDrainEvents(), true
	}
	return a.groups
}

func (a *analysis) groupDrainEvents() []*eventGroup {
	groups := map[string]*eventGroup{}
	var keys []string
	for i := range a.s.Events {
		e := &a.s.Events[i]
		if !isDrainFailure(e) {
			continue
		}
		io := e.InvolvedObject
		ns := io.Namespace
		if io.Kind == "Node" {
			ns = "" // node events are filed in "default" or nowhere
		}
		k := io.Kind + "\x00" + ns + "\x00" + io.Name
		g := groups[k]
		if g == nil {
			g = &eventGroup{kind: io.Kind, ns: ns, name: io.Name}
			groups[k] = g
			keys = append(keys, k)
		}
		g.events = append(g.events, e)
		g.count += cluster.EventCount(e)
		if t := cluster.EventTime(e); g.last.IsZero() || t.After(g.last.Time) {
			g.last = t
		}
		if t := cluster.EventFirstSeen(e); !t.IsZero() && (g.first.IsZero() || t.Before(&g.first)) {
			g.first = t
		}
		if !slices.Contains(g.reasons, e.Reason) {
			g.reasons = append(g.reasons, e.Reason)
		}
	}
	sort.Strings(keys)
	out := make([]*eventGroup, len(keys))
	for i, k := range keys {
		g := groups[k]
		sort.SliceStable(g.events, func(i, j int) bool {
			return cluster.EventTime(g.events[i]).Time.Before(cluster.EventTime(g.events[j]).Time)
		})
		sort.Strings(g.reasons)
		out[i] = g
	}
	return out
}

// nodeDrainEvents returns the failed-drain events about a node, or nil.
func (a *analysis) nodeDrainEvents(node string) *eventGroup {
	for _, g := range a.drainEventGroups() {
		if g.kind == "Node" && g.name == node {
			return g
		}
	}
	return nil
}

// evictionFailed reports each object that failed-drain events are about,
// and links them to the budgets that caused them where the messages or the
// pods allow.
func (a *analysis) evictionFailed() []findings.Finding {
	if !a.s.Has(cluster.ResEvents) {
		return nil
	}
	var out []findings.Finding
	for _, g := range a.drainEventGroups() {
		out = append(out, a.evictionFailedOne(g))
	}
	return out
}

var (
	// "The disruption budget web needs 2 healthy pods" (eviction API),
	// "blocked by pdb metrics-server-pdb" (AKS), pdb "ns/name" (Karpenter).
	rePDBName = regexp.MustCompile(`(?i)(?:the disruption budget|blocked by pdb|pdb)\s+"?(?:([a-z0-9][-a-z0-9]*)/)?([a-z0-9](?:[-a-z0-9.]*[a-z0-9])?)"?`)
	// namespace/name pairs: "pod kube-system/metrics-server-abc".
	reNSName = regexp.MustCompile(`([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)/([a-z0-9](?:[-a-z0-9.]*[a-z0-9])?)`)
	// kubectl drain: evicting pods/"nginx-abc" -n "shop".
	reKubectlPod = regexp.MustCompile(`pods/"([^"]+)" -n "([^"]+)"`)
	// a bare pod name after "pod": "evicting pod nginx-abc".
	reBarePod = regexp.MustCompile(`(?i)\bpods?\s+"?([a-z0-9](?:[-a-z0-9.]*[a-z0-9])?)"?`)
)

// linkedPods finds the pods an event group is about: the involved pod, and
// pods named in the messages (namespace/name, kubectl's pods/"x" -n "y",
// or a bare name among the pods of the involved node).
func (a *analysis) linkedPods(g *eventGroup) []*corev1.Pod {
	var out []*corev1.Pod
	seen := map[*corev1.Pod]bool{}
	add := func(p *corev1.Pod) {
		if p != nil && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	if g.kind == "Pod" {
		add(a.findPod(g.ns, g.name))
	}
	for _, e := range g.events {
		for _, m := range reKubectlPod.FindAllStringSubmatch(e.Message, -1) {
			add(a.findPod(m[2], m[1]))
		}
		for _, m := range reNSName.FindAllStringSubmatch(e.Message, -1) {
			add(a.findPod(m[1], m[2]))
		}
		if g.kind == "Node" {
			for _, m := range reBarePod.FindAllStringSubmatch(e.Message, -1) {
				for _, p := range a.ix.PodsOnNode(g.name) {
					if p.Name == m[1] {
						add(p)
					}
				}
			}
		} else if g.ns != "" {
			for _, m := range reBarePod.FindAllStringSubmatch(e.Message, -1) {
				add(a.findPod(g.ns, m[1]))
			}
		}
	}
	return out
}

func (a *analysis) findPod(ns, name string) *corev1.Pod {
	if a.podByName == nil {
		a.podByName = make(map[string]*corev1.Pod, len(a.s.Pods))
		for i := range a.s.Pods {
			a.podByName[a.s.Pods[i].Namespace+"/"+a.s.Pods[i].Name] = &a.s.Pods[i]
		}
	}
	return a.podByName[ns+"/"+name]
}

func (a *analysis) findPDB(ns, name string) *policyv1.PodDisruptionBudget {
	for _, p := range a.ix.PDBsInNamespace(ns) {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// uniquePDB returns the only budget with this name in any namespace, or nil.
func (a *analysis) uniquePDB(name string) *policyv1.PodDisruptionBudget {
	var found *policyv1.PodDisruptionBudget
	for _, p := range a.pdbs {
		if p.Name == name {
			if found != nil {
				return nil
			}
			found = p
		}
	}
	return found
}

// linkedPDBs finds the budgets behind an event group: named in a message,
// or covering a linked pod.
func (a *analysis) linkedPDBs(g *eventGroup, pods []*corev1.Pod) []*policyv1.PodDisruptionBudget {
	var out []*policyv1.PodDisruptionBudget
	seen := map[*policyv1.PodDisruptionBudget]bool{}
	add := func(p *policyv1.PodDisruptionBudget) {
		if p != nil && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	nsCandidates := []string{g.ns}
	for _, p := range pods {
		nsCandidates = append(nsCandidates, p.Namespace)
	}
	for _, e := range g.events {
		for _, m := range rePDBName.FindAllStringSubmatch(e.Message, -1) {
			if m[1] != "" {
				add(a.findPDB(m[1], m[2]))
				continue
			}
			found := false
			for _, ns := range nsCandidates {
				if p := a.findPDB(ns, m[2]); ns != "" && p != nil {
					add(p)
					found = true
				}
			}
			if !found {
				// A node's event names no namespace: accept a budget
				// name that is unique in the cluster.
				add(a.uniquePDB(m[2]))
			}
		}
	}
	for _, p := range pods {
		for _, b := range a.cov.PDBsOf(p) {
			add(b)
		}
	}
	return out
}

func (a *analysis) evictionFailedOne(g *eventGroup) findings.Finding {
	latest := g.events[len(g.events)-1]
	pods := a.linkedPods(g)
	pdbs := a.linkedPDBs(g, pods)

	obj := findings.ObjectRef{Kind: g.kind, Namespace: g.ns, Name: g.name}
	subject := g.kind + " " + g.name
	if g.ns != "" {
		subject = g.kind + " " + ref(g.ns, g.name)
	}
	title := fmt.Sprintf("%s: %s of failed evictions or drains (%s), last %s", subject, evidence.Plural(int(g.count), "event"),
		strings.Join(g.reasons, ", "), evidence.Ago(a.now, g.last.Time))
	if len(pdbs) > 0 {
		title += "; blocked by PodDisruptionBudget " + ref(pdbs[0].Namespace, pdbs[0].Name)
		if len(pdbs) > 1 {
			title += fmt.Sprintf(" and %d more", len(pdbs)-1)
		}
	} else {
		title += ": " + evidence.ShortN(latest.Message, maxTitleMessage)
	}

	var ev []string
	span := fmt.Sprintf("%s in %s, last %s", evidence.Plural(int(g.count), "occurrence"), evidence.Plural(len(g.events), "event"), evidence.Ago(a.now, g.last.Time))
	if !g.first.IsZero() {
		span += ", first " + evidence.Ago(a.now, g.first.Time)
	}
	ev = append(ev, span)
	for i := len(g.events) - 1; i >= 0 && i >= len(g.events)-3; i-- {
		e := g.events[i]
		line := evidence.EventLine(a.now, e)
		if src := e.Source.Component; src != "" {
			line += " (from " + src + ")"
		} else if e.ReportingController != "" {
			line += " (from " + e.ReportingController + ")"
		}
		ev = append(ev, line)
	}
	if len(pods) > 0 {
		names := make([]string, len(pods))
		for i, p := range pods {
			names[i] = ref(p.Namespace, p.Name)
			if p.Spec.NodeName != "" {
				names[i] += " on " + p.Spec.NodeName
			}
		}
		ev = append(ev, "pods involved: "+evidence.Join(names))
	}
	for _, p := range pdbs {
		state := fmt.Sprintf("status.disruptionsAllowed=%d now", p.Status.DisruptionsAllowed)
		if blocksEvictions(p) {
			state += " (still blocking: see pdb-blocks-disruption)"
		} else {
			state += " (no longer blocking: retry the operation)"
		}
		ev = append(ev, fmt.Sprintf("PodDisruptionBudget %s: %s, %s", ref(p.Namespace, p.Name), pdb.SpecString(p), state))
	}
	if g.kind == "Node" && len(pdbs) == 0 {
		// Nothing in the messages names a pod: say what would block a drain
		// of this node now.
		var refused []string
		for _, p := range a.ix.PodsOnNode(g.name) {
			if isDaemonOrMirror(p) {
				continue
			}
			if v := pdb.Evict(p, a.cov.PDBsOf(p)); !v.Allowed {
				refused = append(refused, ref(p.Namespace, p.Name))
			}
		}
		if len(refused) > 0 {
			ev = append(ev, "pods on the node the eviction API would refuse now: "+evidence.Join(refused))
		}
	}

	rem := []findings.Remediation{a.eventsCommand(g)}
	rem = append(rem, showBudgets(pdbs, " (its pdb-blocks-disruption finding carries the dry-run-verified fixes)")...)
	if g.kind == "Node" {
		rem = append(rem, findings.Inspect("See what a drain of the node would fail to evict now (server-side dry run: nothing is cordoned or evicted)",
			fmt.Sprintf("kubectl drain %s --ignore-daemonsets --delete-emptydir-data --dry-run=server", g.name)))
	}
	return findings.Finding{
		ID: idEvictionFailed, Severity: findings.Warning, Area: findings.AreaOperations,
		Object:   obj,
		Title:    title,
		Evidence: ev,
		Explanation: "A drain, an autoscaler scale-down or a node-pool upgrade tried to evict pods and was refused. The usual cause is a " +
			"PodDisruptionBudget that allows no disruption (too few replicas, unready pods, maxUnavailable 0) or a pod covered by two " +
			"budgets; the operation retries until it times out and then reports failure, for example as the cluster's last operation status.",
		Remediation: rem,
	}
}

// eventsCommand lists the object's events.
func (a *analysis) eventsCommand(g *eventGroup) findings.Remediation {
	if g.ns == "" {
		return findings.Inspect("List the events about the "+strings.ToLower(g.kind),
			fmt.Sprintf("kubectl get events -A --field-selector involvedObject.kind=%s,involvedObject.name=%s --sort-by=.lastTimestamp", g.kind, g.name))
	}
	return findings.Inspect("List the events about the "+strings.ToLower(g.kind),
		fmt.Sprintf("kubectl get events -n %s --field-selector involvedObject.kind=%s,involvedObject.name=%s --sort-by=.lastTimestamp", g.ns, g.kind, g.name))
}
