package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// forwardAPIServer accepts connections on listen (the node network link's
// host address) and relays each to target (the API server on 127.0.0.1),
// byte for byte: TLS goes end to end, the forwarder sees none of it. It
// serves until ctx ends. Pods and kube-proxy reach the API server this way
// while host clients keep using 127.0.0.1 (see lab.DataPlane). It is
// hand-written: a TCP relay is two io.Copy calls.
func forwardAPIServer(ctx context.Context, listen, target string, log *slog.Logger) error {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", listen)
	if err != nil {
		return fmt.Errorf("kubelet: forward the API server to the node network: %w", err)
	}
	var wg sync.WaitGroup
	go func() {
		<-ctx.Done()
		_ = l.Close()
	}()
	go func() {
		defer wg.Wait()
		for {
			c, err := l.Accept()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
					log.Error("API server forwarder stopped", "listen", listen, "err", err)
				}
				return
			}
			wg.Go(func() { relay(ctx, c, target, log) })
		}
	}()
	return nil
}

// relay copies between c and a new connection to target until both
// directions are done or ctx ends.
func relay(ctx context.Context, c net.Conn, target string, log *slog.Logger) {
	defer c.Close()
	d := net.Dialer{Timeout: 10 * time.Second}
	up, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		log.Warn("API server forwarder: dial", "target", target, "err", err)
		return
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() {
		_ = c.Close()
		_ = up.Close()
	})
	defer stop()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}
