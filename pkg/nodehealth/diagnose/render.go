package diagnose

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kdiag/kdiag/pkg/nodehealth/disk"
)

// WriteText renders the report for a terminal.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }
	p("Node %s diagnostic at %s (trigger: %s, took %s)", r.Node, r.Time.UTC().Format(time.RFC3339), r.Trigger, r.Duration.Round(time.Millisecond))
	p("VERDICT\t%s", r.Verdict.Summary)
	p("")

	p("PRESSURE (PSI %%)\tsome avg10/60/300\tfull avg10/60/300")
	var res []string
	for k := range r.Pressure.PSI {
		res = append(res, k)
	}
	sortStrings(res)
	for _, k := range res {
		s := r.Pressure.PSI[k]
		full := "-"
		if s.HasFull {
			full = fmt.Sprintf("%.2f/%.2f/%.2f", s.FullAvg10, s.FullAvg60, s.FullAvg300)
		}
		p("  %s\t%.2f/%.2f/%.2f\t%s", k, s.SomeAvg10, s.SomeAvg60, s.SomeAvg300, full)
	}
	if r.Pressure.CgroupVersion != "" {
		p("  %d pod cgroups (cgroup %s); CPU sampled over %s", r.Pressure.Pods, r.Pressure.CgroupVersion, r.Pressure.CPUWindow)
	}
	for _, u := range r.Pressure.TopCPU {
		p("  top CPU\t%.3f cores\t%s", u.CPUCores, podName(u))
	}
	for _, u := range r.Pressure.TopMemory {
		p("  top memory\t%s\t%s", disk.Bytes(u.MemoryBytes), podName(u))
	}
	errs(p, r.Pressure.Errors)
	p("")

	p("DISK (full at %.0f%%)\tused\tinodes\tsize", r.Disk.ThresholdPercent)
	for _, fs := range r.Disk.Filesystems {
		p("  %s\t%.1f%%\t%.1f%%\t%s of %s", strings.Join(fs.Paths, ", "), fs.UsedPercent, fs.InodesUsedPercent,
			disk.Bytes(int64(fs.UsedBytes)), disk.Bytes(int64(fs.TotalBytes))) //nolint:gosec // sizes fit
	}
	for _, s := range r.Disk.Scans {
		line := fmt.Sprintf("  top consumers of %s (walked %s, %d entries, %s)", strings.Join(s.Paths, ", "),
			s.Time.UTC().Format(time.RFC3339), s.Entries, s.Duration.Round(time.Millisecond))
		if s.Truncated != "" {
			line += ", truncated: " + s.Truncated
		}
		p("%s", line)
		for _, c := range s.Top {
			p("    %s\t%s", disk.Bytes(c.Bytes), c.Path)
		}
	}
	errs(p, r.Disk.Errors)
	p("")

	p("NETWORK")
	if len(r.Network.DefaultRoutes) == 0 {
		p("  default route\tnone")
	}
	for _, rt := range r.Network.DefaultRoutes {
		via := "on-link"
		if rt.Gateway != "" {
			via = "via " + rt.Gateway
		}
		p("  default route\t%s %s dev %s", rt.Family, via, rt.Interface)
	}
	probe(p, "API server", r.Network.APIServer)
	probe(p, "cluster DNS", r.Network.DNS)
	errs(p, r.Network.Errors)
	p("")

	p("HEALTH")
	for _, c := range []Component{r.Health.Kubelet, r.Health.Runtime} {
		procs := "not checked"
		if c.ProcessChecked {
			procs = fmt.Sprintf("no process named %s", strings.Join(c.ProcessNames, "/"))
			if len(c.Processes) > 0 {
				procs = fmt.Sprintf("running, pid %s", joinInts(c.Processes))
			}
		}
		p("  %s\t%s", c.Name, procs)
		probe(p, "  healthz", c.Healthz)
	}
	errs(p, r.Health.Errors)
	return tw.Flush()
}

func probe(p func(string, ...any), name string, pr *Probe) {
	if pr == nil {
		return
	}
	if pr.OK {
		p("  %s\tok in %s\t%s %s", name, pr.Latency.Round(time.Microsecond*100), pr.Target, pr.Detail)
		return
	}
	p("  %s\tFAILED after %s\t%s: %s", name, pr.Latency.Round(time.Microsecond*100), pr.Target, pr.Error)
}

func errs(p func(string, ...any), e []string) {
	for _, s := range e {
		p("  ! %s", s)
	}
}

func joinInts(l []int) string {
	var s []string
	for _, i := range l {
		s = append(s, fmt.Sprint(i))
	}
	return strings.Join(s, ",")
}

func sortStrings(l []string) { sort.Strings(l) }
