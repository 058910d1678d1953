package kubelet

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestIPAMAllocatesDistinctAddressesInRange(t *testing.T) {
	m := newIPAM()
	r := netip.MustParsePrefix("10.244.3.0/24")
	seen := map[netip.Addr]string{}
	for i := range 110 {
		key := fmt.Sprintf("ns/p%d", i)
		addrs, err := m.allocate("n1", key, []netip.Prefix{r})
		if err != nil {
			t.Fatalf("allocate %s: %v", key, err)
		}
		a := addrs[0]
		if !r.Contains(a) {
			t.Fatalf("%s got %s outside %s", key, a, r)
		}
		if a == r.Addr() || a == r.Addr().Next() || a.As4()[3] == 255 {
			t.Fatalf("%s got reserved address %s (network, gateway or broadcast)", key, a)
		}
		if other, dup := seen[a]; dup {
			t.Fatalf("%s got %s, already given to %s", key, a, other)
		}
		seen[a] = key
	}
	// Allocation is idempotent per pod.
	again, err := m.allocate("n1", "ns/p7", []netip.Prefix{r})
	if err != nil || seen[again[0]] != "ns/p7" {
		t.Fatalf("second allocate for ns/p7 = %v, %v; want its first address", again, err)
	}
}

func TestIPAMDoesNotReuseFreedAddressAtOnce(t *testing.T) {
	m := newIPAM()
	r := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}
	a, _ := m.allocate("n1", "ns/a", r)
	m.release("ns/a")
	b, err := m.allocate("n1", "ns/b", r)
	if err != nil {
		t.Fatal(err)
	}
	if a[0] == b[0] {
		t.Fatalf("freed address %s handed out again at once", a[0])
	}
	if want := netip.MustParseAddr("10.244.0.2"); a[0] != want {
		t.Fatalf("first address = %s, want %s", a[0], want)
	}
}

func TestIPAMExhaustionAndReuse(t *testing.T) {
	m := newIPAM()
	r := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/29")} // .2 ... .6 usable
	for i := range 5 {
		if _, err := m.allocate("n1", fmt.Sprintf("ns/p%d", i), r); err != nil {
			t.Fatalf("allocate p%d: %v", i, err)
		}
	}
	_, err := m.allocate("n1", "ns/extra", r)
	if err == nil || !strings.Contains(err.Error(), "exhausted") {
		t.Fatalf("allocate in a full range: err = %v, want 'exhausted'", err)
	}
	m.release("ns/p2")
	got, err := m.allocate("n1", "ns/extra", r)
	if err != nil {
		t.Fatalf("allocate after a release: %v", err)
	}
	if want := netip.MustParseAddr("10.244.0.4"); got[0] != want {
		t.Fatalf("got %s, want the freed %s", got[0], want)
	}
}

func TestIPAMClaimKeepsExistingAndReportsOwner(t *testing.T) {
	m := newIPAM()
	r := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}
	ip := netip.MustParseAddr("10.244.1.2")
	if owner := m.claim("n1", "ns/old", ip); owner != "ns/old" {
		t.Fatalf("claim free address: owner %q", owner)
	}
	if owner := m.claim("n1", "ns/other", ip); owner != "ns/old" {
		t.Fatalf("claim taken address: owner %q, want ns/old", owner)
	}
	got, err := m.allocate("n1", "ns/old", r)
	if err != nil || got[0] != ip {
		t.Fatalf("allocate for the claimant = %v, %v; want its claimed %s", got, err, ip)
	}
	next, err := m.allocate("n1", "ns/new", r)
	if err != nil || next[0] == ip {
		t.Fatalf("allocate for a new pod = %v, %v; must not be the claimed %s", next, err, ip)
	}
}

func TestIPAMDualStackAndTinyRange(t *testing.T) {
	m := newIPAM()
	got, err := m.allocate("n1", "ns/p", []netip.Prefix{
		netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("fd00:10:244::/64"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Is4() || !got[1].Is6() {
		t.Fatalf("dual-stack allocation = %v, want one IPv4 and one IPv6", got)
	}
	if _, err := m.allocate("n1", "ns/q", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/31")}); err == nil {
		t.Fatal("allocate from a /31: want an error")
	}
}

func TestIPAMPodMovesNode(t *testing.T) {
	m := newIPAM()
	r1 := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}
	r2 := []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}
	a, _ := m.allocate("n1", "ns/p", r1)
	b, err := m.allocate("n2", "ns/p", r2)
	if err != nil || !r2[0].Contains(b[0]) {
		t.Fatalf("allocate on new node = %v, %v", b, err)
	}
	if owner := m.claim("n1", "ns/q", a[0]); owner != "ns/q" {
		t.Fatalf("address %s on the old node still held by %q", a[0], owner)
	}
}
