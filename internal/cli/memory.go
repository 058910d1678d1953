package cli

import (
	"os"
	"runtime/debug"
)

// softMemoryLimit is the heap size doctor and dump ask the Go garbage
// collector to stay under, unless GOMEMLIMIT is set. Reading a 30,000-pod
// cluster leaves about 300 MB live; with the default GOGC the heap would
// grow to twice that before a collection. A soft limit makes the collector
// run earlier instead (measured: peak RSS 590 MB → 470-490 MB, same wall
// time; docs/performance.md). It is soft: a larger cluster still fits, at
// the cost of more frequent collections, never of an out-of-memory error.
const softMemoryLimit = 384 << 20

// limitMemory applies softMemoryLimit unless the user chose a limit.
func limitMemory() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(softMemoryLimit)
	}
}
