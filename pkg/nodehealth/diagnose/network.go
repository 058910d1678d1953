package diagnose

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// network fills the network section: default routes, the API server and
// cluster DNS, each probe bounded by opts.ProbeTimeout.
func (d *Diagnoser) network(ctx context.Context) Network {
	var sec Network
	routes, errs := defaultRoutes(d.opts.ProcDir)
	sec.DefaultRoutes = routes
	sec.Errors = append(sec.Errors, errs...)
	if d.opts.Client != nil {
		sec.APIServer = d.probeAPIServer(ctx)
	} else {
		sec.Errors = append(sec.Errors, "API server not probed: no client")
	}
	dns, err := d.probeDNS(ctx)
	if err != nil {
		sec.Errors = append(sec.Errors, err.Error())
	}
	sec.DNS = dns
	return sec
}

// defaultRoutes reads the default routes of the network namespace of PID 1
// under procDir (the node's, when procDir is the host's /proc). It parses
// /proc/net/route and ipv6_route, fixed-format tables that the standard
// library does not read, rather than pulling in a netlink library.
func defaultRoutes(procDir string) ([]Route, []string) {
	var out []Route
	var errs []string
	v4 := filepath.Join(procDir, "1", "net", "route")
	f, err := os.Open(v4)
	if err != nil {
		errs = append(errs, fmt.Sprintf("default route: %v", err))
	} else {
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			// Iface Destination Gateway Flags RefCnt Use Metric Mask ...
			if len(fl) < 8 || fl[1] != "00000000" || fl[7] != "00000000" {
				continue
			}
			r := Route{Interface: fl[0], Family: "ipv4"}
			if gw, err := hex.DecodeString(fl[2]); err == nil && len(gw) == 4 && binary.LittleEndian.Uint32(gw) != 0 {
				// /proc/net/route prints the address as a host-order
				// (little-endian) 32-bit number: 0100000A is 10.0.0.1.
				r.Gateway = net.IPv4(gw[3], gw[2], gw[1], gw[0]).String()
			}
			out = append(out, r)
		}
	}
	if b, err := os.ReadFile(filepath.Join(procDir, "1", "net", "ipv6_route")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			fl := strings.Fields(l)
			// dest destlen src srclen nexthop metric refcnt use flags iface
			if len(fl) < 10 || fl[0] != strings.Repeat("0", 32) || fl[1] != "00" || fl[9] == "lo" {
				continue
			}
			r := Route{Interface: fl[9], Family: "ipv6"}
			if nh, err := hex.DecodeString(fl[4]); err == nil && len(nh) == 16 && !net.IP(nh).IsUnspecified() {
				r.Gateway = net.IP(nh).String()
			}
			out = append(out, r)
		}
	}
	return out, errs
}

// probeAPIServer GETs /readyz, which every authenticated (and by default
// anonymous) client may read.
func (d *Diagnoser) probeAPIServer(ctx context.Context) *Probe {
	ctx, cancel := context.WithTimeout(ctx, d.opts.ProbeTimeout)
	defer cancel()
	p := &Probe{Target: d.opts.APIServerHost + "/readyz"}
	start := time.Now()
	body, err := d.opts.Client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Raw()
	p.Latency = time.Since(start)
	if err != nil {
		p.Error = oneLine(err.Error())
		return p
	}
	p.OK, p.Detail = true, strings.TrimSpace(string(body))
	return p
}

// probeDNS resolves kubernetes.default through the cluster DNS: the
// configured server, or the kube-dns Service's cluster IP.
func (d *Diagnoser) probeDNS(ctx context.Context) (*Probe, error) {
	server := d.opts.DNSServer
	if server == "" {
		if d.opts.Client == nil {
			return nil, fmt.Errorf("cluster DNS not probed: no DNS server configured and no client to find the kube-dns Service")
		}
		lctx, cancel := context.WithTimeout(ctx, d.opts.ProbeTimeout)
		svc, err := d.opts.Client.CoreV1().Services("kube-system").Get(lctx, "kube-dns", metav1.GetOptions{})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("cluster DNS not probed: read Service kube-system/kube-dns: %w", err)
		}
		if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == "None" {
			return nil, fmt.Errorf("cluster DNS not probed: Service kube-system/kube-dns has no cluster IP")
		}
		server = net.JoinHostPort(svc.Spec.ClusterIP, "53")
	}
	name := "kubernetes.default.svc." + strings.TrimSuffix(d.opts.ClusterDomain, ".") + "."
	p := &Probe{Target: name + " via " + server}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, network, server)
	}}
	ctx, cancel := context.WithTimeout(ctx, d.opts.ProbeTimeout)
	defer cancel()
	start := time.Now()
	addrs, err := r.LookupHost(ctx, name)
	p.Latency = time.Since(start)
	if err != nil {
		p.Error = oneLine(err.Error())
		return p, nil
	}
	p.OK, p.Detail = true, strings.Join(addrs, ",")
	return p, nil
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
