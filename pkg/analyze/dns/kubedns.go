package dns

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/kdiag/kdiag/pkg/findings"
)

// kubeDNSChecks reads the legacy kube-dns ConfigMap (still GKE's default):
// stubDomains maps a domain to nameserver IPs, upstreamNameservers replaces
// the node's resolv.conf. They are turned into server blocks with a
// forward each, so the same upstream checks apply.
func (e *env) kubeDNSChecks() []findings.Finding {
	cm := e.ix.ConfigMap(kubeSystem, "kube-dns")
	if cm == nil {
		return nil
	}
	cfg := &config{server: "kube-dns", main: source{configMap: "kube-dns", key: "stubDomains"}}
	var bad []string
	if raw, ok := cm.Data["stubDomains"]; ok {
		var stubs map[string][]string
		if err := json.Unmarshal([]byte(raw), &stubs); err != nil {
			bad = append(bad, fmt.Sprintf("key stubDomains is not a JSON object of domain -> [nameserver IPs]: %v", err))
		}
		domains := slices.Sorted(maps.Keys(stubs))
		for _, d := range domains {
			src := source{configMap: "kube-dns", key: "stubDomains"}
			cfg.blocks = append(cfg.blocks, &serverBlock{keys: []string{d}, src: src,
				directives: []directive{{name: "forward", args: append([]string{"."}, stubs[d]...), src: src}}})
		}
	}
	upstreams := []string{"/etc/resolv.conf"}
	upSrc := source{configMap: "kube-dns", key: "upstreamNameservers"}
	if raw, ok := cm.Data["upstreamNameservers"]; ok {
		var ups []string
		if err := json.Unmarshal([]byte(raw), &ups); err != nil {
			bad = append(bad, fmt.Sprintf("key upstreamNameservers is not a JSON list of nameserver IPs: %v", err))
		} else if len(ups) > 0 {
			upstreams = ups
		}
	}
	cfg.blocks = append(cfg.blocks, &serverBlock{keys: []string{"."}, src: upSrc,
		directives: []directive{{name: "forward", args: append([]string{"."}, upstreams...), src: upSrc}}})

	var out []findings.Finding
	if len(bad) > 0 {
		out = append(out, findings.Finding{
			ID: idCorefileInvalid, Severity: findings.Warning, Area: findings.AreaDNS, Object: configMapRef("kube-dns"),
			Title:    "kube-dns ignores its ConfigMap kube-system/kube-dns: " + bad[0],
			Evidence: bad,
			Explanation: "kube-dns reads stubDomains and upstreamNameservers as JSON. When they do not parse it logs an error and keeps its defaults, " +
				"so the custom stub domains and upstreams silently do not apply.",
			Remediation: []findings.Remediation{
				findings.Inspect("Show the ConfigMap", fmt.Sprintf("kubectl get configmap kube-dns -n %s -o yaml", kubeSystem)),
			},
		})
	}
	routes := routesOf(cfg)
	if f, ok := e.upstreamsFinding(cfg, routes); ok {
		out = append(out, f)
	}
	out = append(out, e.notIPFindings(cfg, routes)...)
	out = append(out, e.stubFindings(cfg, routes)...)
	return out
}
