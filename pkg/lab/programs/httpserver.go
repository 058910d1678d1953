package programs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultPort is the port http-server (and http-client's health endpoint)
// listens on without --port or PORT.
const DefaultPort = 8080

// successLogPeriod is how often a steady success is logged again.
const successLogPeriod = 30 * time.Second

// runHTTPServer serves HTTP on --port (env PORT): 200 with a short text on
// every path, /health included, and one log line per request. With
// --resolve (env RESOLVE_HOSTS) it also resolves those names every
// --resolve-interval (env RESOLVE_INTERVAL) through the pod's nameserver and
// logs each failure, as a service whose dependency lookups fail does.
func runHTTPServer(ctx context.Context, env Env, args []string) error {
	fs := flagSet(HTTPServer)
	port := fs.Int("port", 0, "port to listen on (default $PORT or 8080)")
	listen := fs.String("address", "", "address to listen on (default all)")
	var resolve listFlag
	fs.Var(&resolve, "resolve", "host name to resolve periodically (repeatable; also $RESOLVE_HOSTS)")
	resolveEvery := fs.Duration("resolve-interval", 0, "how often to resolve (default $RESOLVE_INTERVAL or 5s)")
	if err := parse(fs, args); err != nil {
		return err
	}
	p, err := portFrom(env, *port, DefaultPort)
	if err != nil {
		return err
	}
	resolve = append(resolve, splitList(env.getenv("RESOLVE_HOSTS"))...)
	interval := *resolveEvery
	if interval == 0 {
		if interval, err = envDuration(env, "RESOLVE_INTERVAL", 5*time.Second); err != nil {
			return err
		}
	}
	var lookup *Lookup
	if len(resolve) > 0 {
		var ok bool
		if lookup, ok, err = LookupFromEnv(env.getenv); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("--resolve needs a nameserver: set %s", EnvDNSServer)
		}
	}
	log := env.logger()
	ln, err := net.Listen("tcp", net.JoinHostPort(*listen, strconv.Itoa(p)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	host, _ := os.Hostname()
	if h := env.getenv("HOSTNAME"); h != "" {
		host = h
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Info("request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		fmt.Fprintf(w, "%s: ok\n", host)
	})
	// Probes are answered without a log line each, as most services do.
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("listening", "address", ln.Addr().String())

	if len(resolve) > 0 {
		go resolveLoop(ctx, log, lookup, resolve, interval)
	}
	return serve(ctx, srv, ln)
}

// serve runs srv on ln until ctx ends, then shuts it down.
func serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

// portFrom returns flag, else $PORT, else def.
func portFrom(env Env, flag, def int) (int, error) {
	if flag != 0 {
		if flag < 0 || flag > 65535 {
			return 0, fmt.Errorf("--port %d: not a port", flag)
		}
		return flag, nil
	}
	s := strings.TrimSpace(env.getenv("PORT"))
	if s == "" {
		return def, nil
	}
	p, err := strconv.Atoi(s)
	if err != nil || p <= 0 || p > 65535 {
		return 0, fmt.Errorf("PORT=%q: not a port", s)
	}
	return p, nil
}

// resolveLoop resolves names every interval, logging each failure and
// successes at most every successLogPeriod per name.
func resolveLoop(ctx context.Context, log *slog.Logger, lookup *Lookup, names []string, interval time.Duration) {
	ok := newRateLimiter(successLogPeriod)
	every(ctx, interval, func(ctx context.Context) {
		for _, name := range names {
			start := time.Now()
			addrs, err := lookup.LookupHost(ctx, name)
			if ctx.Err() != nil {
				return
			}
			took := time.Since(start).Round(time.Millisecond)
			if err != nil {
				log.Warn("resolve failed", "name", name, "took", took, "err", err.Error())
				continue
			}
			if logIt, n := ok.allow(name, time.Now()); logIt {
				log.Info("resolved", "name", name, "addresses", fmt.Sprint(addrs), "took", took, "lookups", n)
			}
		}
	})
}
