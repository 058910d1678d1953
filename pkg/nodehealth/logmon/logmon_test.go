package logmon

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kdiag/kdiag/pkg/nodehealth"
)

// recorder is a nodehealth.Sink that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	conds  map[string]nodehealth.Condition
	events []nodehealth.Event
}

func newRecorder() *recorder { return &recorder{conds: map[string]nodehealth.Condition{}} }

func (r *recorder) SetCondition(_ string, c nodehealth.Condition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conds[c.Type] = c
}

func (r *recorder) Emit(e nodehealth.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) reasons() []string {
	var out []string
	for _, e := range r.events {
		out = append(out, e.Reason)
	}
	return out
}

func TestNPDKernelMonitorLoadsUnchanged(t *testing.T) {
	c, err := LoadFile("testdata/npd-kernel-monitor.json")
	if err != nil {
		t.Fatalf("NPD's kernel-monitor.json format must load unchanged: %v", err)
	}
	if c.Plugin != "kmsg" || c.LogPath != "/dev/kmsg" || c.Source != "kernel-monitor" || c.BufferSize != 10 || c.lookback != 5*time.Minute {
		t.Errorf("header fields: %+v", c)
	}
	if len(c.Conditions) != 2 || len(c.Rules) != 8 {
		t.Fatalf("got %d conditions, %d rules; want 2, 8", len(c.Conditions), len(c.Rules))
	}
	rec := newRecorder()
	m := NewMonitor(c, rec, nil, nil)
	m.Publish()
	now := time.Now()
	for _, l := range []string{
		"Memory cgroup out of memory: Killed process 4242 (stress) total-vm:1048576kB, anon-rss:262144kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:600kB oom_score_adj:0",
		"EXT4-fs (sda1): Remounting filesystem read-only",
		"INFO: task docker:1234 blocked for more than 120 seconds.",
	} {
		m.Process(Line{Time: now, Text: l})
	}
	if got := strings.Join(rec.reasons(), ","); got != "OOMKilling,FilesystemIsReadOnly,TaskHung,DockerHung" {
		t.Errorf("events = %s", got)
	}
	if c := rec.conds["ReadonlyFilesystem"]; !c.Status || c.Reason != "FilesystemIsReadOnly" {
		t.Errorf("ReadonlyFilesystem = %+v, want True/FilesystemIsReadOnly", c)
	}
	if c := rec.conds["KernelDeadlock"]; !c.Status || c.Reason != "DockerHung" {
		t.Errorf("KernelDeadlock = %+v", c)
	}
}

