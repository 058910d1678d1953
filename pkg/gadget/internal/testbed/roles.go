package testbed

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
)

// RunHelperIfRequested must be called first in TestMain of every package
// that uses the bed: when the process was started by Bed.Start it joins the
// pod's cgroups, plays its role and exits; otherwise it returns.
func RunHelperIfRequested() {
	role := os.Getenv(envRole)
	if role == "" {
		return
	}
	if ns := os.Getenv(envNetns); ns != "" {
		enterNetnsAndReexec(ns)
	}
	for _, dir := range strings.Split(os.Getenv(envCgroups), ":") {
		if dir == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "testbed helper: join cgroup %s: %v\n", dir, err)
			os.Exit(3)
		}
	}
	args := flagArgs(os.Args[1:])
	var err error
	switch role {
	case "tcp-listen":
		err = tcpListen(args[0])
	case "tcp-connect":
		err = tcpConnect(args[0], atoi(args, 1, 1), atoi(args, 2, 1))
	case "dns-server":
		err = dnsServer(args)
	case "dns-forwarder":
		err = dnsForwarder(args[0], args[1])
	case "dns-query":
		err = dnsQuery(args[0], args[1], args[2], args[3])
	case "dns-flood":
		err = dnsFlood(args[0], atoi(args, 1, 1000), atoi(args, 2, 64))
	case "memhog":
		err = memhog()
	case "sleep":
		fmt.Println("ready")
		time.Sleep(time.Hour)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testbed helper %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// enterNetnsAndReexec joins the cgroups, switches this thread to the
// network namespace and re-executes the binary from it, so that every thread
// of the role runs in the namespace (setns only moves the calling thread;
// "ip netns exec" would hide the cgroup mounts behind a fresh /sys).
func enterNetnsAndReexec(nsPath string) {
	for _, dir := range strings.Split(os.Getenv(envCgroups), ":") {
		if dir == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "testbed helper: join cgroup %s: %v\n", dir, err)
			os.Exit(3)
		}
	}
	runtime.LockOSThread()
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testbed helper: open %s: %v\n", nsPath, err)
		os.Exit(3)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		fmt.Fprintf(os.Stderr, "testbed helper: setns %s: %v\n", nsPath, err)
		os.Exit(3)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envNetns+"=") && !strings.HasPrefix(kv, envCgroups+"=") {
			env = append(env, kv)
		}
	}
	exe, err := os.Executable()
	if err == nil {
		err = unix.Exec(exe, os.Args, env)
	}
	fmt.Fprintf(os.Stderr, "testbed helper: re-exec: %v\n", err)
	os.Exit(3)
}

// flagArgs drops the -test.* flags that Start passes to the test binary.
func flagArgs(in []string) []string {
	var out []string
	for _, a := range in {
		if !strings.HasPrefix(a, "-test.") {
			out = append(out, a)
		}
	}
	return out
}

func atoi(args []string, i, def int) int {
	if i >= len(args) {
		return def
	}
	n, err := strconv.Atoi(args[i])
	if err != nil {
		return def
	}
	return n
}

// tcpListen accepts connections and closes each once the peer has.
func tcpListen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			_, _ = io.Copy(io.Discard, c)
			_ = c.Close()
		}()
	}
}

// tcpConnect opens and closes count connections with workers in parallel
// and prints "done ok=N fail=M err=<first error>".
func tcpConnect(addr string, count, workers int) error {
	var ok, fail atomic.Int64
	var first atomic.Value
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(count) {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					fail.Add(1)
					first.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
				_ = c.Close()
			}
		}()
	}
	wg.Wait()
	msg, _ := first.Load().(string)
	fmt.Printf("done ok=%d fail=%d err=%s\n", ok.Load(), fail.Load(), msg)
	return nil
}

// dnsAnswer decides the fate of a query by its first label: "ok*" is
// answered, "fail*" gets SERVFAIL, "drop*" is never answered, anything else
// gets NXDOMAIN.
func dnsAnswer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	name := q.Name.String()
	first, _, _ := strings.Cut(name, ".")
	rh := dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	switch {
	case strings.HasPrefix(first, "drop"):
		return nil, false
	case strings.HasPrefix(first, "fail"):
		rh.RCode = dnsmessage.RCodeServerFailure
	case strings.HasPrefix(first, "ok"):
		rh.RCode = dnsmessage.RCodeSuccess
	default:
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, false
	}
	if err := b.Question(q); err != nil {
		return nil, false
	}
	if err := b.StartAnswers(); err != nil {
		return nil, false
	}
	if rh.RCode == dnsmessage.RCodeSuccess {
		rrh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 30}
		switch q.Type {
		case dnsmessage.TypeAAAA:
			// 2001:db8::/32 is the documentation range: data only, never a target.
			if err := b.AAAAResource(rrh, dnsmessage.AAAAResource{AAAA: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}}); err != nil {
				return nil, false
			}
		default:
			// 192.0.2.0/24 is the documentation range: data only.
			if err := b.AResource(rrh, dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}}); err != nil {
				return nil, false
			}
			if err := b.AResource(rrh, dnsmessage.AResource{A: [4]byte{192, 0, 2, 2}}); err != nil {
				return nil, false
			}
		}
	}
	out, err := b.Finish()
	return out, err == nil
}

