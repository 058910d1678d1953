// Package server is the node agent's gadget server: GET
// /gadgets/{tcp,dns,oomkill} runs that gadget on the agent's node with the
// request's filters and streams its events as JSON lines (the protocol is
// in package wire). The CLI reaches it through the API server's pod proxy
// (package remote), so no port is exposed beyond the agent's own.
//
// Each request is one trace session with its own BPF programs. Sessions
// are limited (Options.MaxSessions); the Kubernetes informers that name
// pods are started by the first session and kept for Options.Linger after
// the last one ends, so that an idle agent holds no cluster-wide pod list.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kdiag/kdiag/pkg/enrich"
	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/dns"
	"github.com/kdiag/kdiag/pkg/gadget/internal/kernel"
	"github.com/kdiag/kdiag/pkg/gadget/oomkill"
	"github.com/kdiag/kdiag/pkg/gadget/render"
	"github.com/kdiag/kdiag/pkg/gadget/tcp"
	"github.com/kdiag/kdiag/pkg/gadget/wire"
)

// Options configure a Server.
type Options struct {
	// Node is the agent's node; every event carries it in k8s.node.
	Node string
	// NewSource starts what names pods and Services (normally
	// enrich.NewInformerSource for this node, resolving remote IPs); it
	// must stop when ctx ends. Nil means events carry no Kubernetes names
	// and filters are refused.
	NewSource func(ctx context.Context) (enrich.Source, error)
	// ProcRoot is the host's /proc (default /proc). Events carry host PIDs,
	// so an agent in a container without the host PID namespace reads the
	// host's /proc mounted elsewhere (deploy/agent: /host/proc).
	ProcRoot string
	// Cgroup2Roots are candidate mount points of the host's cgroup2
	// hierarchy; the first that is a cgroup2 mount is used to map cgroup
	// ids to pods. Empty, or none a cgroup2 mount: discovered from the
	// mount table (which in a container shows its own cgroup namespace).
	Cgroup2Roots []string
	// MaxSessions limits concurrent traces (default 4); more get 429.
	MaxSessions int
	// Linger keeps the source after the last session ends (default 2m),
	// so that a trace started again soon does not list the pods again.
	Linger time.Duration
	// Progress is how often a progress line is sent (default 5s); it also
	// keeps idle streams alive through proxies.
	Progress time.Duration
	// QueueEvents bounds the events waiting to be encoded and sent
	// (default 32768, a few MiB). The gadget's reader never waits for the
	// encoding or the network: while the client (through the API server)
	// is slower, events queue here, and beyond the bound they are dropped
	// and counted (wire.Control.Dropped).
	QueueEvents int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Server is an http.Handler for /gadgets/.
type Server struct {
	opts    Options
	log     *slog.Logger
	sem     chan struct{}
	cgroup2 string

	mu     sync.Mutex
	src    *sourceState
	users  int
	linger *time.Timer
}

type sourceState struct {
	done   chan struct{}
	src    enrich.Source
	err    error
	cancel context.CancelFunc
}

// New returns a Server.
func New(opts Options) *Server {
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 4
	}
	if opts.Linger <= 0 {
		opts.Linger = 2 * time.Minute
	}
	if opts.Progress <= 0 {
		opts.Progress = 5 * time.Second
	}
	if opts.QueueEvents <= 0 {
		opts.QueueEvents = 32768
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger, sem: make(chan struct{}, opts.MaxSessions)}
	for _, dir := range opts.Cgroup2Roots {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			s.cgroup2 = dir
			break
		}
	}
	return s
}

// Close stops the source, if one is running. Sessions still running keep
// their own references and end with their requests.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.linger != nil {
		s.linger.Stop()
		s.linger = nil
	}
	if s.src != nil {
		s.src.cancel()
		s.src = nil
	}
}

// httpError is an error with the status the client gets.
type httpError struct {
	code int
	msg  string
}

// Error returns the message sent to the client.
func (e *httpError) Error() string { return e.msg }

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintln(w, fmt.Sprintf(format, args...))
}