func TestDefaultsLoad(t *testing.T) {
	cs, err := Defaults()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"OOMKilling": false, "TaskHung": false, "KernelOops": false, "Ext4Error": false,
		"IOError": false, "FilesystemIsReadOnly": false, "DockerHung": false, "FrequentKubeletRestart": false, "FrequentContainerdRestart": false}
	for _, c := range cs {
		for _, r := range c.Rules {
			if _, ok := want[r.Reason]; ok {
				want[r.Reason] = true
			}
		}
	}
	for r, ok := range want {
		if !ok {
			t.Errorf("built-in monitors lack a rule with reason %s", r)
		}
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	tests := []struct{ name, json, want string }{
		{"not JSON", `{"plugin": `, "decode JSON"},
		{"no plugin", `{"source":"s","rules":[]}`, `missing "plugin"`},
		{"bad plugin", `{"plugin":"syslog","source":"s"}`, `unknown plugin "syslog"`},
		{"no source", `{"plugin":"kmsg"}`, `missing "source"`},
		{"bad pattern", `{"plugin":"kmsg","source":"s","rules":[{"type":"temporary","reason":"R","pattern":"("}]}`, "missing closing )"},
		{"empty pattern", `{"plugin":"kmsg","source":"s","rules":[{"type":"temporary","reason":"R","pattern":""}]}`, "empty pattern"},
		{"bad type", `{"plugin":"kmsg","source":"s","rules":[{"type":"sometimes","reason":"R","pattern":"x"}]}`, `type "sometimes"`},
		{"undeclared condition", `{"plugin":"kmsg","source":"s","rules":[{"type":"permanent","condition":"C","reason":"R","pattern":"x"}]}`, `condition "C" is not declared`},
		{"bad lookback", `{"plugin":"kmsg","source":"s","lookback":"yesterday"}`, "lookback"},
		{"bad after", `{"plugin":"kmsg","source":"s","conditions":[{"type":"C","reason":"OK"}],"rules":[{"type":"permanent","condition":"C","reason":"R","pattern":"x","recovery":{"after":"-1s"}}]}`, "positive duration"},
		{"empty recovery", `{"plugin":"kmsg","source":"s","conditions":[{"type":"C","reason":"OK"}],"rules":[{"type":"permanent","condition":"C","reason":"R","pattern":"x","recovery":{}}]}`, "needs a pattern, after or command"},
		{"filelog without regexps", `{"plugin":"filelog","source":"s","logPath":"/x"}`, "timestampFormat"},
		{"recovery on temporary", `{"plugin":"kmsg","source":"s","rules":[{"type":"temporary","reason":"R","pattern":"x","recovery":{"after":"1s"}}]}`, "permanent rules only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestLoadFileMissing(t *testing.T) {
	if _, err := LoadFile("testdata/does-not-exist.json"); err == nil || !strings.Contains(err.Error(), "does-not-exist.json") {
		t.Errorf("LoadFile error = %v, want one naming the file", err)
	}
}

func TestParseKmsgRecord(t *testing.T) {
	tests := []struct {
		in      string
		want    KmsgRecord
		wantErr bool
	}{
		{in: "6,339,5140900,-;NET: Registered protocol family 10\n",
			want: KmsgRecord{Priority: 6, Facility: 0, Seq: 339, Since: 5140900 * time.Microsecond, Message: "NET: Registered protocol family 10"}},
		{in: "30,340,5690716,-;udevd[80]: starting version 181\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A03:00\n",
			want: KmsgRecord{Priority: 6, Facility: 3, Seq: 340, Since: 5690716 * time.Microsecond, Message: "udevd[80]: starting version 181"}},
		{in: "3,1,2,c,caller=T1;tab\\x09here",
			want: KmsgRecord{Priority: 3, Seq: 1, Since: 2 * time.Microsecond, Message: "tab\there"}},
		{in: "4,1,2,-;trailing \\x", want: KmsgRecord{Priority: 4, Seq: 1, Since: 2 * time.Microsecond, Message: "trailing \\x"}},
		{in: "no separator", wantErr: true},
		{in: "6,1;short header", wantErr: true},
		{in: "x,1,2,-;bad prefix", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseKmsgRecord([]byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseKmsgRecord(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && got != tt.want {
			t.Errorf("ParseKmsgRecord(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

const ruleConfig = `{
  "plugin": "kmsg", "source": "test-monitor", "bufferSize": 3,
  "conditions": [
    {"type": "Ro", "reason": "NotRo", "message": "fine"},
    {"type": "Hung", "reason": "NotHung", "message": "fine"},
    {"type": "Flappy", "reason": "NotFlappy", "message": "fine"},
    {"type": "Sticky", "reason": "NotSticky", "message": "fine"}
  ],
  "rules": [
    {"type": "temporary", "reason": "Oops", "pattern": "oops \\d+"},
    {"type": "temporary", "reason": "TwoLine", "pattern": "first half\\nsecond half"},
    {"type": "permanent", "condition": "Ro", "reason": "IsRo", "pattern": "went read-only",
     "recovery": {"pattern": "went read-write", "reason": "BackToRw"}},
    {"type": "permanent", "condition": "Hung", "reason": "IsHung", "pattern": "hung task",
     "recovery": {"after": "10m"}},
    {"type": "permanent", "condition": "Flappy", "reason": "Flapping", "pattern": "restarted",
     "frequency": {"count": 3, "window": "5m"}},
    {"type": "permanent", "condition": "Sticky", "reason": "IsSticky", "pattern": "sticky"}
  ]
}`

func TestRules(t *testing.T) {
	type step struct {
		advance time.Duration
		line    string // empty: only run Expire
		events  string // reasons emitted by this step, comma-separated
		cond    string // "Type=Status/Reason" checked after the step
	}
	tests := []struct {
		name   string
		resume map[string]nodehealth.Condition
		steps  []step
	}{
		{name: "temporary rule emits an event, anchored at the end", steps: []step{
			{line: "kernel: oops 42", events: "Oops"},
			{line: "oops 42 and more", events: ""},
		}},
		{name: "multi-line pattern over the buffer", steps: []step{
			{line: "first half", events: ""},
			{line: "second half", events: "TwoLine"},
		}},
		{name: "recovery pattern clears", steps: []step{
			{line: "sda1 went read-only", events: "IsRo", cond: "Ro=true/IsRo"},
			{line: "sda1 went read-only", events: "", cond: "Ro=true/IsRo"},
			{line: "sda1 went read-write", events: "BackToRw", cond: "Ro=false/BackToRw"},
			{line: "sda1 went read-write", events: "", cond: "Ro=false/BackToRw"},
		}},
		{name: "expiry clears after the last match", steps: []step{
			{line: "hung task", events: "IsHung", cond: "Hung=true/IsHung"},
			{advance: 6 * time.Minute, line: "hung task", events: "", cond: "Hung=true/IsHung"},
			{advance: 6 * time.Minute, events: "", cond: "Hung=true/IsHung"},
			{advance: 5 * time.Minute, events: "NotHung", cond: "Hung=false/NotHung"},
		}},
		{name: "frequency needs count matches within the window", steps: []step{
			{line: "restarted", cond: "Flappy=false/NotFlappy"},
			{advance: 4 * time.Minute, line: "restarted", cond: "Flappy=false/NotFlappy"},
			{advance: 2 * time.Minute, line: "restarted", cond: "Flappy=false/NotFlappy"},
			{advance: time.Minute, line: "restarted", events: "Flapping", cond: "Flappy=true/Flapping"},
		}},
		{name: "a rule without recovery stays", steps: []step{
			{line: "sticky", events: "IsSticky", cond: "Sticky=true/IsSticky"},
			{advance: 48 * time.Hour, events: "", cond: "Sticky=true/IsSticky"},
		}},
		{name: "resume keeps a True condition and its recovery",
			resume: map[string]nodehealth.Condition{
				"Ro":   {Type: "Ro", Status: true, Reason: "IsRo", Message: "sda1 went read-only"},
				"Hung": {Type: "Hung", Status: true, Reason: "IsHung", Message: "hung task"},
			},
			steps: []step{
				{events: "", cond: "Ro=true/IsRo"},
				{line: "sda1 went read-write", events: "BackToRw", cond: "Ro=false/BackToRw"},
				{advance: 11 * time.Minute, events: "NotHung", cond: "Hung=false/NotHung"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(ruleConfig))
			if err != nil {
				t.Fatal(err)
			}
			clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			for k, c := range tt.resume {
				c.Transition = clk.t
				tt.resume[k] = c
			}
			rec := newRecorder()
			m := NewMonitor(cfg, rec, tt.resume, clk.now)
			m.Publish()
			for i, s := range tt.steps {
				clk.t = clk.t.Add(s.advance)
				n := len(rec.events)
				if s.line != "" {
					m.Process(Line{Time: clk.t, Text: s.line})
				}
				m.Expire()
				if got := strings.Join(rec.reasons()[n:], ","); got != s.events {
					t.Errorf("step %d (%q): events %q, want %q", i, s.line, got, s.events)
				}
				for _, e := range rec.events[n:] {
					if recovery := strings.HasPrefix(e.Reason, "Not") || strings.HasPrefix(e.Reason, "Back"); e.Normal != recovery {
						t.Errorf("step %d: event %s Normal=%v, want %v", i, e.Reason, e.Normal, recovery)
					}
				}
				if s.cond != "" {
					typ, _, _ := strings.Cut(s.cond, "=")
					c := rec.conds[typ]
					if got := typ + "=" + map[bool]string{true: "true", false: "false"}[c.Status] + "/" + c.Reason; got != s.cond {
						t.Errorf("step %d (%q): condition %s, want %s", i, s.line, got, s.cond)
					}
				}
			}
		})
	}
}

func TestReplayedExpiredLineDoesNotFire(t *testing.T) {
	cfg, err := Parse([]byte(ruleConfig))
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	now := time.Now()
	m := NewMonitor(cfg, rec, nil, func() time.Time { return now })
	m.Process(Line{Time: now.Add(-11 * time.Minute), Text: "hung task"})
	if c := rec.conds["Hung"]; c.Status {
		t.Errorf("a lookback line older than its expiry set the condition: %+v", c)
	}
}

func TestOOMEventCarriesPod(t *testing.T) {
	cs, err := Defaults()
	if err != nil {
		t.Fatal(err)
	}
	var kernel *Config
	for _, c := range cs {
		if c.Source == "kernel-monitor" {
			kernel = c
		}
	}
	rec := newRecorder()
	m := NewMonitor(kernel, rec, nil, nil)
	cid := strings.Repeat("ab", 32)
	tests := []struct {
		name, memcg, wantUID, wantCID string
	}{
		{"cgroupfs", "/kubepods/burstable/pod0f2b7c1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b/" + cid, "0f2b7c1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b", cid},
		{"systemd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f2b7c1e_3c4d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-" + cid + ".scope", "0f2b7c1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b", cid},
		{"not a pod", "/system.slice/sshd.service", "", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pid := 1000 + i
			rec.events = nil
			m.Process(Line{Time: time.Now(), Text: "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=" + tt.memcg + ",task_memcg=" + tt.memcg + ",task=stress,pid=" + itoa(pid) + ",uid=0"})
			m.Process(Line{Time: time.Now(), Text: "Memory cgroup out of memory: Killed process " + itoa(pid) + " (stress) total-vm:1048576kB, anon-rss:262144kB, file-rss:1024kB, shmem-rss:0kB, UID:0 pgtables:600kB oom_score_adj:984"})
			if len(rec.events) != 1 || rec.events[0].OOM == nil {
				t.Fatalf("events = %+v, want one OOMKilling with details", rec.events)
			}
			o := rec.events[0].OOM
			if o.PodUID != tt.wantUID || o.ContainerID != tt.wantCID || o.PID != pid || o.Task != "stress" || o.UsageBytes() != (262144+1024)*1024 {
				t.Errorf("OOM = %+v", o)
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

type failingSource struct{}

func (failingSource) Run(context.Context, chan<- Line) error { return errors.New("boom") }

func TestRunReportsSourceErrorAndKeepsExpiring(t *testing.T) {
	cfg, err := Parse([]byte(ruleConfig))
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	resume := map[string]nodehealth.Condition{"Hung": {Type: "Hung", Status: true, Reason: "IsHung", Transition: time.Now().Add(-time.Hour)}}
	m := NewMonitor(cfg, rec, resume, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 10)
	done := make(chan struct{})
	go func() { m.Run(ctx, failingSource{}, func(err error) { errs <- err }); close(done) }()
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), "monitor test-monitor: boom") {
			t.Errorf("source error = %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the source error was not reported")
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		rec.mu.Lock()
		c := rec.conds["Hung"]
		rec.mu.Unlock()
		if !c.Status {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("after the source failed, an expired condition did not clear")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if len(errs) != 0 {
		t.Errorf("the error was reported more than once")
	}
}

func TestRecoveryCommand(t *testing.T) {
	tests := []struct {
		name      string
		command   string
		wantClear bool
	}{
		{"passing check clears", `["true"]`, true},
		{"failing check keeps", `["false"]`, false},
		{"missing program keeps", `["/nonexistent/kdiag-check"]`, false},
		{"arguments are passed", `["sh", "-c", "test \"$0\" = ok", "ok"]`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(`{"plugin":"kmsg","source":"s","conditions":[{"type":"Ro","reason":"NotRo","message":"fine"}],
			  "rules":[{"type":"permanent","condition":"Ro","reason":"IsRo","pattern":"went read-only",
			    "recovery":{"command":` + tt.command + `,"interval":"1m","reason":"CheckPassed"}}]}`))
			if err != nil {
				t.Fatal(err)
			}
			clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			rec := newRecorder()
			m := NewMonitor(cfg, rec, nil, clk.now)
			m.Process(Line{Time: clk.t, Text: "sda went read-only"})
			m.Expire()
			m.checks.Wait()
			c := rec.conds["Ro"]
			if tt.wantClear != !c.Status || (tt.wantClear && c.Reason != "CheckPassed") {
				t.Errorf("after the check: %+v, want cleared=%v", c, tt.wantClear)
			}
			if tt.wantClear {
				return
			}
			// Not due again before the interval.
			clk.t = clk.t.Add(30 * time.Second)
			m.Expire()
			m.mu.Lock()
			checking := m.conds["Ro"].checking
			m.mu.Unlock()
			if checking {
				t.Error("the check ran again before its interval")
			}
			m.checks.Wait()
		})
	}
}

func TestRecoveryCommandValidation(t *testing.T) {
	for _, tt := range []struct{ recovery, want string }{
		{`{"command":[""]}`, "empty program name"},
		{`{"command":["true"],"interval":"often"}`, "not a positive duration"},
		{`{"after":"1m","interval":"1m"}`, "interval needs a command"},
	} {
		_, err := Parse([]byte(`{"plugin":"kmsg","source":"s","conditions":[{"type":"C","reason":"OK"}],
		  "rules":[{"type":"permanent","condition":"C","reason":"R","pattern":"x","recovery":` + tt.recovery + `}]}`))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("recovery %s: error %v, want %q", tt.recovery, err, tt.want)
		}
	}
}
