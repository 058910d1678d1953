package psi

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kdiag/kdiag/pkg/nodehealth"
	"github.com/kdiag/kdiag/pkg/nodehealth/metrics"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, in string
		want     Pressure
		wantErr  string
	}{
		{name: "memory", in: "some avg10=1.50 avg60=0.25 avg300=0.00 total=53183\nfull avg10=0.10 avg60=0.00 avg300=0.00 total=2416\n",
			want: Pressure{Some: Stat{1.5, 0.25, 0, 53183}, Full: Stat{0.1, 0, 0, 2416}, HasFull: true}},
		{name: "old cpu without full", in: "some avg10=98.20 avg60=96.23 avg300=81.97 total=2969066117\n",
			want: Pressure{Some: Stat{98.2, 96.23, 81.97, 2969066117}}},
		{name: "empty", in: "", wantErr: `no "some" line`},
		{name: "bad number", in: "some avg10=x avg60=0 avg300=0 total=0\n", wantErr: `"avg10=x"`},
		{name: "bad field", in: "some avg10\n", wantErr: "want key=value"},
		{name: "bad kind", in: "most avg10=0\n", wantErr: "want some or full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Parse = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestThresholdHysteresis(t *testing.T) {
	th := Threshold{SetAvg10: 50, SetAvg60: 25, ClearAvg10: 20, ClearAvg60: 10}
	tests := []struct {
		cur          bool
		avg10, avg60 float64
		want         bool
	}{
		{false, 10, 5, false},
		{false, 49.9, 24.9, false},
		{false, 50, 0, true},
		{false, 0, 25, true},
		{true, 30, 5, true},  // between clear and set: stays
		{true, 10, 15, true}, // avg60 not yet low
		{true, 19.9, 9.9, false},
		{false, 30, 15, false}, // between: stays clear
	}
	for _, tt := range tests {
		if got := th.Next(tt.cur, Stat{Avg10: tt.avg10, Avg60: tt.avg60}); got != tt.want {
			t.Errorf("Next(%v, avg10=%v avg60=%v) = %v, want %v", tt.cur, tt.avg10, tt.avg60, got, tt.want)
		}
	}
	if err := (Threshold{SetAvg10: 10, SetAvg60: 10, ClearAvg10: 20, ClearAvg60: 5}).Validate(); err == nil {
		t.Error("a clear bound above the set bound was accepted")
	}
}

type sink struct {
	mu     sync.Mutex
	conds  map[string]nodehealth.Condition
	events []string
}

func (s *sink) SetCondition(_ string, c nodehealth.Condition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conds[c.Type] = c
}
func (s *sink) Emit(e nodehealth.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, e.Reason)
}

func writePSI(t *testing.T, dir, name string, avg10, avg60 float64) {
	t.Helper()
	line := func(kind string) string {
		return kind + " avg10=" + ftoa(avg10) + " avg60=" + ftoa(avg60) + " avg300=0.00 total=1000000\n"
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(line("some")+line("full")), 0o644); err != nil {
		t.Fatal(err)
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) }

func TestMonitorSetsAndClearsConditions(t *testing.T) {
	dir := t.TempDir()
	for _, r := range Resources() {
		writePSI(t, dir, r, 0, 0)
	}
	s := &sink{conds: map[string]nodehealth.Condition{}}
	mm := metrics.New()
	m, err := NewMonitor(Options{ProcDir: dir, CgroupRoots: []string{}, Metrics: mm}, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		memory10, memory60 float64
		want               bool
	}{{0, 0, false}, {60, 10, true}, {30, 10, true}, {5, 5, false}}
	for i, st := range steps {
		writePSI(t, dir, "memory", st.memory10, st.memory60)
		m.Poll()
		if got := s.conds["MemoryContentionPressure"].Status; got != st.want && (i > 0 || got) {
			t.Errorf("step %d (avg10=%v): MemoryContentionPressure = %v, want %v", i, st.memory10, got, st.want)
		}
	}
	if strings.Join(s.events, ",") != "MemoryContention" {
		t.Errorf("events = %v, want one MemoryContention", s.events)
	}
	if _, ok := s.conds["IOContentionPressure"]; ok {
		t.Errorf("IOContentionPressure changed without I/O pressure: %+v", s.conds["IOContentionPressure"])
	}
}

func TestMonitorWithoutPSI(t *testing.T) {
	_, err := NewMonitor(Options{ProcDir: filepath.Join(t.TempDir(), "pressure")}, &sink{}, nil)
	if err == nil || !strings.Contains(err.Error(), "pressure stall information unavailable") {
		t.Errorf("NewMonitor error = %v, want a clear PSI-unavailable error", err)
	}
}

func TestResumeKeepsCondition(t *testing.T) {
	dir := t.TempDir()
	for _, r := range Resources() {
		writePSI(t, dir, r, 30, 15) // between the bounds
	}
	s := &sink{conds: map[string]nodehealth.Condition{}}
	resume := map[string]nodehealth.Condition{"IOContentionPressure": {Type: "IOContentionPressure", Status: true, Reason: "IOContention"}}
	m, err := NewMonitor(Options{ProcDir: dir, CgroupRoots: []string{}}, s, resume)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conditions() {
		s.SetCondition(Source, m.state[c.typ])
	}
	m.Poll()
	if c := s.conds["IOContentionPressure"]; !c.Status {
		t.Errorf("a resumed True condition within the hysteresis band flipped: %+v", c)
	}
}

func TestPodDirs(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{
		"kubepods/burstable/pod0f2b7c1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
		"kubepods/pod11111111-2222-3333-4444-555555555555",
		"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod22222222_3333_4444_5555_666666666666.slice",
	} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := PodCgroupRoot([]string{t.TempDir(), root}); got != root {
		t.Errorf("PodCgroupRoot = %q, want %q", got, root)
	}
	got := PodDirs(root)
	for _, uid := range []string{"0f2b7c1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "11111111-2222-3333-4444-555555555555", "22222222-3333-4444-5555-666666666666"} {
		if got[uid] == "" {
			t.Errorf("PodDirs lacks pod %s: %v", uid, got)
		}
	}
}
