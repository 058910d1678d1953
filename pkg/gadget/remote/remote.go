package remote

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/kdiag/kdiag/pkg/agentclient"
	"github.com/kdiag/kdiag/pkg/gadget"
	"github.com/kdiag/kdiag/pkg/gadget/render"
	"github.com/kdiag/kdiag/pkg/gadget/wire"
)

// Agents finds agents and streams from them; *agentclient.Client is one.
type Agents interface {
	Agents(ctx context.Context, nodes ...string) ([]agentclient.Agent, []string, error)
	Stream(ctx context.Context, a agentclient.Agent, path string, query url.Values) (io.ReadCloser, error)
}

// Options configure Run.
type Options struct {
	// Agents reaches the agents.
	Agents Agents
	// Gadget is wire.TCP, wire.DNS or wire.OOMKill.
	Gadget string
	// Params are sent to every agent.
	Params wire.Params
	// Nodes to trace; empty means every node that has an agent.
	Nodes []string
	// Event receives each event line (without its newline) with the node
	// it came from. All callbacks run on one goroutine, in arrival order,
	// so they may write to one output without locking. An error stops
	// every stream and is returned by Run, unless it wraps ErrBadEvent:
	// then the line is counted as unparsable and the streams go on.
	Event func(node string, line []byte) error
	// Notice receives messages for the user: lost events, agents'
	// warnings, and once every node has started or failed, which did.
	Notice func(msg string)
	// Grace is how long past Params.Duration Run waits for the agents'
	// final counts (default 15s).
	Grace time.Duration
	// MaxLine bounds a line (default 1 MiB); a longer one fails its node.
	MaxLine int
}

// ErrBadEvent marks an event line that Event could not decode.
var ErrBadEvent = errors.New("event not parsable")

// ErrNoneAnswered is returned when no node streamed.
var ErrNoneAnswered = errors.New("no node answered")

// State is what became of a node.
type State string

// States.
const (
	Answered State = "answered"
	NoAgent  State = "no agent"
	NoMatch  State = "no matching pod"
	Failed   State = "failed"
)

// NodeResult is one node's part of a run.
type NodeResult struct {
	Node  string
	State State
	// Reason says why a node has no agent, matched nothing or failed, or
	// notes how an answered stream ended short.
	Reason string
	// Stats are the agent's counts: final when Complete, else the last
	// reported (progress and lost lines).
	Stats gadget.Stats
	// Received is the number of event lines received from the node.
	Received uint64
	// Dropped counts events the agent dropped because this stream did
	// not keep up (its send queue was full); lost like Stats.Lost.
	Dropped uint64
	// Unparsed counts event lines Event could not decode.
	Unparsed uint64
	// Complete is set when the agent's final line arrived.
	Complete bool
	// Started is set once the agent attached the gadget.
	Started bool
}

// Result is the outcome of Run, one entry per node, sorted by node.
type Result struct {
	Nodes []NodeResult
}

// Count returns how many nodes are in state s.
func (r Result) Count(s State) int {
	n := 0
	for _, nr := range r.Nodes {
		if nr.State == s {
			n++
		}
	}
	return n
}

// Total sums the answered nodes' counts. Events are those received; Lost
// includes the events the agents dropped.
func (r Result) Total() gadget.Stats {
	var t gadget.Stats
	for _, nr := range r.Nodes {
		t.Events += nr.Received
		t.Lost += nr.Stats.Lost + nr.Dropped
		t.Missed += nr.Stats.Missed
		t.Filtered += nr.Stats.Filtered
		t.Unparsed += nr.Stats.Unparsed + nr.Unparsed
		t.Pending += nr.Stats.Pending
	}
	return t
}

// Summary returns the lines written to stderr at the end: one per node,
// then the total (the last line, as in local mode).
func (r Result) Summary(gadgetName string) []string {
	width := 0
	for _, nr := range r.Nodes {
		width = max(width, len(nr.Node))
	}
	var out []string
	for _, nr := range r.Nodes {
		line := fmt.Sprintf("  %-*s  %-15s ", width, nr.Node, nr.State)
		switch nr.State {
		case Answered, Failed:
			if nr.Started {
				st := nr.Stats
				st.Events = nr.Received
				line += strings.TrimPrefix(render.Summary("", st), ": ")
				if nr.Dropped > 0 {
					line += fmt.Sprintf(", %d dropped by the agent (this stream did not keep up)", nr.Dropped)
				}
				if nr.Unparsed > 0 {
					line += fmt.Sprintf(", %d not parsable here", nr.Unparsed)
				}
				if nr.Reason != "" {
					line += "; " + nr.Reason
				}
			} else {
				line += nr.Reason
			}
		default:
			line += nr.Reason
		}
		out = append(out, strings.TrimRight(line, " "))
	}
	total := render.Summary(gadgetName, r.Total())
	total += fmt.Sprintf(" (nodes: %d answered", r.Count(Answered))
	for _, s := range []State{NoAgent, NoMatch, Failed} {
		if n := r.Count(s); n > 0 {
			total += fmt.Sprintf(", %d %s", n, s)
		}
	}
	return append(out, total+")")
}

