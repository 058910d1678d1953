package lab

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Fallback bounds for port picking when the ephemeral range is unreadable.
const (
	defaultEphemeralLow = 32768
	minPort             = 10000
)

// pickPorts returns n distinct free TCP ports on 127.0.0.1.
//
// They are taken at random below the kernel's ephemeral port range, so that
// no outgoing connection (whose local port comes from that range) can occupy
// one between the check here and the component binding it, and two labs
// starting at the same moment are unlikely to pick the same port. The
// remaining race, a port taken by another process before the component
// binds it, is handled by Start, which retries with new ports when a log
// says "address already in use". (Asking the kernel for port 0 would return
// a port from the ephemeral range, which is exactly what we avoid.)
func pickPorts(n int) ([]int, error) {
	high := ephemeralLow() - 1
	if high-minPort < 100*n {
		return kernelPorts(n)
	}
	seen := make(map[int]bool, n)
	out := make([]int, 0, n)
	for tries := 0; len(out) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("no free loopback port found in %d-%d after %d tries", minPort, high, tries)
		}
		p := minPort + rand.IntN(high-minPort+1)
		if seen[p] {
			continue
		}
		seen[p] = true
		if free(p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// ephemeralLow returns the low end of net.ipv4.ip_local_port_range.
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemeralLow
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return defaultEphemeralLow
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return defaultEphemeralLow
	}
	return low
}

// free reports whether 127.0.0.1:port can be listened on now.
func free(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// kernelPorts asks the kernel for n ports, for machines whose ephemeral
// range leaves no room below it.
func kernelPorts(n int) ([]int, error) {
	out := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free loopback port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
