package kubelet

import (
	"fmt"
	"net/netip"
	"sync"
)

// ipam hands out pod IPs from each node's podCIDRs, like the host-local
// IPAM plugin of a CNI: per node and range, the network address, the first
// address (the bridge/gateway) and the broadcast address are never given
// out, and allocation goes round-robin from the last address handed out so
// that a freed IP is not reused at once. It is hand-written because the CNI
// plugins' allocator works on files on disk, not in memory.
type ipam struct {
	mu     sync.Mutex
	byNode map[string]*nodeIPs
	byPod  map[string]podIPs
}

type nodeIPs struct {
	used map[netip.Addr]string       // address -> pod key
	last map[netip.Prefix]netip.Addr // last address handed out per range
}

type podIPs struct {
	node  string
	addrs []netip.Addr
}

func newIPAM() *ipam {
	return &ipam{byNode: map[string]*nodeIPs{}, byPod: map[string]podIPs{}}
}

func (m *ipam) nodeLocked(node string) *nodeIPs {
	n := m.byNode[node]
	if n == nil {
		n = &nodeIPs{used: map[netip.Addr]string{}, last: map[netip.Prefix]netip.Addr{}}
		m.byNode[node] = n
	}
	return n
}

// claim records that pod key on node holds addr. It returns the pod that
// holds addr afterwards: key, or another pod that already held it.
func (m *ipam) claim(node, key string, addr netip.Addr) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nodeLocked(node)
	if owner, ok := n.used[addr]; ok {
		return owner
	}
	n.used[addr] = key
	p := m.byPod[key]
	if p.node != node {
		p = podIPs{node: node}
	}
	p.addrs = append(p.addrs, addr)
	m.byPod[key] = p
	return key
}

// allocate returns one address per range for pod key on node: the ones it
// already holds in those ranges, or new ones.
func (m *ipam) allocate(node, key string, ranges []netip.Prefix) ([]netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nodeLocked(node)
	held := m.byPod[key]
	if held.node != node {
		m.releaseLocked(key)
		held = podIPs{node: node}
	}
	out := make([]netip.Addr, 0, len(ranges))
	for _, r := range ranges {
		r = r.Masked()
		var got netip.Addr
		for _, a := range held.addrs {
			if r.Contains(a) {
				got = a
				break
			}
		}
		if !got.IsValid() {
			a, err := n.next(r)
			if err != nil {
				return nil, fmt.Errorf("node %s: %w", node, err)
			}
			n.used[a] = key
			n.last[r] = a
			held.addrs = append(held.addrs, a)
			got = a
		}
		out = append(out, got)
	}
	m.byPod[key] = held
	return out, nil
}

// next finds the next free address of r after the last one handed out.
func (n *nodeIPs) next(r netip.Prefix) (netip.Addr, error) {
	gateway := r.Addr().Next()
	usable := usableAddrs(r)
	if usable < 1 {
		return netip.Addr{}, fmt.Errorf("pod range %s is too small", r)
	}
	a := n.last[r]
	if !a.IsValid() || !r.Contains(a) {
		a = gateway
	}
	// Among len(used)+1 distinct addresses one is free, so the scan is
	// short; it covers the whole range only when the range is nearly full.
	steps := min(usable, uint64(len(n.used))+1)
	for range steps {
		a = a.Next()
		if !a.IsValid() || !r.Contains(a) || isBroadcast(r, a) {
			a = gateway.Next()
		}
		if _, taken := n.used[a]; !taken {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("pod range %s is exhausted", r)
}

// usableAddrs is the number of addresses of r a pod may get: all but the
// network address, the gateway and (IPv4) the broadcast address.
func usableAddrs(r netip.Prefix) uint64 {
	hostBits := r.Addr().BitLen() - r.Bits()
	if hostBits >= 62 {
		return 1 << 62
	}
	total := uint64(1) << hostBits
	reserved := uint64(2)
	if r.Addr().Is4() {
		reserved = 3
	}
	if total <= reserved {
		return 0
	}
	return total - reserved
}

// isBroadcast reports whether a is the last address of an IPv4 range.
func isBroadcast(r netip.Prefix, a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	return !r.Contains(a.Next())
}

// release frees the addresses of pod key.
func (m *ipam) release(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.releaseLocked(key)
}

func (m *ipam) releaseLocked(key string) {
	p, ok := m.byPod[key]
	if !ok {
		return
	}
	if n := m.byNode[p.node]; n != nil {
		for _, a := range p.addrs {
			if n.used[a] == key {
				delete(n.used, a)
			}
		}
	}
	delete(m.byPod, key)
}