// dnsServer serves UDP and TCP on each address given.
func dnsServer(addrs []string) error {
	errc := make(chan error, 2*len(addrs))
	for _, addr := range addrs {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					errc <- err
					return
				}
				if resp, ok := dnsAnswer(buf[:n]); ok {
					_, _ = pc.WriteTo(resp, from)
				}
			}
		}()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					errc <- err
					return
				}
				go serveDNSTCP(c)
			}
		}()
	}
	fmt.Println("ready")
	return <-errc
}

// dnsForwarder serves UDP on addr and forwards each query to upstream, like
// a cluster DNS server with a custom upstream; when the upstream does not
// answer within a second, the client gets SERVFAIL.
func dnsForwarder(addr, upstream string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		query := append([]byte(nil), buf[:n]...)
		go func() {
			resp, err := exchange(upstream, query)
			if err != nil {
				resp = servfail(query)
			}
			if resp != nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}()
	}
}

func exchange(upstream string, query []byte) ([]byte, error) {
	c, err := net.Dial("udp", upstream)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func servfail(query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired, RCode: dnsmessage.RCodeServerFailure})
	if b.StartQuestions() != nil || b.Question(q) != nil {
		return nil
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

func serveDNSTCP(c net.Conn) {
	defer c.Close()
	for {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		resp, ok := dnsAnswer(msg)
		if !ok {
			continue
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

func buildQuery(id uint16, name string, qtype dnsmessage.Type) ([]byte, error) {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), dnsmessage.Header{ID: id, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: n, Type: qtype, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	return b.Finish()
}

// dnsQuery sends one query over proto ("udp" or "tcp") and prints
// "result rcode=<rcode> answers=<n>" or "result timeout".
func dnsQuery(server, proto, name, qtype string) error {
	t := dnsmessage.TypeA
	if qtype == "AAAA" {
		t = dnsmessage.TypeAAAA
	}
	q, err := buildQuery(uint16(os.Getpid()), name, t)
	if err != nil {
		return err
	}
	c, err := net.Dial(proto, server)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	var n int
	if proto == "tcp" {
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
			return err
		}
		var l [2]byte
		if _, err = io.ReadFull(c, l[:]); err == nil {
			n, err = io.ReadFull(c, buf[:binary.BigEndian.Uint16(l[:])])
		}
	} else {
		if _, err := c.Write(q); err != nil {
			return err
		}
		n, err = c.Read(buf)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		fmt.Println("result timeout")
		return nil
	}
	if err != nil {
		return err
	}
	var p dnsmessage.Parser
	h, err := p.Start(buf[:n])
	if err != nil {
		return err
	}
	_ = p.SkipAllQuestions()
	answers, _ := p.AllAnswers()
	fmt.Printf("result rcode=%s answers=%d\n", h.RCode, len(answers))
	return nil
}

// dnsFlood sends count UDP queries with at most window outstanding and
// prints "done sent=N recv=M".
func dnsFlood(server string, count, window int) error {
	c, err := net.Dial("udp", server)
	if err != nil {
		return err
	}
	defer c.Close()
	var recv atomic.Int64
	tokens := make(chan struct{}, window)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for recv.Load() < int64(count) {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(buf); err != nil {
				return
			}
			recv.Add(1)
			<-tokens
		}
	}()
	sent := 0
	for i := 0; i < count; i++ {
		select {
		case tokens <- struct{}{}:
		case <-done:
			i = count
			continue
		}
		q, err := buildQuery(uint16(i), fmt.Sprintf("ok%d.bench.test.", i%1000), dnsmessage.TypeA)
		if err != nil {
			return err
		}
		if _, err := c.Write(q); err != nil {
			return err
		}
		sent++
	}
	<-done
	fmt.Printf("done sent=%d recv=%d\n", sent, recv.Load())
	return nil
}

// memhog allocates and touches memory until the OOM killer ends it.
func memhog() error {
	fmt.Println("ready")
	var keep [][]byte
	for {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		keep = append(keep, b)
		if len(keep)%64 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}
