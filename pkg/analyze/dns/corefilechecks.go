package dns

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kdiag/kdiag/pkg/analyze/internal/editdist"
	"github.com/kdiag/kdiag/pkg/analyze/internal/evidence"
	"github.com/kdiag/kdiag/pkg/analyze/internal/podready"
	"github.com/kdiag/kdiag/pkg/cluster"
	"github.com/kdiag/kdiag/pkg/findings"
)

// stockPlugins returns the directives of stock CoreDNS (plugin.cfg of
// CoreDNS 1.12), plus proxy and federation, which older releases had, and
// import. A Corefile naming anything else only loads in a custom build.
func stockPlugins() map[string]bool {
	out := map[string]bool{}
	for _, p := range strings.Fields(`root metadata geoip cancel tls quic grpc_server https https3 timeouts
		multisocket reload nsid bufsize bind debug trace ready health pprof prometheus errors log dnstap
		local dns64 any chaos loadbalance tsig cache rewrite acl header dnssec autopath minimal template
		transfer hosts route53 azure clouddns k8s_external kubernetes file auto secondary etcd loop forward
		grpc erratic whoami on sign view nomad proxy federation import`) {
		out[p] = true
	}
	return out
}

// corefileChecks parses the CoreDNS configuration and runs every check on
// it. Without a Corefile it looks at kube-dns's ConfigMap instead.
func (e *env) corefileChecks() []findings.Finding {
	if !e.dnsRead(cluster.ResConfigMaps) {
		return nil
	}
	cms := func(name string) *corev1.ConfigMap { return e.ix.ConfigMap(kubeSystem, name) }
	m := mountsOf(e.coreDNSPodSpec())
	main, ok := m.fileSource(m.confFile)
	if !ok || cms(main.configMap) == nil {
		main = source{configMap: "coredns", key: "Corefile"}
	}
	cm := cms(main.configMap)
	if cm == nil {
		return e.kubeDNSChecks()
	}
	text, ok := cm.Data[main.key]
	if !ok {
		return []findings.Finding{e.invalidFinding(main.configMap, []problem{{src: main,
			msg: fmt.Sprintf("the ConfigMap has no key %q, which CoreDNS reads as its Corefile (%s)", main.key, m.confFile)}})}
	}
	cfg := loadConfig(main, text, m, cms)
	cfg.invalid = append(cfg.invalid, semanticProblems(cfg)...)

	var out []findings.Finding
	out = append(out, e.invalidFindings(cfg)...)
	out = append(out, e.unknownPlugins(cfg)...)
	out = append(out, e.ignoredKeys(cfg, cms)...)
	routes := routesOf(cfg)
	if f, ok := e.upstreamsFinding(cfg, routes); ok {
		out = append(out, f)
	}
	out = append(out, e.notIPFindings(cfg, routes)...)
	out = append(out, e.shadowedFindings(cfg)...)
	out = append(out, e.stubFindings(cfg, routes)...)
	return out
}

// shadowedFindings reports forwards that never get a query, one finding
// per shadowed directive.
func (e *env) shadowedFindings(cfg *config) []findings.Finding {
	sh := shadowing(cfg)
	var out []findings.Finding
	for _, b := range cfg.blocks {
		for _, d := range b.directives {
			first, ok := sh[d.src.at(d.line)]
			if !ok {
				continue
			}
			line := func(x directive) string {
				return fmt.Sprintf("%s %s", x.name, strings.Join(x.args, " "))
			}
			out = append(out, findings.Finding{
				ID: idForwardShadowed, Severity: findings.Warning, Area: findings.AreaDNS, Object: configMapRef(d.src.configMap),
				Title: fmt.Sprintf("%s never uses %q (%s): %q at %s comes first in the same server block and takes its names",
					cfg.server, line(d), d.src.at(d.line), line(first), first.src.at(first.line)),
				Evidence: []string{
					fmt.Sprintf("server block %s", b.where()),
					fmt.Sprintf("%s: %s, the first forward for zone %s", first.src.at(first.line), line(first), forwardFrom(first)),
					fmt.Sprintf("%s: %s, later in the block, for zone %s: no query reaches it", d.src.at(d.line), line(d), forwardFrom(d)),
				},
				Explanation: "CoreDNS evaluates the forward directives of a server block in order, and the first whose zone matches a name answers it. " +
					"A later forward for the same or a child zone never gets a query, so the custom upstream silently does nothing (CoreDNS before 1.8 refused such a block outright). " +
					"On AKS a forward in a *.override lands after the default \"forward . /etc/resolv.conf\": to change the default upstream, set custom DNS servers on the VNet; to send one zone elsewhere, use a *.server block.",
				Remediation: []findings.Remediation{
					findings.Inspect("Show the ConfigMap with the unused forward", fmt.Sprintf("kubectl get configmap %s -n %s -o yaml", d.src.configMap, kubeSystem)),
					findings.Inspect("Show the Corefile's own forward", fmt.Sprintf("kubectl get configmap %s -n %s -o jsonpath='{.data.%s}' | grep -n forward", cfg.main.configMap, kubeSystem, jsonpathKey(cfg.main.key))),
				},
			})
		}
	}
	return out
}

