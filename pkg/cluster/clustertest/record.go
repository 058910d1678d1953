package clustertest

import (
	"fmt"
	"runtime"
	"testing"
)

// Recorder is a testing.TB that records failures instead of failing, for
// the tests of test helpers: they must fail a test when they should, and
// only then. Only the methods such helpers call are implemented; the others
// panic.
type Recorder struct {
	testing.TB
	// Errors holds the message of every failure, in order.
	Errors []string
	// Stopped says whether a failure stopped the function (Fatalf).
	Stopped bool
}

// Helper does nothing.
func (r *Recorder) Helper() {}

// Logf does nothing.
func (r *Recorder) Logf(string, ...any) {}

// Errorf records a failure.
func (r *Recorder) Errorf(format string, args ...any) {
	r.Errors = append(r.Errors, fmt.Sprintf(format, args...))
}

// Fatalf records a failure and stops the function Record runs, as
// testing.T.Fatalf stops a test.
func (r *Recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.Stopped = true
	runtime.Goexit()
}

// Record runs fn against a Recorder in its own goroutine, as package
// testing runs a test, so that Fatalf can stop it, and returns the
// Recorder once fn has returned or stopped.
func Record(fn func(tb testing.TB)) *Recorder {
	r := &Recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}
