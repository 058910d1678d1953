package programs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"sigs.k8s.io/yaml"
)

// NodeDNSAddr is the lab's node resolver: the address inside the lab's
// node network where the upstream DNS program listens, and what the node's
// resolv.conf would name (pods with dnsPolicy Default, CoreDNS's
// `forward . /etc/resolv.conf`). It is in TEST-NET-1 (192.0.2.0/24, for
// documentation): the lab puts it on the node network, where it is local,
// so that nothing sent to it can leave the machine.
const NodeDNSAddr = "192.0.2.53"

// UpstreamConfigFile is the upstream's configuration file in a lab
// directory; scenarios write it, the upstream re-reads it when it changes.
func UpstreamConfigFile(labDir string) string { return filepath.Join(labDir, "upstream-dns.yaml") }

// UpstreamArgs are the arguments of `kdiag lab program upstream-dns` for
// the lab's node resolver: NodeDNSAddr, port 53, configured by
// UpstreamConfigFile(labDir).
func UpstreamArgs(labDir string) []string {
	return []string{"--listen", NodeDNSAddr + ":53", "--config", UpstreamConfigFile(labDir)}
}

// Actions of upstream-dns for a name.
const (
	ActionAnswer   = "answer"
	ActionServFail = "servfail"
	ActionDrop     = "drop"
	ActionNXDomain = "nxdomain"
)

// UpstreamConfig is what upstream-dns does with each name. A rule for a
// name also covers its subdomains; the longest matching name wins. The
// YAML form is the --config file, re-read when it changes, so that the
// upstream's owner can fix it while it runs.
type UpstreamConfig struct {
	// Answer maps names to the IPv4 address answered for type A (other
	// types get an empty NOERROR answer).
	Answer map[string]string `json:"answer,omitempty"`
	// ServFail lists names answered with SERVFAIL.
	ServFail []string `json:"servfail,omitempty"`
	// Drop lists names whose queries are silently dropped: no answer ever.
	Drop []string `json:"drop,omitempty"`
	// Default is the action for other names: nxdomain (default), servfail
	// or drop.
	Default string `json:"default,omitempty"`
}

// Validate checks addresses and the default action.
func (c UpstreamConfig) Validate() error {
	for name, ip := range c.Answer {
		a, err := netip.ParseAddr(ip)
		if err != nil || !a.Is4() {
			return fmt.Errorf("answer %s: %q is not an IPv4 address", name, ip)
		}
	}
	switch c.Default {
	case "", ActionNXDomain, ActionServFail, ActionDrop:
	default:
		return fmt.Errorf("default %q: want %s, %s or %s", c.Default, ActionNXDomain, ActionServFail, ActionDrop)
	}
	return nil
}

// Action returns what to do with a query for name, and for answers the
// address.
func (c UpstreamConfig) Action(name string) (action string, addr netip.Addr) {
	name = strings.ToLower(dns.Fqdn(name))
	best, bestLen := c.Default, -1
	if best == "" {
		best = ActionNXDomain
	}
	consider := func(rule, action string) {
		r := strings.ToLower(dns.Fqdn(rule))
		if (name == r || strings.HasSuffix(name, "."+r)) && len(r) > bestLen {
			best, bestLen = action, len(r)
			if action == ActionAnswer {
				addr, _ = netip.ParseAddr(c.Answer[rule])
			}
		}
	}
	for n := range c.Answer {
		consider(n, ActionAnswer)
	}
	for _, n := range c.ServFail {
		consider(n, ActionServFail)
	}
	for _, n := range c.Drop {
		consider(n, ActionDrop)
	}
	if best != ActionAnswer {
		addr = netip.Addr{}
	}
	return best, addr
}

// ReadUpstreamConfig reads a YAML UpstreamConfig.
func ReadUpstreamConfig(path string) (UpstreamConfig, error) {
	var c UpstreamConfig
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read upstream config: %w", err)
	}
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return c, fmt.Errorf("parse upstream config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("upstream config %s: %w", path, err)
	}
	return c, nil
}

// WriteUpstreamConfig writes c as YAML to path, atomically.
func WriteUpstreamConfig(path string, c UpstreamConfig) error {
	if err := c.Validate(); err != nil {
		return err
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode upstream config: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write upstream config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("install upstream config: %w", err)
	}
	return nil
}

// answerTTL is the TTL of upstream-dns's answers: short, so that a caching
// resolver in front (CoreDNS's cache) asks again every few seconds and a
// trace of the upstream shows answered queries next to the dropped ones.
const answerTTL = 5

// upstreamHandler answers queries by the current configuration.
type upstreamHandler struct {
	log *slog.Logger
	mu  sync.RWMutex
	cfg UpstreamConfig
}

func (h *upstreamHandler) config() UpstreamConfig {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.cfg
}

func (h *upstreamHandler) set(c UpstreamConfig) {
	h.mu.Lock()
	h.cfg = c
	h.mu.Unlock()
}

