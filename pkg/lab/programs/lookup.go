package programs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Environment variables through which the resolver passes a pod's DNS
// configuration (its resolv.conf, in a real pod) to the programs: lab pods
// are processes that share the host's /etc/resolv.conf, so they cannot
// read theirs from the usual place.
const (
	// EnvDNSServer is the nameserver, "IP" or "IP:port" (the kube-dns
	// Service for dnsPolicy ClusterFirst).
	EnvDNSServer = "KDIAG_LAB_DNS_SERVER"
	// EnvDNSSearch is the search list, space-separated.
	EnvDNSSearch = "KDIAG_LAB_DNS_SEARCH"
	// EnvDNSNdots is the ndots option (5 for ClusterFirst).
	EnvDNSNdots = "KDIAG_LAB_DNS_NDOTS"
)

// DefaultLookupTimeout bounds one query. It is longer than CoreDNS's
// forward deadline (5 s), so that a client sees the SERVFAIL CoreDNS
// returns for an upstream that never answers rather than its own timeout.
const DefaultLookupTimeout = 8 * time.Second

// Lookup resolves names the way a pod's stub resolver does with a
// resolv.conf of nameserver, search and ndots: one nameserver, the search
// list tried before the name itself when it has fewer than ndots dots, A
// records only (the lab is IPv4).
//
// It is hand-written over miekg/dns because Go's net.Resolver takes its
// search list only from /etc/resolv.conf, which lab pods share with the
// host.
type Lookup struct {
	// Server is the nameserver as host:port.
	Server string
	// Search is the search list, without trailing dots.
	Search []string
	// Ndots is the ndots option.
	Ndots int
	// Timeout bounds each query; zero means DefaultLookupTimeout.
	Timeout time.Duration
}

// LookupFromEnv builds a Lookup from the EnvDNS* variables; ok is false
// when no nameserver is set.
func LookupFromEnv(getenv func(string) string) (l *Lookup, ok bool, err error) {
	server := strings.TrimSpace(getenv(EnvDNSServer))
	if server == "" {
		return nil, false, nil
	}
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, "53")
	}
	if _, err := netip.ParseAddrPort(server); err != nil {
		return nil, false, fmt.Errorf("%s=%q: not an IP address with an optional port", EnvDNSServer, getenv(EnvDNSServer))
	}
	l = &Lookup{Server: server, Ndots: 1, Search: strings.Fields(getenv(EnvDNSSearch))}
	if s := strings.TrimSpace(getenv(EnvDNSNdots)); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, false, fmt.Errorf("%s=%q: not a non-negative number", EnvDNSNdots, s)
		}
		l.Ndots = n
	}
	return l, true, nil
}

// LookupError is a failed resolution: the last significant failure (a
// server error or a timeout outranks "no such name" from a search domain).
type LookupError struct {
	// Name is the name as asked.
	Name string
	// Server is the nameserver asked.
	Server string
	// Rcode is the response code of the failure ("SERVFAIL", "NXDOMAIN",
	// "REFUSED"...), or empty for a timeout or a network error.
	Rcode string
	// Err is the network error, if any.
	Err error
}

// Error renders the failure as stub resolvers word it, e.g.
// "lookup api.payments.example on 10.96.0.10:53: server misbehaving (SERVFAIL)".
func (e *LookupError) Error() string {
	switch {
	case e.Rcode == "NXDOMAIN":
		return fmt.Sprintf("lookup %s on %s: no such host (NXDOMAIN)", e.Name, e.Server)
	case e.Rcode != "":
		return fmt.Sprintf("lookup %s on %s: server misbehaving (%s)", e.Name, e.Server, e.Rcode)
	case errors.Is(e.Err, context.DeadlineExceeded) || isTimeout(e.Err):
		return fmt.Sprintf("lookup %s on %s: i/o timeout", e.Name, e.Server)
	default:
		return fmt.Sprintf("lookup %s on %s: %v", e.Name, e.Server, e.Err)
	}
}

// Unwrap returns the network error.
func (e *LookupError) Unwrap() error { return e.Err }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// candidates returns the fully qualified names to try, in order.
func (l *Lookup) candidates(name string) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	var searched []string
	for _, s := range l.Search {
		searched = append(searched, dns.Fqdn(name+"."+strings.TrimSuffix(s, ".")))
	}
	if strings.Count(name, ".") >= l.Ndots {
		return append([]string{dns.Fqdn(name)}, searched...)
	}
	return append(searched, dns.Fqdn(name))
}

// LookupHost returns the IPv4 addresses of name. An IP literal is returned
// as is.
func (l *Lookup) LookupHost(ctx context.Context, name string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{a}, nil
	}
	timeout := l.Timeout
	if timeout == 0 {
		timeout = DefaultLookupTimeout
	}
	client := &dns.Client{Net: "udp", Timeout: timeout}
	var worst *LookupError
	rank := func(e *LookupError) int {
		switch e.Rcode {
		case "NXDOMAIN", "NOERROR":
			return 0
		default: // SERVFAIL, REFUSED, a timeout
			return 1
		}
	}
	for _, fqdn := range l.candidates(name) {
		m := new(dns.Msg)
		m.SetQuestion(fqdn, dns.TypeA)
		m.RecursionDesired = true
		qctx, cancel := context.WithTimeout(ctx, timeout)
		resp, _, err := client.ExchangeContext(qctx, m, l.Server)
		cancel()
		var fail *LookupError
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, fmt.Errorf("lookup %s: %w", name, ctx.Err())
			}
			fail = &LookupError{Name: name, Server: l.Server, Err: err}
		case resp.Rcode != dns.RcodeSuccess:
			fail = &LookupError{Name: name, Server: l.Server, Rcode: dns.RcodeToString[resp.Rcode]}
		default:
			var addrs []netip.Addr
			for _, rr := range resp.Answer {
				if a, ok := rr.(*dns.A); ok {
					if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
						addrs = append(addrs, ip)
					}
				}
			}
			if len(addrs) > 0 {
				return addrs, nil
			}
			fail = &LookupError{Name: name, Server: l.Server, Rcode: "NOERROR", Err: errors.New("no A record")}
		}
		if worst == nil || rank(fail) >= rank(worst) {
			worst = fail
		}
	}
	if worst.Rcode == "NOERROR" {
		worst.Rcode = "NXDOMAIN"
	}
	return nil, worst
}

// dialer dials host:port, resolving host with l when it is set, and with
// the system resolver otherwise.
type dialer struct {
	lookup *Lookup
	net    net.Dialer
}

// DialContext implements http.Transport's DialContext.
func (d *dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if d.lookup == nil {
		return d.net.DialContext(ctx, network, address)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	addrs, err := d.lookup.LookupHost(ctx, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var last error
	for _, a := range addrs {
		c, err := d.net.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}
