package kubelet

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/kdiag/kdiag/pkg/lab"
	"github.com/kdiag/kdiag/pkg/lab/runtime"
)

// logServer serves the part of the kubelet API that `kubectl logs` uses,
// GET /containerLogs/{namespace}/{pod}/{container} with follow, tailLines
// and previous, over TLS on every node's InternalIP at one port. Clients
// must present a certificate from the lab CA (the API server does).
type logServer struct {
	port    int
	servers []*http.Server
}

// newLogServer listens on the nodes' InternalIPs. The port is picked free
// on the first node's address (labs share the 127.0.1.x addresses, so each
// lab gets its own port) and then taken on every other one.
func newLogServer(ctx context.Context, s *simulator, l lab.Layout) (*logServer, error) {
	cert, err := tls.LoadX509KeyPair(l.PKIFile(lab.KubeletServingName+".crt"), l.PKIFile(lab.KubeletServingName+".key"))
	if err != nil {
		return nil, fmt.Errorf("kubelet: serving certificate: %w", err)
	}
	caPEM, err := os.ReadFile(l.CA())
	if err != nil {
		return nil, fmt.Errorf("kubelet: lab CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("kubelet: lab CA does not parse")
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", s.serveContainerLogs)

	var lastErr error
	for range 10 {
		ls, port, err := listenNodes(s, 0)
		if err != nil {
			lastErr = err
			continue
		}
		srv := &logServer{port: port}
		for _, l := range ls {
			hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
			srv.servers = append(srv.servers, hs)
			go func() { _ = hs.Serve(tls.NewListener(l, tlsCfg)) }()
		}
		go func() {
			<-ctx.Done()
			for _, hs := range srv.servers {
				_ = hs.Close()
			}
		}()
		return srv, nil
	}
	return nil, fmt.Errorf("kubelet: listen for the logs API on the nodes' addresses: %w", lastErr)
}

// listenNodes listens on port (0: a free one) of every node's InternalIP.
func listenNodes(s *simulator, port int) ([]net.Listener, int, error) {
	var ls []net.Listener
	for i := 1; i <= s.opts.Nodes; i++ {
		l, err := net.Listen("tcp", net.JoinHostPort(NodeInternalIP(i).String(), strconv.Itoa(port)))
		if err != nil {
			for _, l := range ls {
				_ = l.Close()
			}
			return nil, 0, err
		}
		if port == 0 {
			port = l.Addr().(*net.TCPAddr).Port
		}
		ls = append(ls, l)
	}
	return ls, port, nil
}

// serveContainerLogs answers like the kubelet: the log's lines (all, the
// last tailLines, or those since sinceSeconds/sinceTime), with their time
// stamps when timestamps=true, then with follow=true new lines as they are
// written, until the container's run ends or the client goes away.
func (s *simulator) serveContainerLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ns, name, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	opts := logOptions{follow: q.Get("follow") == "true", timestamps: q.Get("timestamps") == "true", tail: -1}
	previous := q.Get("previous") == "true"
	if v := q.Get("tailLines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, fmt.Sprintf("tailLines must be a non-negative integer, got %q", v), http.StatusBadRequest)
			return
		}
		opts.tail = n
	}
	if v := q.Get("sinceSeconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			http.Error(w, fmt.Sprintf("sinceSeconds must be a positive integer, got %q", v), http.StatusBadRequest)
			return
		}
		opts.since = s.now().Add(-time.Duration(n) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			http.Error(w, fmt.Sprintf("sinceTime must be an RFC 3339 time, got %q", v), http.StatusBadRequest)
			return
		}
		opts.since = t
	}
	path, running, err := s.realContainerLog(ns, name, container, previous)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, fmt.Sprintf("open log of container %s: %v", container, err), http.StatusNotFound)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain")
	more := func() bool {
		if !opts.follow || !running {
			return false
		}
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		select {
		case <-r.Context().Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
		// The run ended when the current log is another file now, or the
		// container no longer runs; what it wrote last is still read.
		cur, still, err := s.realContainerLog(ns, name, container, false)
		running = err == nil && cur == path && still
		return true
	}
	_ = copyLog(w, bufio.NewReader(f), opts, more)
}

// logOptions select what copyLog writes.
type logOptions struct {
	follow, timestamps bool
	tail               int       // last lines; -1: all
	since              time.Time // zero: all
}

// copyLog writes the log's lines selected by opts. At the end of what is
// written so far it asks more whether to wait for further lines (follow).
func copyLog(w io.Writer, r *bufio.Reader, opts logOptions, more func() bool) error {
	var tail []runtime.LogLine // the last opts.tail lines, until the first end of file
	first := true
	var partial []byte
	for {
		b, err := r.ReadBytes('\n')
		if len(b) > 0 && b[len(b)-1] != '\n' {
			partial = append(partial, b...) // a line being written
			b = nil
		} else if len(b) > 0 {
			if len(partial) > 0 {
				b = append(partial, b...)
				partial = nil
			}
			line, perr := runtime.ParseLogLine(b[:len(b)-1])
			if perr == nil && (opts.since.IsZero() || !line.Time.Before(opts.since)) {
				if first && opts.tail >= 0 {
					tail = append(tail, line)
					if len(tail) > opts.tail {
						tail = tail[1:]
					}
				} else if err := line.WriteContent(w, opts.timestamps); err != nil {
					return err
				}
			}
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		if first {
			first = false
			for _, l := range tail {
				if err := l.WriteContent(w, opts.timestamps); err != nil {
					return err
				}
			}
			tail = nil
		}
		if !more() {
			return nil
		}
	}
}
