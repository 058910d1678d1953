package logmon

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/kdiag/kdiag/pkg/nodehealth"
)

// Monitor applies one config's rules to log lines and reports conditions
// and events to a sink.
//
// Rule semantics (documented in docs/config/npd-monitors.md):
//   - As in NPD, a pattern must match at the end of the buffer of the last
//     bufferSize lines joined by "\n"; a pattern that cannot match a
//     newline is therefore matched against the newest line only.
//   - A temporary rule emits an Event per match.
//   - A permanent rule sets its condition True with its reason and the
//     matched text as message, and emits an Event when the condition changes.
//   - recovery.pattern: a later line matching it sets the condition back to
//     False, if the condition is True for this rule's reason.
//   - recovery.after: the condition goes back to False that long after the
//     rule's last match.
//   - recovery.command: a health check run every recovery.interval while
//     the condition is True; exit status 0 sets it back to False.
//   - frequency: the rule fires only once count matches fall within window.
type Monitor struct {
	cfg  *Config
	sink nodehealth.Sink
	now  func() time.Time

	// checks tracks running recovery commands; runCtx bounds them.
	checks sync.WaitGroup
	runCtx context.Context

	mu    sync.Mutex
	buf   []string
	conds map[string]*condState
	hits  map[*Rule][]time.Time
	oom   oomTracker
}

// condState is the monitor's view of one of its conditions.
type condState struct {
	def       ConditionDefault
	cur       nodehealth.Condition
	rule      *Rule     // the permanent rule that set it True
	lastMatch time.Time // when rule last matched
	lastCheck time.Time // when rule's recovery command last started
	checking  bool      // a recovery command is running
}

// NewMonitor builds a monitor. resume holds the conditions currently on the
// Node: a condition found there keeps its state instead of being reset to
// its default, so that an agent restart does not flip it.
func NewMonitor(cfg *Config, sink nodehealth.Sink, resume map[string]nodehealth.Condition, now func() time.Time) *Monitor {
	if now == nil {
		now = time.Now
	}
	m := &Monitor{cfg: cfg, sink: sink, now: now, conds: map[string]*condState{}, hits: map[*Rule][]time.Time{},
		runCtx: context.Background()}
	for _, d := range cfg.Conditions {
		st := &condState{def: d, cur: nodehealth.Condition{Type: d.Type, Reason: d.Reason, Message: d.Message, Transition: now()}}
		if c, ok := resume[d.Type]; ok {
			st.cur = c
			if c.Status {
				st.rule = m.ruleFor(d.Type, c.Reason)
				st.lastMatch = c.Transition
			}
		}
		m.conds[d.Type] = st
	}
	return m
}

// ruleFor finds the permanent rule that sets condition cond with reason.
func (m *Monitor) ruleFor(cond, reason string) *Rule {
	for i := range m.cfg.Rules {
		r := &m.cfg.Rules[i]
		if r.Type == RulePermanent && r.Condition == cond && r.Reason == reason {
			return r
		}
	}
	return nil
}

// Config returns the monitor's config.
func (m *Monitor) Config() *Config { return m.cfg }

// Publish sends every condition's current state to the sink.
func (m *Monitor) Publish() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range m.cfg.Conditions {
		m.sink.SetCondition(m.cfg.Source, m.conds[d.Type].cur)
	}
}

// Run publishes the conditions, then reads the source and applies the
// rules until ctx ends. When the source fails, onErr gets the error once
// and the monitor keeps running so that its conditions still expire.
func (m *Monitor) Run(ctx context.Context, src Source, onErr func(error)) {
	m.Publish()
	lines := make(chan Line, 256)
	errc := make(chan error, 1)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.mu.Lock()
	m.runCtx = sctx
	m.mu.Unlock()
	defer m.checks.Wait()
	go func() { errc <- src.Run(sctx, lines) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case l := <-lines:
			m.Process(l)
		case <-tick.C:
			m.Expire()
		case err := <-errc:
			errc = nil
			if err == nil && ctx.Err() == nil {
				err = errors.New("log source ended")
			}
			if err != nil && ctx.Err() == nil {
				onErr(fmt.Errorf("monitor %s: %w", m.cfg.Source, err))
			}
		case <-ctx.Done():
			return
		}
	}
}

// Process applies the rules to one line.
func (m *Monitor) Process(l Line) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.buf) == m.cfg.BufferSize {
		copy(m.buf, m.buf[1:])
		m.buf = m.buf[:len(m.buf)-1]
	}
	m.buf = append(m.buf, l.Text)
	m.oom.observe(l.Text)
	now := m.now()
	for i := range m.cfg.Rules {
		r := &m.cfg.Rules[i]
		if r.recoveryRE != nil && r.recoveryRE.MatchString(l.Text) {
			m.recover(r, l.Time, r.Recovery.Reason, r.Recovery.Message)
		}
		msg, ok := m.match(r)
		if !ok {
			continue
		}
		if r.PatternGeneratedMessageSuffix != "" {
			msg += r.PatternGeneratedMessageSuffix
		}
		switch r.Type {
		case RuleTemporary:
			ev := nodehealth.Event{Source: m.cfg.Source, Reason: r.Reason, Message: msg, Time: l.Time}
			ev.OOM = m.oom.killed(l.Text)
			m.sink.Emit(ev)
		case RulePermanent:
			m.fire(r, l.Time, now, msg)
		}
	}
}