// statusOf maps a gadget's start error to an HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, enrich.ErrNoMatch):
		// The request is valid but selects nothing on this node.
		return http.StatusUnprocessableEntity
	case errors.Is(err, kernel.ErrPermission):
		return http.StatusForbidden
	case errors.Is(err, kernel.ErrUnsupported):
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// ServeHTTP runs one trace session.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		fail(w, http.StatusMethodNotAllowed, "%s: only GET", r.Method)
		return
	}
	name := r.URL.Path
	if i := strings.LastIndex(name, wire.PathPrefix); i >= 0 {
		name = name[i+len(wire.PathPrefix):]
	}
	if _, ok := starters()[name]; !ok {
		fail(w, http.StatusNotFound, "no gadget %q on this agent (have: %s)", name, strings.Join(wire.Gadgets(), ", "))
		return
	}
	params, err := wire.ParseParams(r.URL.Query())
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	filter, err := params.Filter()
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		fail(w, http.StatusTooManyRequests, "node %s: %d traces already running on this agent; try again when one ends", s.opts.Node, cap(s.sem))
		return
	}
	if err := s.session(w, r, name, params, filter); err != nil {
		var he *httpError
		if errors.As(err, &he) {
			fail(w, he.code, "%s", he.msg)
			return
		}
		s.log.Warn("gadget session", "gadget", name, "err", err)
	}
}

// session runs the gadget; an *httpError return means nothing was
// written yet.
func (s *Server) session(w http.ResponseWriter, r *http.Request, name string, params wire.Params, filter enrich.Filter) error {
	ctx := r.Context()
	var warning string
	src, release, err := s.source(ctx)
	if err != nil {
		if !filter.Empty() {
			return &httpError{http.StatusServiceUnavailable, fmt.Sprintf("filter %s needs the API server, which the agent cannot read: %v", filter, err)}
		}
		warning = fmt.Sprintf("the agent cannot read pods from the API server (%v); events carry no Kubernetes names", err)
	}
	defer release()
	en := enrich.New(enrich.Options{Source: src, NodeName: s.opts.Node, ProcRoot: s.opts.ProcRoot, Cgroup2Root: s.cgroup2, Logger: s.log})

	out := newStream(w, s.opts.Node, s.opts.QueueEvents)
	opts := gadget.Options{
		Enricher: en, Filter: filter, RingBytes: params.RingMiB << 20, Logger: s.log,
		OnLost: func(lost, missed uint64) { out.lost(lost, missed) },
	}
	g, err := starters()[name](opts, params)
	if err != nil {
		return &httpError{statusOf(err), err.Error()}
	}
	defer g.close()

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	out.onError = cancelRun
	if params.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(runCtx, params.Duration)
		defer cancel()
	}
	w.Header().Set("Content-Type", wire.ContentType)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	out.control(wire.Control{Stream: wire.KindStart, Gadget: name, Filter: filter.String()})
	if warning != "" {
		out.control(wire.Control{Stream: wire.KindWarning, Error: warning})
	}
	out.start()
	stopTicker := out.tick(runCtx, s.opts.Progress)
	st, runErr := g.run(runCtx, out)
	stopTicker()
	end := wire.Control{Stream: wire.KindEnd, Stats: &st}
	if runErr != nil {
		end.Error = runErr.Error()
	}
	out.control(end)
	out.close()
	s.log.Debug("gadget session ended", "gadget", name, "filter", filter.String(), "events", st.Events, "lost", st.Lost, "err", runErr)
	return nil
}

// source returns the shared source, starting it when needed, and a
// release func to call when the session ends (also after an error).
func (s *Server) source(ctx context.Context) (enrich.Source, func(), error) {
	if s.opts.NewSource == nil {
		return nil, func() {}, errors.New("no Kubernetes access configured")
	}
	s.mu.Lock()
	if s.linger != nil {
		s.linger.Stop()
		s.linger = nil
	}
	s.users++
	st := s.src
	if st == nil {
		sctx, cancel := context.WithCancel(context.Background())
		st = &sourceState{done: make(chan struct{}), cancel: cancel}
		s.src = st
		go func() {
			st.src, st.err = s.opts.NewSource(sctx)
			close(st.done)
		}()
	}
	s.mu.Unlock()
	var once sync.Once
	release := func() { once.Do(s.release) }
	select {
	case <-st.done:
	case <-ctx.Done():
		release()
		return nil, func() {}, ctx.Err()
	}
	if st.err != nil {
		s.mu.Lock()
		if s.src == st { // the next session tries again
			s.src = nil
			st.cancel()
		}
		s.mu.Unlock()
		release()
		return nil, func() {}, st.err
	}
	return st.src, release, nil
}

