package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"testing"

	"github.com/kdiag/kdiag/pkg/gadget/render"
	"github.com/kdiag/kdiag/pkg/gadget/wire"
)

// blockingWriter is a ResponseWriter whose writes wait until released,
// like a client (through the API server) that does not keep up.
type blockingWriter struct {
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	buf     bytes.Buffer
	header  http.Header
}

func (w *blockingWriter) Header() http.Header { return w.header }
func (w *blockingWriter) WriteHeader(int)     {}
func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}
func (w *blockingWriter) Flush() {}

// A stream whose client stalls never blocks the gadget's reader: events
// beyond the queue are dropped, and every one is accounted for, as sent or
// in the dropped count of a lost line and of the final line.
func TestStreamDropsAndCountsWhenTheClientStalls(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{}), header: http.Header{}}
	s := newStream(w, "n1", 10)
	s.start()
	s.control(wire.Control{Stream: wire.KindStart})
	const n = 100
	for i := range n {
		// The reader side: must return at once even though Write blocks.
		s.event(func(w *render.Writer) error { return w.JSON(map[string]int{"time": i}) })
	}
	close(w.release)
	s.control(wire.Control{Stream: wire.KindEnd})
	s.close()

	var events int
	var end, lost *wire.Control
	sc := bufio.NewScanner(&w.buf)
	for sc.Scan() {
		if !wire.IsControl(sc.Bytes()) {
			events++
			continue
		}
		var c wire.Control
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("%s: %v", sc.Bytes(), err)
		}
		switch c.Stream {
		case wire.KindLost:
			lost = &c
		case wire.KindEnd:
			end = &c
		}
	}
	if end == nil || lost == nil {
		t.Fatalf("want a lost line and the final line; got lost=%v end=%v:\n%s", lost, end, w.buf.String())
	}
	if end.Dropped == 0 || uint64(events)+end.Dropped != n || end.Stats.Events != uint64(events) {
		t.Errorf("%d events sent, final line %+v (stats %+v): want sent + dropped = %d, dropped > 0", events, *end, *end.Stats, n)
	}
	if lost.Dropped == 0 {
		t.Errorf("lost line without the dropped count: %+v", *lost)
	}
}