// item is what a node's reader hands to the merging loop.
type item struct {
	node int
	line []byte
	// err with done: the stream could not start or broke; done alone: EOF.
	err  error
	done bool
}

// Run streams the gadget from the agents of the selected nodes and merges
// the streams. It returns when every stream has ended: after
// Params.Duration, when ctx ends (an interrupt), or when every agent has
// stopped. The Result is valid even with an error.
func Run(ctx context.Context, opts Options) (Result, error) {
	res, err := run(ctx, opts)
	slices.SortFunc(res.Nodes, func(a, b NodeResult) int { return cmp.Compare(a.Node, b.Node) })
	return res, err
}

func run(ctx context.Context, opts Options) (Result, error) {
	if opts.Grace <= 0 {
		opts.Grace = 15 * time.Second
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = 1 << 20
	}
	agents, missing, err := opts.Agents.Agents(ctx, opts.Nodes...)
	if err != nil {
		return Result{}, err
	}
	var res Result
	for _, a := range agents {
		res.Nodes = append(res.Nodes, NodeResult{Node: a.Node})
	}
	for _, n := range missing {
		res.Nodes = append(res.Nodes, NodeResult{Node: n, State: NoAgent,
			Reason: fmt.Sprintf("%v in %s (install deploy/agent, or the agent is not ready)", agentclient.ErrNoAgent, agentclient.DefaultNamespace)})
	}
	if len(agents) == 0 {
		if len(opts.Nodes) == 0 {
			return res, fmt.Errorf("%w: %v in %s on any node (install deploy/agent)", ErrNoneAnswered, agentclient.ErrNoAgent, agentclient.DefaultNamespace)
		}
		return res, fmt.Errorf("%w: no node selected has an agent", ErrNoneAnswered)
	}

	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if d := opts.Params.Duration; d > 0 {
		var c2 context.CancelFunc
		streamCtx, c2 = context.WithTimeout(streamCtx, d+opts.Grace)
		defer c2()
	}
	items := make(chan item, 256)
	query := opts.Params.Query()
	for i, a := range agents {
		go read(streamCtx, opts, a, i, query, items)
	}

	pending, running := len(agents), len(agents)
	announce := func() {
		pending--
		if pending == 0 && opts.Notice != nil {
			opts.Notice(startNotice(opts.Gadget, res))
		}
	}
	var stopErr error
	for running > 0 {
		it := <-items
		nr := &res.Nodes[it.node]
		switch {
		case it.done:
			running--
			finish(ctx, nr, it.err)
			if !nr.Started {
				announce()
			}
		case wire.IsControl(it.line):
			var c wire.Control
			if err := json.Unmarshal(it.line, &c); err != nil {
				nr.Unparsed++
				continue
			}
			control(opts, nr, c, announce)
		case !nr.Started:
			// The agent writes its start line first: this is not a
			// gadget stream (a proxy's error page, another server).
			if nr.Unparsed == 0 {
				nr.Reason = fmt.Sprintf("not a gadget stream: it begins %q", truncate(it.line, 80))
			}
			nr.Unparsed++
		default:
			nr.Received++
			if stopErr != nil || opts.Event == nil {
				continue
			}
			if err := opts.Event(nr.Node, it.line); err != nil {
				if errors.Is(err, ErrBadEvent) {
					nr.Unparsed++
					continue
				}
				stopErr = err
				cancel()
			}
		}
	}
	if stopErr != nil {
		return res, stopErr
	}
	if res.Count(Answered) == 0 {
		return res, fmt.Errorf("%w: %s", ErrNoneAnswered, firstReason(res))
	}
	return res, nil
}