// coreDNSPodSpec returns the pod template of the cluster DNS Deployment,
// preferring the one named coredns.
func (e *env) coreDNSPodSpec() *corev1.PodSpec {
	for _, d := range e.deployments {
		if d.Name == "coredns" {
			return &d.Spec.Template.Spec
		}
	}
	if len(e.deployments) > 0 {
		return &e.deployments[0].Spec.Template.Spec
	}
	return nil
}

// semanticProblems finds what the parser accepts but CoreDNS's plugin
// setup refuses: a forward without a target, or with a host name (CoreDNS
// says "not an IP address or file").
func semanticProblems(cfg *config) []problem {
	var out []problem
	for _, b := range cfg.blocks {
		for _, d := range b.directives {
			if !isForwarder(d.name) {
				continue
			}
			if len(d.args) < 2 {
				out = append(out, problem{src: d.src, line: d.line, msg: fmt.Sprintf("%s needs a zone and at least one target: %q", d.name, strings.TrimSpace(d.name+" "+strings.Join(d.args, " ")))})
				continue
			}
			if d.name != "forward" {
				continue
			}
			// CoreDNS's forward takes at most 15 targets, over dns:// or tls:// only.
			if n := len(d.args) - 1; n > 15 {
				out = append(out, problem{src: d.src, line: d.line, msg: fmt.Sprintf("more than 15 TOs configured: %d", n)})
			}
			for _, t := range d.args[1:] {
				if tr, _ := splitTransport(t); tr != "dns" && tr != "tls" {
					out = append(out, problem{src: d.src, line: d.line, msg: fmt.Sprintf("'%s' is not supported as a destination protocol in forward: %s", tr, t)})
				}
			}
		}
	}
	return out
}

// invalidFindings reports the problems that make CoreDNS refuse the
// configuration, one finding per ConfigMap to fix.
func (e *env) invalidFindings(cfg *config) []findings.Finding {
	byCM := map[string][]problem{}
	var order []string
	for _, p := range cfg.invalid {
		if _, ok := byCM[p.src.configMap]; !ok {
			order = append(order, p.src.configMap)
		}
		byCM[p.src.configMap] = append(byCM[p.src.configMap], p)
	}
	var out []findings.Finding
	for _, name := range order {
		out = append(out, e.invalidFinding(name, byCM[name]))
	}
	return out
}

