// Package programs holds the lab's built-in programs: the processes that
// run in place of container images named kdiag.io/lab/<name>. Each one is
// small and does one thing the seed's scenarios need (serve HTTP, call
// services, resolve names, use memory, be a misbehaving upstream DNS
// server) and logs what it sees, so that `kubectl logs` shows the symptom
// the way a real application would.
//
// A program runs as `kdiag lab program NAME [args]`; Resolver maps a pod's
// container to that command line with the container's args and
// environment, plus the pod's DNS configuration (see EnvDNSServer).
package programs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"
)

// Env is what a program gets from its process.
type Env struct {
	// Vars is the environment as KEY=VALUE; nil means the process's own.
	Vars []string
	// Out receives the program's log (its container log).
	Out io.Writer
}

// environ returns the environment as KEY=VALUE.
func (e Env) environ() []string {
	if e.Vars == nil {
		return os.Environ()
	}
	return e.Vars
}

// getenv returns the last value of k in the environment.
func (e Env) getenv(k string) string {
	v := ""
	for _, kv := range e.environ() {
		if key, val, ok := strings.Cut(kv, "="); ok && key == k {
			v = val
		}
	}
	return v
}

// logger logs text lines to e.Out.
func (e Env) logger() *slog.Logger {
	out := e.Out
	if out == nil {
		out = io.Discard
	}
	return slog.New(slog.NewTextHandler(out, nil))
}

// Program is one built-in program.
type Program struct {
	// Name is the image name after kdiag.io/lab/ and the subcommand name.
	Name string
	// Short says what it does, for help output.
	Short string
	// Run runs the program until ctx ends (nil error) or it fails.
	Run func(ctx context.Context, env Env, args []string) error
}

// All returns every built-in program, sorted by name.
func All() []Program {
	ps := []Program{
		{Name: HTTPServer, Short: "serve HTTP on a port, log each request, optionally resolve names periodically", Run: runHTTPServer},
		{Name: HTTPClient, Short: "call URLs every interval, log each failure", Run: runHTTPClient},
		{Name: DNSClient, Short: "resolve names every interval through the pod's nameserver, log each failure", Run: runDNSClient},
		{Name: MemoryHog, Short: "allocate and touch memory up to a size at a rate", Run: runMemoryHog},
		{Name: UpstreamDNS, Short: "a DNS server that answers some names, SERVFAILs some and silently drops others", Run: runUpstreamDNS},
	}
	slices.SortFunc(ps, func(a, b Program) int { return strings.Compare(a.Name, b.Name) })
	return ps
}

// Names of the built-in programs.
const (
	HTTPServer  = "http-server"
	HTTPClient  = "http-client"
	DNSClient   = "dns-client"
	MemoryHog   = "memory-hog"
	UpstreamDNS = "upstream-dns"
)

// Get returns the program called name.
func Get(name string) (Program, bool) {
	for _, p := range All() {
		if p.Name == name {
			return p, true
		}
	}
	return Program{}, false
}

// Run runs the named program.
func Run(ctx context.Context, name string, env Env, args []string) error {
	p, ok := Get(name)
	if !ok {
		known := make([]string, 0, len(All()))
		for _, p := range All() {
			known = append(known, p.Name)
		}
		return fmt.Errorf("unknown lab program %q (known: %s)", name, strings.Join(known, ", "))
	}
	if err := p.Run(ctx, env, args); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// flagSet returns a flag set that reports errors instead of exiting.
// Programs use the standard library's flag package: their command lines
// come from pod specs, and stdlib flags are all they need.
func flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses args and turns -h into a usage error naming the flags.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
		if errors.Is(err, flag.ErrHelp) {
			return fmt.Errorf("flags: %s", strings.Join(names, ", "))
		}
		return fmt.Errorf("%w (flags: %s)", err, strings.Join(names, ", "))
	}
	return nil
}

// envDuration returns the duration in the environment variable k, or def.
func envDuration(env Env, k string, def time.Duration) (time.Duration, error) {
	s := strings.TrimSpace(env.getenv(k))
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%q: not a positive duration", k, s)
	}
	return d, nil
}

// listFlag is a repeatable flag collecting values; comma- or space-
// separated values are split.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

// Set appends the values in s.
func (l *listFlag) Set(s string) error {
	*l = append(*l, splitList(s)...)
	return nil
}

// splitList splits on commas and white space.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// rateLimiter says whether a success for a key should be logged: the
// first one, then at most one per period, with the count since the last.
type rateLimiter struct {
	period time.Duration
	last   map[string]time.Time
	count  map[string]int
}

func newRateLimiter(period time.Duration) *rateLimiter {
	return &rateLimiter{period: period, last: map[string]time.Time{}, count: map[string]int{}}
}

// allow counts one event for key and returns whether to log it, and how
// many events (this one included) the log line stands for.
func (r *rateLimiter) allow(key string, now time.Time) (bool, int) {
	r.count[key]++
	last, seen := r.last[key]
	if seen && now.Sub(last) < r.period {
		return false, 0
	}
	n := r.count[key]
	r.last[key], r.count[key] = now, 0
	return true, n
}

// every calls fn now and then every interval until ctx ends; a call that
// takes longer than interval delays the next (no overlap).
func every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		fn(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
