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

// serveContainerLogs answers like the kubelet: the log's lines (all, or
// the last tailLines), then with follow=true new lines as they are
// written, until the container's run ends or the client goes away.
func (s *simulator) serveContainerLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ns, name, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	follow := q.Get("follow") == "true"
	previous := q.Get("previous") == "true"
	tail := -1
	if v := q.Get("tailLines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, fmt.Sprintf("tailLines must be a non-negative integer, got %q", v), http.StatusBadRequest)
			return
		}
		tail = n
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
	if tail >= 0 {
		if err := seekTail(f, tail); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	if _, err := io.Copy(w, f); err != nil {
		return
	}
	if !follow || !running {
		return
	}
	fl, _ := w.(http.Flusher)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if fl != nil {
			fl.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		if _, err := io.Copy(w, f); err != nil {
			return
		}
		// The run ended when the current log is another file now, or the
		// container no longer runs.
		cur, still, err := s.realContainerLog(ns, name, container, false)
		if err != nil || cur != path || !still {
			_, _ = io.Copy(w, f)
			return
		}
	}
}

// seekTail positions f at the start of its last n lines. It reads the file
// from the start: lab logs are small, and a backwards scan is not worth
// its complexity here.
func seekTail(f *os.File, n int) error {
	var offsets []int64
	var off int64
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			offsets = append(offsets, off)
			off += int64(len(line))
		}
		if err != nil {
			break
		}
	}
	start := int64(0)
	switch {
	case n == 0:
		start = off
	case n < len(offsets):
		start = offsets[len(offsets)-n]
	}
	_, err := f.Seek(start, io.SeekStart)
	return err
}