func (e *env) invalidFinding(cmName string, ps []problem) findings.Finding {
	first := ps[0]
	title := fmt.Sprintf("CoreDNS configuration is broken at %s: %s", first.src.at(first.line), first.msg)
	var ev []string
	for _, p := range ps {
		line := fmt.Sprintf("%s line %d: %s", p.src, p.line, p.msg)
		if p.line == 0 {
			line = fmt.Sprintf("%s: %s", p.src, p.msg)
		}
		if p.text != "" {
			line += fmt.Sprintf(" (the line reads %q)", p.text)
		}
		ev = append(ev, line)
	}
	for _, d := range e.deployments {
		pods := e.deploymentPods(d)
		var notReady []*corev1.Pod
		for _, p := range pods {
			if !podready.Ready(p) {
				notReady = append(notReady, p)
			}
		}
		if len(notReady) == 0 && len(pods) > 0 {
			ev = append(ev, fmt.Sprintf("the %d pods of Deployment %s/%s are still ready: they run an older, valid configuration until they restart", len(pods), d.Namespace, d.Name))
		}
		ev = append(ev, podready.ExplainPods(e.s, notReady, 2)...)
	}
	return findings.Finding{
		ID: idCorefileInvalid, Severity: findings.Critical, Area: findings.AreaDNS, Object: configMapRef(cmName),
		Title: title, Evidence: ev,
		Explanation: "CoreDNS parses the whole configuration (the Corefile and every file it imports) at start and on reload. " +
			"On an error, a running CoreDNS keeps its previous configuration, but any restart (node drain, upgrade, scale-up) crash-loops and the cluster loses DNS; " +
			"an unbalanced brace may instead load silently without some plugins. Fix the line named here; on AKS edit coredns-custom, never the managed coredns ConfigMap.",
		Remediation: []findings.Remediation{
			findings.Inspect("Show the configuration with line numbers", fmt.Sprintf("kubectl get configmap %s -n %s -o jsonpath='{.data.%s}' | cat -n", cmName, kubeSystem, jsonpathKey(first.src.key))),
			findings.Inspect("Read CoreDNS's own error", fmt.Sprintf("kubectl logs -n %s -l k8s-app=kube-dns --tail=50 --prefix", kubeSystem)),
		},
	}
}

// jsonpathKey escapes dots in a ConfigMap key for kubectl's jsonpath.
func jsonpathKey(k string) string { return strings.ReplaceAll(k, ".", `\.`) }

// unknownPlugins reports directives stock CoreDNS does not have, with the
// closest known name.
func (e *env) unknownPlugins(cfg *config) []findings.Finding {
	known := stockPlugins()
	byCM := map[string][]string{}
	var order []string
	first := map[string]string{}
	for _, b := range cfg.blocks {
		for _, d := range b.directives {
			if known[d.name] {
				continue
			}
			line := fmt.Sprintf("%s: unknown plugin %q", d.src.at(d.line), d.name)
			if s := closest(d.name, known); s != "" {
				line += fmt.Sprintf(" (did you mean %q?)", s)
			}
			if _, ok := byCM[d.src.configMap]; !ok {
				order = append(order, d.src.configMap)
				first[d.src.configMap] = d.name
			}
			byCM[d.src.configMap] = append(byCM[d.src.configMap], line)
		}
	}
	var out []findings.Finding
	for _, cm := range order {
		out = append(out, findings.Finding{
			ID: idUnknownPlugin, Severity: findings.Warning, Area: findings.AreaDNS, Object: configMapRef(cm),
			Title:    fmt.Sprintf("CoreDNS configuration in ConfigMap kube-system/%s uses plugin %q, which stock CoreDNS does not have", cm, first[cm]),
			Evidence: byCM[cm],
			Explanation: "CoreDNS rejects a configuration that names a plugin it was not built with (\"Unknown directive\"). " +
				"Unless this cluster runs a custom CoreDNS build that includes it, this is a typo: the next restart of CoreDNS fails. " +
				"AKS supports built-in plugins only.",
			Remediation: []findings.Remediation{
				findings.Inspect("Show the configuration", fmt.Sprintf("kubectl get configmap %s -n %s -o yaml", cm, kubeSystem)),
				findings.Inspect("Check which image (and so which plugins) CoreDNS runs", fmt.Sprintf("kubectl get deployment -n %s -l k8s-app=kube-dns -o jsonpath='{..image}'", kubeSystem)),
			},
		})
	}
	return out
}

// closest returns the known plugin within edit distance 2 of name, if any.
func closest(name string, known map[string]bool) string {
	best, bestD := "", 3
	for p := range known {
		if d := editdist.Levenshtein(name, p); d < bestD || (d == bestD && p < best) {
			best, bestD = p, d
		}
	}
	return best
}

