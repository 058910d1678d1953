// Package diagnosetest holds test helpers for the NotReady diagnostic.
package diagnosetest

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// ClusterDNS serves, on a loopback UDP port, the A record of
// kubernetes.default.svc.cluster.local with address ip, as a cluster DNS
// would, until the test ends. It returns the server's host:port.
func ClusterDNS(t testing.TB, ip string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cluster DNS stand-in: %v", err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Name == "kubernetes.default.svc.cluster.local." && q.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{A: net.ParseIP(ip),
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}})
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}