// ServeDNS implements dns.Handler.
func (h *upstreamHandler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if len(r.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	qtype := dns.TypeToString[q.Qtype]
	// The root NS query is how resolvers (CoreDNS's forward) check that an
	// upstream is alive: always answered.
	if q.Name == "." {
		m := new(dns.Msg)
		m.SetReply(r)
		_ = w.WriteMsg(m)
		return
	}
	action, addr := h.config().Action(q.Name)
	h.log.Info("query", "name", q.Name, "type", qtype, "from", w.RemoteAddr().String(), "action", action)
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	switch action {
	case ActionDrop:
		return
	case ActionServFail:
		m.Rcode = dns.RcodeServerFailure
	case ActionNXDomain:
		m.Rcode = dns.RcodeNameError
	case ActionAnswer:
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: answerTTL},
				A:   net.IP(addr.AsSlice()),
			})
		}
	}
	_ = w.WriteMsg(m)
}

// runUpstreamDNS serves DNS on --listen (UDP and TCP) by an UpstreamConfig
// built from --config (re-read when it changes) plus --answer NAME=IP,
// --servfail NAME, --drop NAME and --default. It logs every query and what
// it did with it.
func runUpstreamDNS(ctx context.Context, env Env, args []string) error {
	fs := flagSet(UpstreamDNS)
	listen := fs.String("listen", "127.0.0.1:53", "address to serve DNS on, UDP and TCP (port 0: any free port)")
	cfgPath := fs.String("config", "", "YAML file: answer (name: IPv4), servfail, drop (lists), default; re-read when it changes")
	var answers, servfail, drop listFlag
	fs.Var(&answers, "answer", "NAME=IPv4 to answer (repeatable)")
	fs.Var(&servfail, "servfail", "name to answer with SERVFAIL (repeatable)")
	fs.Var(&drop, "drop", "name whose queries are dropped (repeatable)")
	def := fs.String("default", "", "action for other names: nxdomain (default), servfail, drop")
	if err := parse(fs, args); err != nil {
		return err
	}
	flags := UpstreamConfig{Answer: map[string]string{}, ServFail: servfail, Drop: drop, Default: *def}
	for _, a := range answers {
		name, ip, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("--answer %q: want NAME=IPv4", a)
		}
		flags.Answer[name] = ip
	}
	if err := flags.Validate(); err != nil {
		return err
	}
	log := env.logger()
	h := &upstreamHandler{log: log}
	load := func() error {
		c := flags
		if *cfgPath != "" {
			file, err := ReadUpstreamConfig(*cfgPath)
			switch {
			case errors.Is(err, os.ErrNotExist):
				// The lab starts its upstream before a scenario writes
				// the file: until then only the flags apply.
				log.Info("config file absent; using the flags until it appears", "config", *cfgPath)
			case err != nil:
				return err
			default:
				c = mergeUpstream(flags, file)
			}
		}
		h.set(c)
		return nil
	}
	if err := load(); err != nil {
		return err
	}
	pc, ln, err := listenDNS(*listen)
	if err != nil {
		return err
	}
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	errc := make(chan error, 2)
	go func() { errc <- udp.ActivateAndServe() }()
	go func() { errc <- tcp.ActivateAndServe() }()
	c := h.config()
	log.Info("listening", "address", pc.LocalAddr().String(), "answer", len(c.Answer), "servfail", strings.Join(c.ServFail, " "), "drop", strings.Join(c.Drop, " "), "default", c.Default)
	if *cfgPath != "" {
		go watchFile(ctx, *cfgPath, func() {
			if err := load(); err != nil {
				log.Error("config not reloaded", "err", err.Error())
				return
			}
			c := h.config()
			log.Info("config reloaded", "answer", len(c.Answer), "servfail", strings.Join(c.ServFail, " "), "drop", strings.Join(c.Drop, " "), "default", c.Default)
		})
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = udp.ShutdownContext(sctx)
	_ = tcp.ShutdownContext(sctx)
	if serveErr != nil && ctx.Err() == nil {
		return fmt.Errorf("serve DNS: %w", serveErr)
	}
	return nil
}

// mergeUpstream adds the file's rules to the flags' (the file's default
// wins when set).
func mergeUpstream(flags, file UpstreamConfig) UpstreamConfig {
	out := UpstreamConfig{Answer: map[string]string{}, Default: flags.Default}
	for k, v := range flags.Answer {
		out.Answer[k] = v
	}
	for k, v := range file.Answer {
		out.Answer[k] = v
	}
	out.ServFail = append(append(out.ServFail, flags.ServFail...), file.ServFail...)
	out.Drop = append(append(out.Drop, flags.Drop...), file.Drop...)
	if file.Default != "" {
		out.Default = file.Default
	}
	return out
}

// listenDNS opens UDP and TCP on the same address; with port 0, the TCP
// port follows the UDP one.
func listenDNS(addr string) (net.PacketConn, net.Listener, error) {
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp %s: %w", addr, err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" || attempt == 5 {
			return nil, nil, fmt.Errorf("listen tcp %s: %w", addr, err)
		}
	}
}

// watchFile calls fn whenever path's modification time or size changes,
// polling every second (the file is replaced by rename, which inotify
// watches on the file itself would miss).
func watchFile(ctx context.Context, path string, fn func()) {
	stat := func() (time.Time, int64, error) {
		st, err := os.Stat(path)
		if err != nil {
			return time.Time{}, 0, err
		}
		return st.ModTime(), st.Size(), nil
	}
	mt, size, _ := stat()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m, s, err := stat()
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if !m.Equal(mt) || s != size {
			mt, size = m, s
			fn()
		}
	}
}