// ignoredKeys reports keys of coredns-custom (or another imported
// ConfigMap) that no import reads. On AKS a key must end in .server or
// .override; anything else is silently ignored.
func (e *env) ignoredKeys(cfg *config, cms func(string) *corev1.ConfigMap) []findings.Finding {
	if !cfg.parsed {
		return nil // which keys the Corefile imports is unknown
	}
	read := map[string]map[string]bool{}
	patterns := map[string][]string{}
	names := map[string]bool{"coredns-custom": true}
	for _, ref := range cfg.imports {
		if ref.configMap == "" {
			continue
		}
		names[ref.configMap] = true
		if read[ref.configMap] == nil {
			read[ref.configMap] = map[string]bool{}
		}
		for _, k := range ref.keys {
			read[ref.configMap][k] = true
		}
		patterns[ref.configMap] = append(patterns[ref.configMap], fmt.Sprintf("import %s (%s)", ref.pattern, ref.src.at(ref.line)))
	}
	var sorted []string
	for n := range names {
		if n != cfg.main.configMap {
			sorted = append(sorted, n)
		}
	}
	sort.Strings(sorted)
	var out []findings.Finding
	for _, name := range sorted {
		cm := cms(name)
		if cm == nil {
			continue
		}
		var ignored []string
		for k := range cm.Data {
			if !read[name][k] {
				ignored = append(ignored, k)
			}
		}
		if len(ignored) == 0 {
			continue
		}
		sort.Strings(ignored)
		ev := []string{fmt.Sprintf("keys never imported: %s", strings.Join(ignored, ", "))}
		if len(patterns[name]) == 0 {
			ev = append(ev, fmt.Sprintf("the Corefile (%s) imports nothing from this ConfigMap", cfg.main))
		} else {
			ev = append(ev, "the Corefile reads only: "+strings.Join(patterns[name], "; "))
		}
		out = append(out, findings.Finding{
			ID: idCustomKeyIgnored, Severity: findings.Warning, Area: findings.AreaDNS, Object: configMapRef(name),
			Title:    fmt.Sprintf("CoreDNS ignores %s of ConfigMap kube-system/%s: %s", evidence.Plural(len(ignored), "key"), name, strings.Join(evidence.CappedN(ignored, 3), ", ")),
			Evidence: ev,
			Explanation: "CoreDNS reads a custom ConfigMap only through the import lines of its Corefile. On AKS these are custom/*.override (plugins added to the default server) and custom/*.server (extra server blocks), " +
				"so a key with any other suffix is silently ignored and the customization never takes effect. Rename the key to end in .server or .override.",
			Remediation: []findings.Remediation{
				findings.Inspect("Show the custom ConfigMap", fmt.Sprintf("kubectl get configmap %s -n %s -o yaml", name, kubeSystem)),
				findings.Inspect("Show the import lines of the Corefile", fmt.Sprintf("kubectl get configmap %s -n %s -o jsonpath='{.data.%s}' | grep -n import", cfg.main.configMap, kubeSystem, jsonpathKey(cfg.main.key))),
			},
		})
	}
	return out
}

