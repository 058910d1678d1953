package disk

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkWalk walks a tree of 20,000 small files in 400 directories
// (warm page cache) and reports the entries looked at per second: the
// rate that, with the entry bound, sets how long a walk of a real node's
// /var/lib/containerd takes at most.
func BenchmarkWalk(b *testing.B) {
	root := b.TempDir()
	for d := range 400 {
		dir := filepath.Join(root, fmt.Sprintf("d%02d", d%20), fmt.Sprintf("e%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := range 50 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d", f)), []byte("x"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	fss, errs := Usage([]string{root})
	if len(errs) > 0 {
		b.Fatal(errs)
	}
	var s Scan
	for b.Loop() {
		s = Walk(context.Background(), fss[0], Limits{})
	}
	if s.Truncated != "" || s.Entries < 20_000 {
		b.Fatalf("walk: %d entries, truncated %q; want the whole tree", s.Entries, s.Truncated)
	}
	b.ReportMetric(float64(s.Entries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
