package logmon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Source produces log lines until its context ends.
type Source interface {
	Run(ctx context.Context, out chan<- Line) error
}

// NewSource returns the source a config's plugin names.
func NewSource(c *Config) (Source, error) {
	switch c.Plugin {
	case PluginKmsg:
		return kmsgSource{path: c.LogPath, lookback: c.lookback}, nil
	case PluginFilelog:
		return &fileSource{
			path:     c.LogPath,
			lookback: c.lookback,
			tsRE:     regexp.MustCompile(c.PluginConfig["timestamp"]),
			msgRE:    regexp.MustCompile(c.PluginConfig["message"]),
			tsFormat: c.PluginConfig["timestampFormat"],
			poll:     250 * time.Millisecond,
		}, nil
	case PluginJournald:
		path := c.LogPath
		if path == "" {
			path = "/var/log/journal"
		}
		return journaldSource{path: path, identifier: c.PluginConfig["source"], lookback: c.lookback}, nil
	}
	return nil, fmt.Errorf("unknown plugin %q", c.Plugin)
}

// fileSource tails a text log file whose lines carry a timestamp, in the
// way NPD's filelog plugin does: "timestamp" and "message" regexps and a Go
// time layout. It polls instead of using inotify because a poll every
// 250 ms costs nothing measurable and also works across log rotation on
// every filesystem.
type fileSource struct {
	path        string
	lookback    time.Duration
	tsRE, msgRE *regexp.Regexp
	tsFormat    string
	poll        time.Duration
}

// Run tails the file until ctx ends.
func (s *fileSource) Run(ctx context.Context, out chan<- Line) error {
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	defer func() { _ = f.Close() }()
	cutoff := time.Now().Add(-s.lookback)
	if s.lookback <= 0 {
		if _, err := f.Seek(0, io.SeekEnd); err != nil {
			return fmt.Errorf("seek to the end of %s: %w", s.path, err)
		}
	}
	r := bufio.NewReader(f)
	var partial string
	tick := time.NewTicker(s.poll)
	defer tick.Stop()
	for {
		for {
			chunk, err := r.ReadString('\n')
			if err != nil {
				partial += chunk
				break
			}
			line := partial + chunk[:len(chunk)-1]
			partial = ""
			l, ok := s.parse(line)
			if !ok || l.Time.Before(cutoff) {
				continue
			}
			select {
			case out <- l:
			case <-ctx.Done():
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		// A file shorter than our offset was truncated or rotated: start over.
		if st, err := os.Stat(s.path); err == nil {
			if pos, perr := f.Seek(0, io.SeekCurrent); perr == nil && st.Size() < pos-int64(r.Buffered()) {
				_ = f.Close()
				if f, err = os.Open(s.path); err != nil {
					return fmt.Errorf("reopen rotated log file: %w", err)
				}
				r.Reset(f)
				partial = ""
			}
		}
	}
}

// parse extracts the timestamp and message of one line.
func (s *fileSource) parse(line string) (Line, bool) {
	ts := s.tsRE.FindString(line)
	m := s.msgRE.FindStringSubmatch(line)
	if ts == "" || len(m) < 2 {
		return Line{}, false
	}
	t, err := time.ParseInLocation(s.tsFormat, ts, time.Local)
	if err != nil {
		return Line{}, false
	}
	if t.Year() == 0 {
		// Syslog timestamps have no year.
		now := time.Now()
		t = t.AddDate(now.Year(), 0, 0)
		if t.After(now.Add(24 * time.Hour)) {
			t = t.AddDate(-1, 0, 0)
		}
	}
	return Line{Time: t, Text: m[1]}, true
}

// journaldSource follows the systemd journal through journalctl. kdiag is
// built without cgo, so it cannot link libsystemd as NPD does; journalctl
// is on every systemd host and its JSON output is stable.
type journaldSource struct {
	path       string
	identifier string
	lookback   time.Duration
}

// Run follows the journal until ctx ends.
func (j journaldSource) Run(ctx context.Context, out chan<- Line) error {
	if _, err := os.Stat(j.path); err != nil {
		return fmt.Errorf("journald: no journal at %s: %w", j.path, err)
	}
	bin, err := exec.LookPath("journalctl")
	if err != nil {
		return fmt.Errorf("journald: journal at %s but no journalctl to read it: %w", j.path, err)
	}
	args := []string{"-D", j.path, "--follow", "--output=json", "--lines=0"}
	if j.lookback > 0 {
		args = []string{"-D", j.path, "--follow", "--output=json", "--since=" + time.Now().Add(-j.lookback).Format("2006-01-02 15:04:05")}
	}
	if j.identifier != "" {
		args = append(args, "SYSLOG_IDENTIFIER="+j.identifier)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("journald: %w", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("journald: start journalctl: %w", err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var e struct {
			Message  any    `json:"MESSAGE"`
			Realtime string `json:"__REALTIME_TIMESTAMP"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		msg, ok := e.Message.(string)
		if !ok {
			continue
		}
		us, _ := strconv.ParseInt(e.Realtime, 10, 64)
		select {
		case out <- Line{Time: time.UnixMicro(us), Text: msg}:
		case <-ctx.Done():
		}
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		return nil
	}
	if err == nil {
		err = errors.New("journalctl exited")
	}
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		err = fmt.Errorf("%w: %s", err, truncate(strings.ReplaceAll(msg, "\n", " ")))
	}
	return fmt.Errorf("journald: journalctl -D %s: %w", j.path, err)
}