// upstreamsFinding lists where every zone goes: the dns-upstreams info.
func (e *env) upstreamsFinding(cfg *config, routes []route) (findings.Finding, bool) {
	if len(cfg.blocks) == 0 {
		return findings.Finding{}, false
	}
	var ev []string
	var summary []string
	targets := map[string]bool{}
	sh := shadowing(cfg)
	for _, r := range routes {
		line := r.String()
		if first, ok := sh[r.dir.src.at(r.dir.line)]; ok {
			line += fmt.Sprintf(" (never used: the forward at %s comes first)", first.src.at(first.line))
		}
		ev = append(ev, line)
		if isForwarder(r.dir.name) {
			var ts []string
			for _, t := range r.targets {
				ts = append(ts, t.raw)
				targets[t.raw] = true
			}
			summary = append(summary, strings.Join(r.zones, " ")+" -> "+strings.Join(ts, ","))
		}
	}
	for _, b := range cfg.blocks {
		has := false
		for _, d := range b.directives {
			has = has || answers(d.name)
		}
		if !has {
			ev = append(ev, fmt.Sprintf("%s -> nothing answers [%s]", strings.Join(b.zones(), " "), b.src.at(b.line)))
		}
	}
	for _, ref := range cfg.imports {
		if ref.configMap == "" {
			ev = append(ev, fmt.Sprintf("import %s [%s] reads files that come from no ConfigMap kdiag can see; their zones are not listed", ref.pattern, ref.src.at(ref.line)))
		}
	}
	title := fmt.Sprintf("%s forwards %s to %s: %s", cfg.server, evidence.Plural(len(summary), "zone"), evidence.Plural(len(targets), "upstream"), strings.Join(evidence.CappedN(summary, 3), "; "))
	if len(summary) == 0 {
		title = cfg.server + " forwards no zone to an upstream server: names outside its own zones do not resolve"
	}
	return findings.Finding{
		ID: idUpstreams, Severity: findings.Info, Area: findings.AreaDNS, Object: configMapRef(cfg.main.configMap),
		Title: title, Evidence: ev,
		Explanation: "This is where CoreDNS sends each name: zones it answers itself (kubernetes, hosts, file) and zones it forwards, with the upstream servers. " +
			"When some names fail (SERVFAIL) while others resolve, compare the failing names with this map: the upstream of their zone is the one to test, for example with `kdiag trace dns` in kube-system.",
		Remediation: []findings.Remediation{
			findings.Inspect("Show the Corefile", fmt.Sprintf("kubectl get configmap %s -n %s -o jsonpath='{.data.%s}'", cfg.main.configMap, kubeSystem, jsonpathKey(cfg.main.key))),
			findings.Inspect("Show AKS customizations", fmt.Sprintf("kubectl get configmap coredns-custom -n %s -o yaml", kubeSystem)),
		},
	}, true
}

// notIPFindings reports forward targets that are not IP addresses, one
// finding per ConfigMap. A host name is critical (CoreDNS refuses it); a
// file other than /etc/resolv.conf is a warning (kdiag cannot check it).
func (e *env) notIPFindings(cfg *config, routes []route) []findings.Finding {
	type item struct {
		line     string
		hostname bool
		target   string
		zone     string
	}
	byCM := map[string][]item{}
	var order []string
	for _, r := range routes {
		for _, t := range r.targets {
			var line string
			switch t.kind {
			case kindHostname:
				line = fmt.Sprintf("%s: %s %s -> %q is a host name: CoreDNS accepts only IP addresses or a resolv.conf file and refuses this (\"not an IP address or file\")",
					r.dir.src.at(r.dir.line), r.dir.name, strings.Join(r.zones, " "), t.raw)
			case kindFile:
				line = fmt.Sprintf("%s: %s %s -> %q is a file path: CoreDNS reads nameservers from it inside its container, which kdiag cannot check",
					r.dir.src.at(r.dir.line), r.dir.name, strings.Join(r.zones, " "), t.raw)
			default:
				continue
			}
			cm := r.dir.src.configMap
			if _, ok := byCM[cm]; !ok {
				order = append(order, cm)
			}
			byCM[cm] = append(byCM[cm], item{line: line, hostname: t.kind == kindHostname, target: t.raw, zone: strings.Join(r.zones, " ")})
		}
	}
	var out []findings.Finding
	for _, cm := range order {
		items := byCM[cm]
		sev := findings.Warning
		var ev []string
		for _, it := range items {
			ev = append(ev, it.line)
			if it.hostname {
				sev = findings.Critical
			}
		}
		title := fmt.Sprintf("%s forwards %s to %q, which is not an IP address", cfg.server, items[0].zone, items[0].target)
		if len(items) > 1 {
			title = fmt.Sprintf("%s forwards to %d targets that are not IP addresses (first: %s -> %q)", cfg.server, len(items), items[0].zone, items[0].target)
		}
		out = append(out, findings.Finding{
			ID: idUpstreamNotIP, Severity: sev, Area: findings.AreaDNS, Object: configMapRef(cm),
			Title: title, Evidence: ev,
			Explanation: "CoreDNS's forward plugin takes IP addresses (optionally with tls:// or dns:// and a port) or a resolv.conf-style file. " +
				"A host name cannot work: CoreDNS would need DNS to find its DNS server, so it rejects the configuration. " +
				"Replace the name with the server's IP addresses; keep /etc/resolv.conf for the node's default resolvers.",
			Remediation: []findings.Remediation{
				findings.Inspect("Show the ConfigMap", fmt.Sprintf("kubectl get configmap %s -n %s -o yaml", cm, kubeSystem)),
			},
		})
	}
	return out
}

