package dns

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// upstreamKind classifies a forward target the way CoreDNS's
// parse.HostPortOrFile reads it: an IP address (with optional port and
// transport), else a resolv.conf-style file, else an error.
type upstreamKind int

const (
	kindIP upstreamKind = iota
	// kindResolvConf is /etc/resolv.conf: the nameservers of the node
	// CoreDNS runs on, the normal default.
	kindResolvConf
	// kindFile is another path: CoreDNS reads nameservers from it inside its
	// container, which kdiag cannot see.
	kindFile
	// kindHostname is a name: CoreDNS tries it as a file, fails and refuses
	// the configuration ("not an IP address or file").
	kindHostname
	// kindEnv holds an environment reference CoreDNS expands at start.
	kindEnv
)

// upstream is one forward/proxy/grpc target.
type upstream struct {
	raw       string
	transport string
	host      string
	port      string
	addr      netip.Addr
	kind      upstreamKind
}

// parseUpstream reads a target like "10.0.0.1", "tls://1.1.1.1:853",
// "[fd00::53]:5353" or "/etc/resolv.conf".
func parseUpstream(raw string) upstream {
	u := upstream{raw: raw}
	var rest string
	u.transport, rest = splitTransport(raw)
	u.host = rest
	u.port, _ = defaultPort(u.transport)
	if h, p, err := net.SplitHostPort(rest); err == nil {
		u.host, u.port = h, p
	}
	hostNoZone := u.host
	if i := strings.LastIndex(hostNoZone, "%"); i >= 0 {
		hostNoZone = hostNoZone[:i]
	}
	switch a, err := netip.ParseAddr(hostNoZone); {
	case err == nil && u.transport != "unix":
		u.addr, u.kind = a, kindIP
	case strings.Contains(raw, "{$") || strings.Contains(raw, "{%"):
		u.kind = kindEnv
	case rest == "/etc/resolv.conf" && u.transport == "dns":
		u.kind = kindResolvConf
	case u.transport == "unix" || strings.Contains(rest, "/"):
		u.kind = kindFile
	default:
		u.kind = kindHostname
	}
	return u
}

// describe renders the target for evidence.
func (u upstream) describe() string {
	switch u.kind {
	case kindIP:
		hp := net.JoinHostPort(u.addr.String(), u.port)
		if u.transport != "dns" {
			return u.transport + "://" + hp
		}
		return hp
	case kindResolvConf:
		return "/etc/resolv.conf (the node's nameservers)"
	case kindEnv:
		return u.raw + " (environment variable, expanded when CoreDNS starts)"
	}
	return u.raw
}

// isForwarder tells the plugins that send queries to other servers; their
// syntax is "NAME FROM TO...".
func isForwarder(plugin string) bool {
	switch plugin {
	case "forward", "proxy", "grpc":
		return true
	}
	return false
}

// answers tells the plugins that produce answers themselves or by
// forwarding; a server block without any of them answers nothing.
func answers(plugin string) bool {
	switch plugin {
	case "forward", "proxy", "grpc", "kubernetes", "k8s_external", "file", "auto", "secondary",
		"hosts", "template", "etcd", "route53", "azure", "clouddns", "whoami", "erratic", "nomad",
		"federation", "records", "fanout":
		return true
	}
	return false
}

// route is one place CoreDNS sends names: a forward-like directive with its
// targets, or a plugin that answers locally.
type route struct {
	block   *serverBlock
	dir     directive
	zones   []string
	targets []upstream
	except  []string
}

// zonesOf returns the normalized zones of a server block.
func (b *serverBlock) zones() []string {
	var out []string
	for _, k := range b.keys {
		out = append(out, parseServerKey(k).zone)
	}
	return out
}

