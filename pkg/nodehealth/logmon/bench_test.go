package logmon

import (
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/nodehealth"
)

type discard struct{}

func (discard) SetCondition(string, nodehealth.Condition) {}
func (discard) Emit(nodehealth.Event)                     {}

// BenchmarkProcessLine measures the CPU cost of one kernel-log line against
// the built-in kernel monitor's rules.
func BenchmarkProcessLine(b *testing.B) {
	cs, err := Defaults()
	if err != nil {
		b.Fatal(err)
	}
	var kernel *Config
	for _, c := range cs {
		if c.Source == "kernel-monitor" {
			kernel = c
		}
	}
	for _, bc := range []struct{ name, line string }{
		{"no-match", "eth0: renamed from veth1234abcd"},
		{"oom-kill", "Memory cgroup out of memory: Killed process 4242 (stress) total-vm:1048576kB, anon-rss:262144kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:600kB oom_score_adj:984"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := NewMonitor(kernel, discard{}, nil, nil)
			l := Line{Time: time.Now(), Text: bc.line}
			b.ReportAllocs()
			for b.Loop() {
				m.Process(l)
			}
		})
	}
}