// clusterAddrs indexes the cluster's Service ClusterIPs and pod IPs, and
// the ranges they come from, to judge in-cluster forward targets.
type clusterAddrs struct {
	services      map[netip.Addr]*corev1.Service
	pods          map[netip.Addr]*corev1.Pod
	serviceRanges []netip.Prefix
	podRanges     []netip.Prefix
	servicesKnown bool
	podsKnown     bool
}

func (e *env) clusterAddrs() *clusterAddrs {
	if e.addrs != nil {
		return e.addrs
	}
	ca := &clusterAddrs{services: map[netip.Addr]*corev1.Service{}, pods: map[netip.Addr]*corev1.Pod{}}
	ca.servicesKnown = e.allRead(cluster.ResServices)
	ca.podsKnown = e.allRead(cluster.ResPods) && e.s.Has(cluster.ResNodes)
	var v4, v6 []netip.Addr
	for i := range e.s.Services {
		svc := &e.s.Services[i]
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ip := range ips {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				continue // "None" for headless Services
			}
			ca.services[a] = svc
			if a.Is4() {
				v4 = append(v4, a)
			} else {
				v6 = append(v6, a)
			}
		}
	}
	if p, ok := coveringPrefix(v4, 24); ok {
		ca.serviceRanges = append(ca.serviceRanges, p)
	}
	if p, ok := coveringPrefix(v6, 112); ok {
		ca.serviceRanges = append(ca.serviceRanges, p)
	}
	for i := range e.s.Pods {
		p := &e.s.Pods[i]
		if podready.Terminal(p) || p.Spec.HostNetwork {
			continue
		}
		for _, ip := range p.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil {
				ca.pods[a] = p
			}
		}
	}
	for _, n := range e.s.Nodes {
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, c := range cidrs {
			if p, err := netip.ParsePrefix(c); err == nil {
				ca.podRanges = append(ca.podRanges, p.Masked())
			}
		}
	}
	e.addrs = ca
	return ca
}