// read streams one agent into items; it always ends with a done item.
func read(ctx context.Context, opts Options, a agentclient.Agent, i int, query url.Values, items chan<- item) {
	send := func(it item) bool {
		select {
		case items <- it:
			return true
		case <-ctx.Done():
			// The merge loop still drains: block for the done item only.
			if it.done {
				items <- it
			}
			return false
		}
	}
	rc, err := opts.Agents.Stream(ctx, a, wire.Path(opts.Gadget), query)
	if err != nil {
		send(item{node: i, err: err, done: true})
		return
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 0, min(64<<10, opts.MaxLine)), opts.MaxLine)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		if !send(item{node: i, line: append([]byte(nil), line...)}) {
			send(item{node: i, done: true, err: ctx.Err()})
			return
		}
	}
	err = sc.Err()
	if errors.Is(err, bufio.ErrTooLong) {
		err = fmt.Errorf("a line longer than %d bytes: not a gadget stream", opts.MaxLine)
	}
	send(item{node: i, done: true, err: err})
}

func control(opts Options, nr *NodeResult, c wire.Control, announce func()) {
	if c.Stats != nil {
		nr.Stats = *c.Stats
	}
	nr.Dropped = max(nr.Dropped, c.Dropped)
	switch c.Stream {
	case wire.KindStart:
		if !nr.Started {
			nr.Started, nr.State = true, Answered
			announce()
		}
	case wire.KindLost:
		if opts.Notice != nil && c.Stats != nil {
			msg := render.LostWarning(opts.Gadget+" on "+nr.Node, c.Stats.Lost, c.Stats.Missed)
			if c.Dropped > 0 {
				msg += fmt.Sprintf("; %d events dropped by the agent because this stream did not keep up (through the API server)", c.Dropped)
			}
			opts.Notice(msg)
		}
	case wire.KindWarning:
		if opts.Notice != nil {
			opts.Notice(fmt.Sprintf("warning: %s on %s: %s", opts.Gadget, nr.Node, c.Error))
		}
	case wire.KindEnd:
		nr.Complete = true
		if c.Error != "" {
			nr.State, nr.Reason = Failed, "trace stopped: "+c.Error
		}
	}
}

// finish records how a node's stream ended.
func finish(ctx context.Context, nr *NodeResult, err error) {
	if !nr.Started {
		nr.State = Failed
		var re *agentclient.ResponseError
		switch {
		case errors.As(err, &re) && re.Code == http.StatusUnprocessableEntity:
			nr.State, nr.Reason = NoMatch, re.Message
		case errors.As(err, &re) && re.Code == http.StatusNotFound && !re.FromAPIServer && strings.Contains(re.Message, "page not found"):
			nr.Reason = "the agent has no gadget server (an older kdiag agent: upgrade deploy/agent)"
		case errors.As(err, &re):
			nr.Reason = re.Error()
		case ctx.Err() != nil:
			nr.Reason = "interrupted before the agent started"
		case err != nil:
			nr.Reason = err.Error()
		case nr.Reason != "":
		default:
			nr.Reason = "the agent closed the stream without starting (not a gadget stream)"
		}
		return
	}
	if nr.Complete {
		return
	}
	switch {
	case ctx.Err() != nil:
		nr.Reason = "interrupted: counts as last reported by the agent"
	case err != nil:
		nr.State, nr.Reason = Failed, fmt.Sprintf("stream broke (%v): counts as last reported", err)
	default:
		nr.State, nr.Reason = Failed, "stream ended before the agent's final count (agent restarted?)"
	}
}

func startNotice(gadgetName string, res Result) string {
	var on, other []string
	nodes := slices.Clone(res.Nodes)
	slices.SortFunc(nodes, func(a, b NodeResult) int { return cmp.Compare(a.Node, b.Node) })
	for _, nr := range nodes {
		if nr.Started {
			on = append(on, nr.Node)
		} else {
			other = append(other, fmt.Sprintf("%s (%s)", nr.Node, nr.State))
		}
	}
	msg := fmt.Sprintf("%s: tracing on %d node(s)", gadgetName, len(on))
	if len(on) > 0 {
		msg += ": " + strings.Join(on, ", ")
	}
	if len(other) > 0 {
		msg += "; not tracing: " + strings.Join(other, ", ")
	}
	return msg
}

func firstReason(res Result) string {
	for _, nr := range res.Nodes {
		if nr.Reason != "" {
			return nr.Node + ": " + nr.Reason
		}
	}
	return "no agent answered"
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
