package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Container logs are written in the CRI log format, as containerd writes
// /var/log/pods/.../<n>.log: one line per line of output,
//
//	2026-11-28T16:19:15.372150012Z stdout F the line
//
// with the time it was written, the stream, and F (full) or P (partial,
// for a line cut because it was too long). The time stamps are what lets
// `kubectl logs --since` and `--timestamps` work.

// maxLogLine is where a line without newline is cut into partial entries,
// as containerd does (16 KiB).
const maxLogLine = 16 << 10

// LogFile is a container run's log file, shared by its stdout and stderr
// writers.
type LogFile struct {
	mu  sync.Mutex
	f   *os.File
	now func() time.Time
}

// OpenLogFile creates (or appends to) a CRI-format log file.
func OpenLogFile(path string) (*LogFile, error) {
	if err := ensureDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open container log: %w", err)
	}
	return &LogFile{f: f, now: time.Now}, nil
}

// Close closes the file.
func (l *LogFile) Close() error { return l.f.Close() }

// Stream returns the writer of one stream ("stdout" or "stderr"). It
// buffers an incomplete last line until its newline comes; Flush writes
// it out.
func (l *LogFile) Stream(name string) *LogStream { return &LogStream{file: l, name: name} }

// LogStream writes one stream's output as CRI log lines.
type LogStream struct {
	file    *LogFile
	name    string
	pending []byte
}

// Write implements io.Writer.
func (s *LogStream) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.pending = append(s.pending, p...)
			for len(s.pending) >= maxLogLine {
				if err := s.file.entry(s.name, "P", s.pending[:maxLogLine]); err != nil {
					return 0, err
				}
				s.pending = s.pending[maxLogLine:]
			}
			break
		}
		line := p[:i]
		if len(s.pending) > 0 {
			line = append(s.pending, line...)
			s.pending = nil
		}
		if err := s.file.entry(s.name, "F", line); err != nil {
			return 0, err
		}
		p = p[i+1:]
	}
	return n, nil
}

// Flush writes a buffered incomplete line, once the process has ended.
func (s *LogStream) Flush() error {
	if len(s.pending) == 0 {
		return nil
	}
	err := s.file.entry(s.name, "F", s.pending)
	s.pending = nil
	return err
}

func (l *LogFile) entry(stream, tag string, line []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	buf := make([]byte, 0, len(line)+48)
	buf = l.now().UTC().AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, ' ')
	buf = append(buf, stream...)
	buf = append(buf, ' ')
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, line...)
	buf = append(buf, '\n')
	_, err := l.f.Write(buf)
	return err
}

// LogLine is one parsed CRI log line.
type LogLine struct {
	Time    time.Time
	Stream  string
	Partial bool
	// Content is the output, without the trailing newline.
	Content []byte
}

// ParseLogLine parses one CRI log line (without its newline).
func ParseLogLine(b []byte) (LogLine, error) {
	var l LogLine
	ts, rest, ok := bytes.Cut(b, []byte(" "))
	if !ok {
		return l, errors.New("CRI log line without stream")
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return l, fmt.Errorf("CRI log line time: %w", err)
	}
	stream, rest, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return l, errors.New("CRI log line without tag")
	}
	tag, content, _ := bytes.Cut(rest, []byte(" "))
	l.Time, l.Stream, l.Content = t, string(stream), content
	l.Partial = string(tag) == "P"
	return l, nil
}

// WriteContent writes the line's content as the kubelet serves it: with
// its newline unless partial, and prefixed by its time with timestamps.
func (l LogLine) WriteContent(w io.Writer, timestamps bool) error {
	var buf []byte
	if timestamps {
		buf = l.Time.AppendFormat(buf, time.RFC3339Nano)
		buf = append(buf, ' ')
	}
	buf = append(buf, l.Content...)
	if !l.Partial {
		buf = append(buf, '\n')
	}
	_, err := w.Write(buf)
	return err
}