func inAny(a netip.Addr, ps []netip.Prefix) (netip.Prefix, bool) {
	for _, p := range ps {
		if p.Contains(a) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// stubFindings reports server blocks that answer nothing and forward
// targets that point nowhere, one finding per server block.
func (e *env) stubFindings(cfg *config, routes []route) []findings.Finding {
	ca := e.clusterAddrs()
	declared := e.dnsPodPorts()
	type blockIssues struct {
		block *serverBlock
		lines []string
		obj   string
		first string
	}
	var order []*serverBlock
	issues := map[*serverBlock]*blockIssues{}
	add := func(b *serverBlock, cm, line, headline string) {
		bi := issues[b]
		if bi == nil {
			bi = &blockIssues{block: b, obj: cm, first: headline}
			issues[b] = bi
			order = append(order, b)
		}
		bi.lines = append(bi.lines, line)
	}
	for _, b := range cfg.blocks {
		has := false
		for _, d := range b.directives {
			has = has || answers(d.name)
		}
		if !has {
			add(b, b.src.configMap, fmt.Sprintf("server block %s has no forward, proxy or other plugin that answers: every query for it fails", b.where()),
				fmt.Sprintf("%s zone %s has no upstream or answering plugin", cfg.server, strings.Join(b.zones(), " ")))
		}
	}
	for _, r := range routes {
		for _, t := range r.targets {
			if t.kind != kindIP {
				continue
			}
			why := e.nowhere(t, ca, declared)
			if why == "" {
				continue
			}
			add(r.block, r.dir.src.configMap,
				fmt.Sprintf("%s: %s %s -> %s: %s", r.dir.src.at(r.dir.line), r.dir.name, strings.Join(r.zones, " "), t.describe(), why),
				fmt.Sprintf("%s forwards %s to %s, which points nowhere", cfg.server, strings.Join(r.zones, " "), t.describe()))
		}
	}
	var out []findings.Finding
	for _, b := range order {
		bi := issues[b]
		out = append(out, findings.Finding{
			ID: idStubNoUpstream, Severity: findings.Warning, Area: findings.AreaDNS, Object: configMapRef(bi.obj),
			Title: bi.first, Evidence: bi.lines,
			Explanation: "Names of this zone are sent to no working server: either the server block has no plugin that answers, or the forward target is an address " +
				"nothing answers on (0.0.0.0, CoreDNS itself, an unused in-cluster address, or a Service without ready endpoints). " +
				"Those names get SERVFAIL or time out while all other names resolve, which is easy to mistake for an upstream outage.",
			Remediation: []findings.Remediation{
				findings.Inspect("Show the ConfigMap", fmt.Sprintf("kubectl get configmap %s -n %s -o yaml", bi.obj, kubeSystem)),
				findings.Inspect("Look up the in-cluster address", "kubectl get services,pods -A -o wide | grep -F <address>"),
			},
		})
	}
	return out
}

// nowhere says why a forward target IP reaches no DNS server, or "".
func (e *env) nowhere(t upstream, ca *clusterAddrs, declared map[string]bool) string {
	a := t.addr.Unmap()
	switch {
	case a.IsUnspecified():
		return "an unspecified address that no server answers on"
	case a.IsLoopback():
		if t.port == "53" {
			return "loopback port 53 inside the CoreDNS pod is CoreDNS itself: a forwarding loop (the loop plugin then stops CoreDNS)"
		}
		if !declared[t.port] {
			return fmt.Sprintf("loopback inside the CoreDNS pod, and no container of the DNS pod declares port %s", t.port)
		}
		return ""
	}
	if e.isClusterDNSIP(a) {
		return "the ClusterIP of the cluster DNS Service, CoreDNS itself: a forwarding loop"
	}
	return e.unusedInCluster(a, ca)
}

// unusedInCluster says why an address inside the cluster reaches nothing:
// a Service without ready endpoints, a pod that is not ready, or an
// address of the Service range or a pod CIDR that nobody has. It returns
// "" for other addresses, which kdiag cannot judge.
func (e *env) unusedInCluster(a netip.Addr, ca *clusterAddrs) string {
	if svc := ca.services[a]; svc != nil {
		if !evidence.ReadIn(e.s, cluster.ResEndpointSlices, svc.Namespace) {
			return ""
		}
		if n := readyEndpoints(e.ix, svc); n == 0 {
			return fmt.Sprintf("the ClusterIP of Service %s/%s, which has no ready endpoint", svc.Namespace, svc.Name)
		}
		return ""
	}
	if p := ca.pods[a]; p != nil {
		if !podready.Ready(p) {
			return fmt.Sprintf("the IP of pod %s/%s, which is not ready", p.Namespace, p.Name)
		}
		return ""
	}
	if ca.servicesKnown {
		if pr, ok := inAny(a, ca.serviceRanges); ok {
			return fmt.Sprintf("inside the cluster's Service range (%s, inferred from the ClusterIPs), but no Service has this ClusterIP", pr)
		}
	}
	if ca.podsKnown {
		if pr, ok := inAny(a, ca.podRanges); ok {
			return fmt.Sprintf("inside the pod CIDR %s of a node, but no pod has this IP", pr)
		}
	}
	return ""
}

// readyEndpoints counts the ready or serving endpoints of a Service.
func readyEndpoints(ix *cluster.Index, svc *corev1.Service) int {
	n := 0
	for _, es := range ix.EndpointSlices(svc.Namespace, svc.Name) {
		for _, ep := range es.Endpoints {
			r := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			if r || (ep.Conditions.Serving != nil && *ep.Conditions.Serving) {
				n++
			}
		}
	}
	return n
}

// dnsPodPorts lists the container ports the DNS pod template declares,
// which a loopback forward target may legitimately use (a sidecar).
func (e *env) dnsPodPorts() map[string]bool {
	out := map[string]bool{}
	spec := e.coreDNSPodSpec()
	if spec == nil {
		return out
	}
	for _, c := range append(append([]corev1.Container(nil), spec.Containers...), spec.InitContainers...) {
		for _, p := range c.Ports {
			out[strconv.Itoa(int(p.ContainerPort))] = true
		}
	}
	return out
}
