package diagnose

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// health fills the kubelet and container runtime section.
func (d *Diagnoser) health(ctx context.Context) Health {
	var sec Health
	procs, err := processes(d.opts.ProcDir)
	if err != nil {
		sec.Errors = append(sec.Errors, fmt.Sprintf("process presence unknown: %v", err))
	}
	comp := func(name, url string, names []string) Component {
		c := Component{Name: name, ProcessNames: names, ProcessChecked: err == nil, Processes: []int{}}
		for _, n := range names {
			c.Processes = append(c.Processes, procs[n]...)
		}
		sort.Ints(c.Processes)
		if url != "" {
			c.Healthz = d.probeHTTP(ctx, url)
		}
		return c
	}
	sec.Kubelet = comp("kubelet", d.opts.KubeletHealthz, d.opts.KubeletProcesses)
	sec.Runtime = comp(d.opts.RuntimeName, d.opts.RuntimeHealthz, d.opts.RuntimeProcesses)
	return sec
}

// processes maps command names (/proc/PID/comm) to PIDs.
func processes(procDir string) (map[string][]int, error) {
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", procDir, err)
	}
	out := map[string][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procDir, e.Name(), "comm"))
		if err != nil {
			continue // the process exited
		}
		comm := strings.TrimSpace(string(b))
		out[comm] = append(out[comm], pid)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s lists no processes (not a procfs?)", procDir)
	}
	return out, nil
}

// probeHTTP GETs a health URL; a 2xx status is healthy.
func (d *Diagnoser) probeHTTP(ctx context.Context, url string) *Probe {
	ctx, cancel := context.WithTimeout(ctx, d.opts.ProbeTimeout)
	defer cancel()
	p := &Probe{Target: url}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		p.Error = err.Error()
		return p
	}
	start := time.Now()
	resp, err := d.http.Do(req)
	p.Latency = time.Since(start)
	if err != nil {
		p.Error = oneLine(err.Error())
		return p
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	p.Detail = strings.TrimSpace(resp.Status + " " + oneLine(strings.TrimSpace(string(body))))
	p.OK = resp.StatusCode >= 200 && resp.StatusCode < 300
	if !p.OK {
		p.Error = "unhealthy: " + resp.Status
	}
	return p
}