// routesOf lists the routes of every block, in configuration order.
func routesOf(cfg *config) []route {
	var out []route
	for _, b := range cfg.blocks {
		for _, d := range b.directives {
			if !answers(d.name) {
				continue
			}
			r := route{block: b, dir: d, zones: b.zones()}
			if isForwarder(d.name) {
				if len(d.args) > 0 && fqdn(d.args[0]) != "." {
					r.zones = []string{fqdn(d.args[0])}
				}
				if len(d.args) > 1 {
					for _, t := range d.args[1:] {
						r.targets = append(r.targets, parseUpstream(t))
					}
				}
				if ex, ok := d.opt("except"); ok {
					r.except = ex
				}
			} else if d.name == "kubernetes" && len(d.args) > 0 {
				r.zones = nil
				for _, z := range d.args {
					r.zones = append(r.zones, fqdn(z))
				}
			}
			out = append(out, r)
		}
	}
	return out
}

// subzone reports whether zone child is parent or below it (both FQDN).
func subzone(child, parent string) bool {
	return parent == "." || child == parent || strings.HasSuffix(child, "."+parent)
}

// forwardFrom returns the normalized FROM zone of a forward directive.
func forwardFrom(d directive) string {
	if len(d.args) == 0 {
		return "."
	}
	return fqdn(d.args[0])
}

// shadowing finds, for each forward directive, an earlier forward of the
// same server block that takes all of its names. CoreDNS chains the forward
// instances of a block in order and the first whose FROM matches a name
// answers it (unless the name is in its except list, or it has the next
// option), so a later forward for the same or a child zone never gets a
// query. The key is the shadowed directive's location.
func shadowing(cfg *config) map[string]directive {
	out := map[string]directive{}
	for _, b := range cfg.blocks {
		var earlier []directive
		for _, d := range b.directives {
			if d.name != "forward" {
				continue
			}
			from := forwardFrom(d)
			for _, e := range earlier {
				if !subzone(from, forwardFrom(e)) {
					continue
				}
				if _, ok := e.opt("next"); ok {
					continue
				}
				ex, _ := e.opt("except")
				overlap := false
				for _, x := range ex {
					x = fqdn(x)
					overlap = overlap || subzone(from, x) || subzone(x, from)
				}
				if !overlap {
					out[d.src.at(d.line)] = e
					break
				}
			}
			earlier = append(earlier, d)
		}
	}
	return out
}

// String renders the route for the dns-upstreams evidence.
func (r route) String() string {
	loc := r.dir.src.at(r.dir.line)
	zones := strings.Join(r.zones, " ")
	if !isForwarder(r.dir.name) {
		what := r.dir.name
		switch r.dir.name {
		case "kubernetes":
			what = "kubernetes (cluster Services and pods)"
		case "hosts":
			what = "hosts (static entries)"
		case "file", "auto", "secondary":
			what = r.dir.name + " (zone data served by CoreDNS)"
		}
		return fmt.Sprintf("%s -> answered by %s [%s]", zones, what, loc)
	}
	var ts []string
	for _, t := range r.targets {
		ts = append(ts, t.describe())
	}
	if len(ts) == 0 {
		ts = []string{"(no target)"}
	}
	s := fmt.Sprintf("%s -> %s %s [%s]", zones, r.dir.name, strings.Join(ts, ", "), loc)
	if len(r.except) > 0 {
		s += "; except " + strings.Join(r.except, " ")
	}
	if pol, ok := r.dir.opt("policy"); ok && len(pol) > 0 {
		s += "; policy " + pol[0]
	}
	return s
}

// coveringPrefix returns the smallest prefix holding every address of one
// family, widened to at most maxBits (so a handful of ClusterIPs such as
// 10.0.0.1 and 10.0.0.10 stand for their /24). It is hand-written: the
// standard library has no "common prefix" helper.
func coveringPrefix(addrs []netip.Addr, maxBits int) (netip.Prefix, bool) {
	if len(addrs) == 0 {
		return netip.Prefix{}, false
	}
	bits := addrs[0].BitLen()
	p := netip.PrefixFrom(addrs[0], bits)
	for _, a := range addrs[1:] {
		for !p.Contains(a) && bits > 0 {
			bits--
			p, _ = addrs[0].Prefix(bits)
		}
	}
	if bits > maxBits {
		p, _ = addrs[0].Prefix(maxBits)
	}
	return p.Masked(), true
}