func (s *Server) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users--
	if s.users > 0 || s.src == nil {
		return
	}
	st := s.src
	s.linger = time.AfterFunc(s.opts.Linger, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.users == 0 && s.src == st {
			st.cancel()
			s.src = nil
		}
	})
}

// running is a started gadget.
type running struct {
	run   func(ctx context.Context, out *stream) (gadget.Stats, error)
	close func()
}

type starter func(gadget.Options, wire.Params) (running, error)

// starters returns the gadgets by name; each is attached when its
// starter returns.
func starters() map[string]starter {
	return map[string]starter{
		wire.TCP: func(o gadget.Options, p wire.Params) (running, error) {
			t, err := tcp.New(tcp.Options{Options: o, FailuresOnly: p.FailuresOnly})
			if err != nil {
				return running{}, err
			}
			return running{
				run: func(ctx context.Context, out *stream) (gadget.Stats, error) {
					return t.Run(ctx, func(ev tcp.Event) { out.event(func(w *render.Writer) error { return w.TCP(ev) }) })
				},
				close: func() { _ = t.Close() },
			}, nil
		},
		wire.DNS: func(o gadget.Options, p wire.Params) (running, error) {
			t, err := dns.New(dns.Options{Options: o, Timeout: p.DNSTimeout, Ports: p.DNSPorts})
			if err != nil {
				return running{}, err
			}
			return running{
				run: func(ctx context.Context, out *stream) (gadget.Stats, error) {
					return t.Run(ctx, func(ev dns.Event) { out.event(func(w *render.Writer) error { return w.DNS(ev) }) })
				},
				close: func() { _ = t.Close() },
			}, nil
		},
		wire.OOMKill: func(o gadget.Options, _ wire.Params) (running, error) {
			t, err := oomkill.New(oomkill.Options{Options: o})
			if err != nil {
				return running{}, err
			}
			return running{
				run: func(ctx context.Context, out *stream) (gadget.Stats, error) {
					return t.Run(ctx, func(ev oomkill.Event) { out.event(func(w *render.Writer) error { return w.OOMKill(ev) }) })
				},
				close: func() { _ = t.Close() },
			}, nil
		},
	}
}

// KubernetesSource returns a NewSource for the agent: informers on this
// node's pods (to name processes and apply filters) and, when the agent
// may list and watch them, on every pod and Service (to name the far end
// of a connection), with the agent's credentials. The first trace session
// pays for the initial list.
func KubernetesSource(cfg *rest.Config, node string, log *slog.Logger) func(context.Context) (enrich.Source, error) {
	return func(ctx context.Context) (enrich.Source, error) {
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("API client: %w", err)
		}
		return clusterSource(ctx, cs, node, log)
	}
}

// clusterSource starts the informers. Without RBAC for the cluster-wide
// lists, the informers would retry until the sync timeout and every
// filtered trace would fail; so the agent asks first (a
// SelfSubjectAccessReview, which every authenticated user may create) and
// names only this node's pods when it may not.
func clusterSource(ctx context.Context, cs kubernetes.Interface, node string, log *slog.Logger) (enrich.Source, error) {
	remote := true
	for _, res := range []string{"pods", "services"} {
		for _, verb := range []string{"list", "watch"} {
			ok, err := allowed(ctx, cs, verb, res)
			if err != nil || !ok {
				if log != nil {
					log.Warn("trace gadgets: far ends of connections are not named (deploy/agent/rbac.yaml grants this)", "missing", verb+" "+res+" in all namespaces", "err", err)
				}
				remote = false
			}
		}
	}
	src, err := enrich.NewInformerSource(ctx, cs, enrich.InformerOptions{NodeName: node, ResolveRemote: remote, SyncTimeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	return src, nil
}

func allowed(ctx context.Context, cs kubernetes.Interface, verb, resource string) (bool, error) {
	r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: resource}},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("ask the API server whether the agent may %s %s: %w", verb, resource, err)
	}
	return r.Status.Allowed, nil
}