// match reports whether r matches at the end of the buffer and the text
// it matched.
func (m *Monitor) match(r *Rule) (string, bool) {
	if r.lastLineOnly() {
		last := m.buf[len(m.buf)-1]
		if r.anchored().MatchString(last) {
			return last, true
		}
		return "", false
	}
	joined := strings.Join(m.buf, "\n")
	loc := r.anchored().FindStringIndex(joined)
	if loc == nil {
		return "", false
	}
	// The message is every line the match touches, as in NPD.
	start := strings.LastIndexByte(joined[:loc[0]], '\n') + 1
	return joined[start:], true
}

// fire handles a match of a permanent rule.
func (m *Monitor) fire(r *Rule, at, now time.Time, msg string) {
	if r.Frequency != nil {
		h := append(m.hits[r], at)
		for len(h) > 0 && at.Sub(h[0]) > r.window {
			h = h[1:]
		}
		m.hits[r] = h
		if len(h) < r.Frequency.Count {
			return
		}
		msg = fmt.Sprintf("%d matches within %s; last: %s", len(h), r.Frequency.Window, msg)
	}
	if r.after > 0 && now.Sub(at) >= r.after {
		// A line replayed from the lookback whose effect has expired.
		return
	}
	st := m.conds[r.Condition]
	if st.cur.Status && st.rule != nil && st.rule != r && st.rule.after == 0 && st.rule.recoveryRE == nil {
		// Do not let a clearable cause replace one that never clears.
		return
	}
	st.rule, st.lastMatch = r, at
	if st.cur.Status && st.cur.Reason == r.Reason && st.cur.Message == msg {
		return
	}
	changed := !st.cur.Status
	st.cur.Status, st.cur.Reason, st.cur.Message = true, r.Reason, msg
	if changed {
		st.cur.Transition = at
		m.sink.Emit(nodehealth.Event{Source: m.cfg.Source, Reason: r.Reason, Message: msg, Time: at})
	}
	m.sink.SetCondition(m.cfg.Source, st.cur)
}

// recover sets r's condition back to its default if r set it.
func (m *Monitor) recover(r *Rule, at time.Time, reason, msg string) {
	st := m.conds[r.Condition]
	if !st.cur.Status || st.cur.Reason != r.Reason {
		return
	}
	if reason == "" {
		reason = st.def.Reason
	}
	if msg == "" {
		msg = st.def.Message
	}
	st.cur = nodehealth.Condition{Type: st.def.Type, Reason: reason, Message: msg, Transition: at}
	st.rule = nil
	delete(m.hits, r)
	m.sink.Emit(nodehealth.Event{Source: m.cfg.Source, Reason: reason, Message: msg, Time: at, Normal: true})
	m.sink.SetCondition(m.cfg.Source, st.cur)
}

// Expire clears conditions whose rule's recovery.after has passed, and
// starts the recovery command of conditions that have one when due.
func (m *Monitor) Expire() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, d := range m.cfg.Conditions {
		st := m.conds[d.Type]
		if !st.cur.Status || st.rule == nil {
			continue
		}
		if r := st.rule; r.after > 0 && !now.Before(st.lastMatch.Add(r.after)) {
			m.recover(r, now, r.Recovery.Reason, r.Recovery.Message)
			continue
		}
		if r := st.rule; r.interval > 0 && !st.checking && !now.Before(st.lastCheck.Add(r.interval)) {
			st.checking, st.lastCheck = true, now
			m.checks.Add(1)
			go m.check(r, d.Type)
		}
	}
}

// check runs r's recovery command and clears cond when it succeeds and
// the condition is still True for r.
func (m *Monitor) check(r *Rule, cond string) {
	defer m.checks.Done()
	m.mu.Lock()
	ctx := m.runCtx
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, min(r.interval, 30*time.Second))
	defer cancel()
	rc := r.Recovery
	err := exec.CommandContext(ctx, rc.Command[0], rc.Command[1:]...).Run()
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.conds[cond]
	st.checking = false
	if err == nil && st.cur.Status && st.rule == r {
		m.recover(r, m.now(), rc.Reason, rc.Message)
	}
}

// lastLineOnly reports whether r's pattern cannot match across a newline,
// so that matching the newest line is the same as matching the buffer's end.
func (r *Rule) lastLineOnly() bool {
	return !strings.Contains(r.Pattern, `\n`) && !strings.Contains(r.Pattern, "(?s") &&
		!strings.Contains(r.Pattern, `\s`) && !strings.Contains(r.Pattern, `[^`)
}

// anchored is r's pattern anchored at the end of text, as NPD anchors it.
func (r *Rule) anchored() *regexp.Regexp {
	return r.endRE
}
