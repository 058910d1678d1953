package podnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if err := Check(); err != nil {
		t.Skipf("podnet tests build network namespaces: %v", err)
	}
}

func testID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

// TestNetwork builds a node network with two nodes' gateways and three
// pods, and checks pod-to-pod traffic on one and across nodes, masquerading
// towards the host, no way out to other addresses, and cleanup.
func TestNetwork(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	n, err := Create(ctx, testID(t))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_ = n.Delete(context.Background())
		}
	})
	if !n.HostAddr.IsValid() || !n.LabAddr.IsValid() || n.HostAddr.Masked() != n.LabAddr.Masked() {
		t.Fatalf("link addresses %s and %s are not one /30", n.HostAddr, n.LabAddr)
	}
	gw1, gw2 := netip.MustParsePrefix("10.240.1.1/24"), netip.MustParsePrefix("10.240.2.1/24")
	for _, gw := range []netip.Prefix{gw1, gw2, gw1} { // twice: idempotent
		if err := n.AddGateway(ctx, gw); err != nil {
			t.Fatalf("AddGateway(%s): %v", gw, err)
		}
	}
	a, err := n.AddPod(ctx, "uid-a", netip.MustParsePrefix("10.240.1.2/24"), gw1.Addr())
	if err != nil {
		t.Fatalf("AddPod a: %v", err)
	}
	b, err := n.AddPod(ctx, "uid-b", netip.MustParsePrefix("10.240.1.3/24"), gw1.Addr())
	if err != nil {
		t.Fatalf("AddPod b: %v", err)
	}
	c, err := n.AddPod(ctx, "uid-c", netip.MustParsePrefix("10.240.2.2/24"), gw2.Addr())
	if err != nil {
		t.Fatalf("AddPod c: %v", err)
	}

	// A listener in b (socket made inside b's namespace).
	lnB := listenIn(t, b.NetnsPath(), "10.240.1.3:8080")
	lnC := listenIn(t, c.NetnsPath(), "10.240.2.2:8080")
	for _, tc := range []struct {
		name, from, to string
		want           *net.TCPListener
	}{
		{"same node", a.NetnsPath(), "10.240.1.3:8080", lnB},
		{"across nodes", a.NetnsPath(), "10.240.2.2:8080", lnC},
		{"from the node network", n.NetnsPath(), "10.240.2.2:8080", lnC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			conn, err := DialIn(dctx, tc.from, "tcp", tc.to)
			if err != nil {
				t.Fatalf("dial %s: %v", tc.to, err)
			}
			defer conn.Close()
			_ = tc.want.SetDeadline(time.Now().Add(5 * time.Second))
			s, err := tc.want.Accept()
			if err != nil {
				t.Fatalf("accept: %v", err)
			}
			s.Close()
		})
	}

	// A node-local address (the node's resolver) is reachable from pods.
	local := netip.MustParseAddr("192.0.2.53")
	for range 2 {
		if err := n.AddLocalAddr(ctx, local); err != nil {
			t.Fatalf("AddLocalAddr: %v", err)
		}
	}
	lnLocal := listenIn(t, n.NetnsPath(), "192.0.2.53:53")
	if conn, err := DialIn(ctx, c.NetnsPath(), "tcp", "192.0.2.53:53"); err != nil {
		t.Errorf("dial the node-local address from a pod: %v", err)
	} else {
		conn.Close()
		_ = lnLocal.SetDeadline(time.Now().Add(5 * time.Second))
		if s, err := lnLocal.Accept(); err == nil {
			s.Close()
		}
	}

	// The host: reachable from a pod, with the source masqueraded to the
	// node network's address.
	lnHost, err := net.ListenTCP("tcp", &net.TCPAddr{IP: n.HostAddr.Addr().AsSlice()})
	if err != nil {
		t.Fatalf("listen on host link: %v", err)
	}
	defer lnHost.Close()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := DialIn(dctx, a.NetnsPath(), "tcp", lnHost.Addr().String())
	if err != nil {
		t.Fatalf("dial the host from a pod: %v", err)
	}
	conn.Close()
	_ = lnHost.SetDeadline(time.Now().Add(5 * time.Second))
	s, err := lnHost.Accept()
	if err != nil {
		t.Fatalf("accept on host: %v", err)
	}
	if src := s.RemoteAddr().(*net.TCPAddr).IP.String(); src != n.LabAddr.Addr().String() {
		t.Errorf("host saw source %s, want the masqueraded %s", src, n.LabAddr.Addr())
	}
	s.Close()

	// Nothing else is routed: the node network has no route to the world.
	if out, err := n.Exec(ctx, "ip", "route", "get", "192.0.2.1"); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("route to 192.0.2.1 in the node network: %s %v, want network unreachable", out, err)
	}
	uctx, ucancel := context.WithTimeout(ctx, time.Second)
	defer ucancel()
	if c, err := DialIn(uctx, a.NetnsPath(), "tcp", "192.0.2.1:80"); err == nil {
		c.Close()
		t.Errorf("dial 192.0.2.1 from a pod succeeded, want a failure")
	}

	if err := n.Delete(ctx); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	deleted = true
	if left := n.Leftovers(); len(left) > 0 {
		t.Errorf("left after Delete: %v", left)
	}
	if err := n.Delete(ctx); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func listenIn(t *testing.T, netns, addr string) *net.TCPListener {
	t.Helper()
	l, err := ListenIn(netns, "tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, netns, err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*net.TCPListener)
}
