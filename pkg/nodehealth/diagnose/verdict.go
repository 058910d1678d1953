package diagnose

import (
	"fmt"
	"strings"

	"github.com/kdiag/kdiag/pkg/nodehealth/disk"
	"github.com/kdiag/kdiag/pkg/nodehealth/psi"
)

// rule is one verdict rule: it returns a summary when it applies.
type rule struct {
	name    string
	culprit Culprit
	check   func(r *Report) (string, bool)
}

// rules returns the verdict rules in the order they are tried; the first
// that applies names the culprit. Hard failures (a component down, the
// network cut) come before resource pressure, because they make a node
// NotReady by themselves while pressure usually only slows it down; among
// pressures, a full disk and memory come first because they also cause I/O
// and CPU stalls (reclaim, thrashing). docs/config/node-report.md lists
// these rules.
func rules() []rule {
	return []rule{
		{"kubelet-down", CulpritKubelet, func(r *Report) (string, bool) { return componentDown(r.Health.Kubelet) }},
		{"runtime-down", CulpritRuntime, func(r *Report) (string, bool) { return componentDown(r.Health.Runtime) }},
		{"no-default-route", CulpritNetwork, func(r *Report) (string, bool) {
			procOK := true
			for _, e := range r.Network.Errors {
				if strings.HasPrefix(e, "default route:") {
					procOK = false
				}
			}
			return "the node has no default route: nothing off-link (API server, registries) is reachable", procOK && len(r.Network.DefaultRoutes) == 0
		}},
		{"apiserver-unreachable", CulpritNetwork, func(r *Report) (string, bool) {
			p := r.Network.APIServer
			if p == nil || p.OK {
				return "", false
			}
			return fmt.Sprintf("the API server is not reachable from the node (%s after %s): the kubelet cannot post its status", p.Error, p.Latency.Round(1e6)), true
		}},
		{"disk-full", CulpritDisk, func(r *Report) (string, bool) {
			for _, fs := range r.Disk.Filesystems {
				if fs.UsedPercent >= r.Disk.ThresholdPercent || fs.InodesUsedPercent >= r.Disk.ThresholdPercent {
					s := fmt.Sprintf("filesystem of %s is %.0f%% full (inodes %.0f%%, threshold %.0f%%)",
						strings.Join(fs.Paths, ", "), fs.UsedPercent, fs.InodesUsedPercent, r.Disk.ThresholdPercent)
					if c, ok := largest(r.Disk.Scans, fs); ok {
						s += fmt.Sprintf("; largest: %s %s", c.Path, disk.Bytes(c.Bytes))
					}
					return s, true
				}
			}
			return "", false
		}},
		{"memory-pressure", CulpritMemory, pressureRule("memory", func(p Pressure) string {
			if len(p.TopMemory) == 0 {
				return ""
			}
			return fmt.Sprintf("; top pod by memory: %s %s", podName(p.TopMemory[0]), disk.Bytes(p.TopMemory[0].MemoryBytes))
		})},
		{"io-pressure", CulpritIO, pressureRule("io", func(Pressure) string { return "" })},
		{"cpu-pressure", CulpritCPU, pressureRule("cpu", func(p Pressure) string {
			if len(p.TopCPU) == 0 {
				return ""
			}
			return fmt.Sprintf("; top pod by CPU: %s %.2f cores", podName(p.TopCPU[0]), p.TopCPU[0].CPUCores)
		})},
		{"dns-failing", CulpritDNS, func(r *Report) (string, bool) {
			p := r.Network.DNS
			if p == nil || p.OK {
				return "", false
			}
			return fmt.Sprintf("cluster DNS does not resolve %s (%s)", p.Target, p.Error), true
		}},
	}
}

// componentDown applies when the component's processes were looked for and
// none runs, or its health endpoint fails.
func componentDown(c Component) (string, bool) {
	switch {
	case c.ProcessChecked && len(c.ProcessNames) > 0 && len(c.Processes) == 0:
		return fmt.Sprintf("%s is not running (no process named %s)", c.Name, strings.Join(c.ProcessNames, " or ")), true
	case c.Healthz != nil && !c.Healthz.OK:
		return fmt.Sprintf("%s is unhealthy: %s %s", c.Name, c.Healthz.Target, c.Healthz.Error), true
	}
	return "", false
}

// pressureRule applies when the resource's PSI would set a condition under
// the agent's default thresholds (some avg10 >= 50% or avg60 >= 25%).
func pressureRule(resource string, detail func(Pressure) string) func(r *Report) (string, bool) {
	return func(r *Report) (string, bool) {
		p, ok := r.Pressure.PSI[resource]
		if !ok {
			return "", false
		}
		if !psi.DefaultThreshold().Next(false, psi.Stat{Avg10: p.SomeAvg10, Avg60: p.SomeAvg60}) {
			return "", false
		}
		return fmt.Sprintf("%s pressure: some avg10=%.1f%% avg60=%.1f%%", resource, p.SomeAvg10, p.SomeAvg60) + detail(r.Pressure), true
	}
}

// largest returns the largest consumer below a root of fs (the roots
// themselves say nothing new).
func largest(scans []disk.Scan, fs disk.Filesystem) (disk.Consumer, bool) {
	for _, s := range scans {
		for _, c := range s.Top {
			if !contains(fs.Paths, c.Path) && under(c.Path, fs.Paths) {
				return c, true
			}
		}
	}
	return disk.Consumer{}, false
}

func under(p string, roots []string) bool {
	for _, r := range roots {
		if strings.HasPrefix(p, strings.TrimSuffix(r, "/")+"/") {
			return true
		}
	}
	return false
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func podName(u PodUsage) string {
	if u.Name != "" {
		return u.Namespace + "/" + u.Name
	}
	return "pod " + u.UID
}

// Decide sets r.Verdict from the sections by the first rule that applies;
// with none, the culprit is none, or unknown when a section had errors.
func Decide(r *Report) {
	for _, ru := range rules() {
		if s, ok := ru.check(r); ok {
			r.Verdict = Verdict{Culprit: ru.culprit, Rule: ru.name, Summary: string(ru.culprit) + ": " + s}
			return
		}
	}
	var unread []string
	for name, errs := range map[string][]string{"pressure": r.Pressure.Errors, "disk": r.Disk.Errors, "network": r.Network.Errors, "health": r.Health.Errors} {
		if len(errs) > 0 {
			unread = append(unread, name)
		}
	}
	if len(unread) > 0 {
		sortStrings(unread)
		r.Verdict = Verdict{Culprit: CulpritUnknown, Rule: "incomplete",
			Summary: "unknown: nothing wrong in what could be read, but these sections have errors: " + strings.Join(unread, ", ")}
		return
	}
	r.Verdict = Verdict{Culprit: CulpritNone, Rule: "healthy",
		Summary: "none: kubelet and runtime up, network and DNS answer, no full disk, no CPU, memory or I/O pressure"}
}
