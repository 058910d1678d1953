package programs

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// runHTTPClient calls each URL every --interval (env INTERVAL, default 1s)
// and logs every failure with its error text ("connection refused") and
// successes at most every 30s per URL. URLs come from the arguments, or
// else from every environment variable whose name ends in _URL (sorted by
// name), as a service reads its dependencies' addresses. Host names are
// resolved through the pod's nameserver (EnvDNSServer) when it is set.
// With --port (env PORT) it also answers /health there, for probes.
func runHTTPClient(ctx context.Context, env Env, args []string) error {
	fs := flagSet(HTTPClient)
	interval := fs.Duration("interval", 0, "time between rounds of calls (default $INTERVAL or 1s)")
	timeout := fs.Duration("timeout", 2*time.Second, "timeout of one call")
	port := fs.Int("port", 0, "port of the /health endpoint (default $PORT; none without either)")
	if err := parse(fs, args); err != nil {
		return err
	}
	urls := fs.Args()
	if len(urls) == 0 {
		urls = urlsFromEnv(env)
	}
	if len(urls) == 0 {
		return fmt.Errorf("no URL: pass them as arguments or set environment variables ending in _URL")
	}
	for _, u := range urls {
		if p, err := url.Parse(u); err != nil || p.Host == "" || (p.Scheme != "http" && p.Scheme != "https") {
			return fmt.Errorf("%q: not an http(s) URL", u)
		}
	}
	var err error
	if *interval == 0 {
		if *interval, err = envDuration(env, "INTERVAL", time.Second); err != nil {
			return err
		}
	}
	log := env.logger()
	lookup, _, err := LookupFromEnv(env.getenv)
	if err != nil {
		return err
	}
	d := &dialer{lookup: lookup, net: net.Dialer{Timeout: *timeout}}
	client := &http.Client{
		Timeout:   *timeout,
		Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 1},
	}
	defer client.CloseIdleConnections()

	if *port != 0 || env.getenv("PORT") != "" {
		p, err := portFrom(env, *port, 0)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(p)))
		if err != nil {
			return fmt.Errorf("listen for health checks: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = serve(ctx, srv, ln) }()
	}
	log.Info("calling", "urls", strings.Join(urls, " "), "interval", interval.String())
	ok := newRateLimiter(successLogPeriod)
	every(ctx, *interval, func(ctx context.Context) {
		for _, u := range urls {
			status, err := call(ctx, client, u)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				log.Warn("request failed", "url", u, "err", err.Error())
				continue
			}
			if logIt, n := ok.allow(u, time.Now()); logIt {
				log.Info("request succeeded", "url", u, "status", status, "requests", n)
			}
		}
	})
	return nil
}

// call GETs u and returns the status; a status of 400 or more is an error.
func call(ctx context.Context, client *http.Client, u string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 400 {
		return resp.StatusCode, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return resp.StatusCode, nil
}

// urlsFromEnv returns the values of the environment variables ending in
// _URL, sorted by variable name.
func urlsFromEnv(env Env) []string {
	var names []string
	for _, kv := range env.environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasSuffix(k, "_URL") {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var out []string
	for _, k := range names {
		if v := strings.TrimSpace(env.getenv(k)); v != "" {
			out = append(out, v)
		}
	}
	return out
}
