package programs

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// pageSize is the unit memory-hog touches: one write per page makes the
// kernel back it with real memory (and charge it to the cgroup).
var pageSize = os.Getpagesize()

// runMemoryHog allocates --size (env SIZE, a Kubernetes quantity such as
// 256Mi) in steps of --rate per second (env RATE, default 16Mi), writing to
// every page so that the memory is really used, logs its progress, and then
// holds it until stopped. Under a memory limit below --size the kernel's
// OOM killer ends it, as it ends a leaking service.
func runMemoryHog(ctx context.Context, env Env, args []string) error {
	fs := flagSet(MemoryHog)
	sizeFlag := fs.String("size", "", "total to allocate, e.g. 256Mi (default $SIZE)")
	rateFlag := fs.String("rate", "", "allocation per second, e.g. 16Mi (default $RATE or 16Mi)")
	if err := parse(fs, args); err != nil {
		return err
	}
	size, err := quantity("--size", firstNonEmpty(*sizeFlag, env.getenv("SIZE")))
	if err != nil {
		return err
	}
	rate, err := quantity("--rate", firstNonEmpty(*rateFlag, env.getenv("RATE"), "16Mi"))
	if err != nil {
		return err
	}
	log := env.logger()
	log.Info("allocating", "size", size, "per_second", rate)
	var held [][]byte
	var total int64
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for total < size {
		step := min(rate, size-total)
		b := make([]byte, step)
		for i := 0; i < len(b); i += pageSize {
			b[i] = 1
		}
		held = append(held, b)
		total += step
		log.Info("allocated", "bytes", total, "mib", total>>20)
		if total >= size {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
	log.Info("holding", "bytes", total, "chunks", len(held))
	<-ctx.Done()
	// Keep the memory reachable until the end.
	_ = len(held)
	return nil
}

// quantity parses a positive Kubernetes quantity into bytes.
func quantity(flag, s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("%s: required (a quantity such as 256Mi)", flag)
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w", flag, s, err)
	}
	v := q.Value()
	if v <= 0 {
		return 0, fmt.Errorf("%s %q: must be positive", flag, s)
	}
	return v, nil
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if strings.TrimSpace(v) != "" {
			return v
		}
	}
	return ""
}
