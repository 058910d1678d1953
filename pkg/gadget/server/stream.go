package server

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/render"
	"github.com/kdiag/kdiag/pkg/gadget/wire"
)

// stream writes a session's response. The gadget's callback only queues
// each event; a writer goroutine encodes what has queued (with render's
// JSON writer: the same JSON as -o json), sends it and flushes, so that
// events are batched while the network is busy and sent at once when it
// is idle. The gadget's reader thus never waits for the encoding or the
// network, which run on another core: a slow client would otherwise fill
// the kernel ring buffer. Beyond its bound the queue drops events, counted
// and reported like the kernel's losses.
//
// The gadget's callback, OnLost, the progress ticker and the writer run on
// different goroutines, hence the mutex.
type stream struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	node  string
	limit int

	mu      sync.Mutex
	pending []func(*render.Writer) error // events and control lines, in order
	spare   []func(*render.Writer) error
	events  uint64
	dropped uint64
	lostN   uint64
	missed  uint64
	err     error
	closing bool

	wake    chan struct{}
	stopped chan struct{}
	onError func()
}

func newStream(w http.ResponseWriter, node string, limit int) *stream {
	return &stream{w: w, rc: http.NewResponseController(w), node: node, limit: limit,
		wake: make(chan struct{}, 1), stopped: make(chan struct{})}
}

// start runs the writer; close stops it.
func (s *stream) start() { go s.writer() }

// event queues one event, or counts it as dropped when the queue is full.
func (s *stream) event(write func(*render.Writer) error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	if len(s.pending) >= s.limit {
		s.dropped++
		s.mu.Unlock()
		return
	}
	s.events++
	s.pending = append(s.pending, write)
	s.mu.Unlock()
	s.signal()
}

func (s *stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *stream) lost(lost, missed uint64) {
	s.mu.Lock()
	s.lostN, s.missed = lost, missed
	s.mu.Unlock()
	s.control(wire.Control{Stream: wire.KindLost})
}

// control queues a control line (never dropped), with the counts so far
// when c carries no Stats.
func (s *stream) control(c wire.Control) {
	s.mu.Lock()
	s.controlLocked(c)
	s.mu.Unlock()
	s.signal()
}

func (s *stream) controlLocked(c wire.Control) {
	c.Node = s.node
	if c.Stats == nil {
		c.Stats = &gadget.Stats{Events: s.events, Lost: s.lostN, Missed: s.missed}
	}
	c.Dropped = s.dropped
	s.pending = append(s.pending, func(w *render.Writer) error { return w.JSON(c) })
}

// writer encodes and sends the queue until close; it reports drops as
// they grow, at most once per batch.
func (s *stream) writer() {
	defer close(s.stopped)
	var buf bytes.Buffer
	enc := render.NewWriter(&buf, render.JSON, nil)
	reported := uint64(0)
	for {
		<-s.wake
		s.mu.Lock()
		if s.dropped > reported {
			reported = s.dropped
			s.controlLocked(wire.Control{Stream: wire.KindLost})
		}
		batch := s.pending
		s.pending, s.spare = s.spare[:0], nil
		closing, failed := s.closing, s.err != nil
		s.mu.Unlock()

		var err error
		if !failed {
			for _, write := range batch {
				if err = write(enc); err != nil {
					break
				}
			}
			if err == nil && buf.Len() > 0 {
				if _, err = s.w.Write(buf.Bytes()); err == nil {
					err = s.rc.Flush()
				}
			}
		}
		buf.Reset()
		clear(batch)
		s.mu.Lock()
		s.spare = batch[:0]
		if err != nil {
			s.setErrLocked(err)
		}
		more := len(s.pending) > 0 && s.err == nil
		s.mu.Unlock()
		if more {
			s.signal()
			continue
		}
		if closing {
			return
		}
	}
}

// close sends what is queued and stops the writer started by start:
// nothing may write to the ResponseWriter once the handler has returned.
func (s *stream) close() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.signal()
	<-s.stopped
	s.mu.Lock()
	if s.err == nil {
		s.err = errClosed
	}
	s.mu.Unlock()
}

var errClosed = errors.New("stream closed")

// setErrLocked records the first write error (the client went away) and
// stops the trace.
func (s *stream) setErrLocked(err error) {
	if err == nil || s.err != nil {
		return
	}
	s.err = err
	if s.onError != nil {
		s.onError()
	}
}

// tick sends progress lines until ctx ends or the returned stop is called.
func (s *stream) tick(ctx context.Context, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.control(wire.Control{Stream: wire.KindProgress})
			}
		}
	}()
	return func() { cancel(); <-done }
}
