package runtime

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probe runs the container's readiness probe until ctx ends, as the
// kubelet's prober does: after initialDelaySeconds, every periodSeconds,
// with timeoutSeconds, and successThreshold/failureThreshold consecutive
// results to change readiness. Probes connect from the node network, where
// pod IPs are routed. Only tcpSocket and httpGet probes are run; a probe of
// another kind counts as passing.
func (cr *containerRun) probe(ctx context.Context) {
	p := cr.spec.ReadinessProbe
	if p == nil {
		return
	}
	period := seconds(p.PeriodSeconds, 10)
	timeout := seconds(p.TimeoutSeconds, 1)
	success := max(int(p.SuccessThreshold), 1)
	failure := max(int(p.FailureThreshold), 1)
	if p.FailureThreshold == 0 {
		failure = 3
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
	}
	var ok, bad int
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		err := cr.probeOnce(ctx, p, timeout)
		if ctx.Err() != nil {
			return
		}
		cr.mu.Lock()
		ready := cr.ready
		cr.mu.Unlock()
		if err == nil {
			ok, bad = ok+1, 0
			if !ready && ok >= success {
				cr.set(func() { cr.ready = true })
			}
		} else {
			ok, bad = 0, bad+1
			cr.rt.log.Debug("readiness probe failed", "pod", cr.pod.key, "container", cr.spec.Name, "err", err)
			if ready && bad >= failure {
				cr.set(func() { cr.ready = false })
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func seconds(v int32, def int) time.Duration {
	if v <= 0 {
		return time.Duration(def) * time.Second
	}
	return time.Duration(v) * time.Second
}

// probeOnce runs one probe attempt.
func (cr *containerRun) probeOnce(ctx context.Context, p *corev1.Probe, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := cr.rt.opts.Network.DialContext
	switch {
	case p.TCPSocket != nil:
		port, err := cr.port(p.TCPSocket.Port)
		if err != nil {
			return err
		}
		host := cr.podIP.String()
		if p.TCPSocket.Host != "" {
			host = p.TCPSocket.Host
		}
		c, err := dial(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return c.Close()
	case p.HTTPGet != nil:
		g := p.HTTPGet
		port, err := cr.port(g.Port)
		if err != nil {
			return err
		}
		host := cr.podIP.String()
		if g.Host != "" {
			host = g.Host
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			return fmt.Errorf("httpGet probes over HTTPS are not supported in the lab")
		}
		path := g.Path
		if path == "" {
			path = "/"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "kube-probe/1.37")
		for _, h := range g.HTTPHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		tr := &http.Transport{DialContext: dial, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: timeout}).Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	}
	return nil
}

// port resolves a probe port, by number or by the container's port name.
func (cr *containerRun) port(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range cr.spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container has no port named %q", p.StrVal)
}
