package logmon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Line is one log message handed to the rules.
type Line struct {
	// Time is when the message was logged.
	Time time.Time
	// Text is the message without prefix.
	Text string
}

// KmsgRecord is one /dev/kmsg record.
type KmsgRecord struct {
	// Priority is the syslog level (0 emerg .. 7 debug) and Facility the
	// syslog facility, from the record's "prefix" field.
	Priority, Facility int
	// Seq is the kernel's 64-bit record sequence number.
	Seq uint64
	// Since is the time since boot at which the record was logged.
	Since time.Duration
	// Message is the text, with the kernel's \xNN escapes undone.
	Message string
}

// ParseKmsgRecord parses a record in the format documented in
// Documentation/ABI/testing/dev-kmsg: "prefix,seq,usec,flags[,...];text"
// followed by optional " KEY=value" dictionary lines, which are dropped.
// It is hand-written because no library parses this small format.
func ParseKmsgRecord(b []byte) (KmsgRecord, error) {
	s := string(b)
	head, msg, ok := strings.Cut(s, ";")
	if !ok {
		return KmsgRecord{}, fmt.Errorf("kmsg record %q: no ';'", truncate(s))
	}
	f := strings.Split(head, ",")
	if len(f) < 4 {
		return KmsgRecord{}, fmt.Errorf("kmsg record %q: want prefix,seq,usec,flags", truncate(s))
	}
	prefix, err1 := strconv.Atoi(f[0])
	seq, err2 := strconv.ParseUint(f[1], 10, 64)
	usec, err3 := strconv.ParseInt(f[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return KmsgRecord{}, fmt.Errorf("kmsg record %q: %w", truncate(s), err)
	}
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return KmsgRecord{
		Priority: prefix & 7, Facility: prefix >> 3, Seq: seq,
		Since: time.Duration(usec) * time.Microsecond, Message: unescapeKmsg(msg),
	}, nil
}

// unescapeKmsg undoes the kernel's \xNN escaping of non-printable bytes.
func unescapeKmsg(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// bootTime is the wall-clock time at which the monotonic clock (the clock
// of kmsg timestamps) was zero.
func bootTime() (time.Time, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Time{}, fmt.Errorf("read monotonic clock: %w", err)
	}
	return time.Now().Add(-time.Duration(ts.Nano())), nil
}

// kmsgSource reads /dev/kmsg (or another path in its format).
type kmsgSource struct {
	path     string
	lookback time.Duration
}

// Run reads records until ctx ends. With no lookback it starts at the end
// of the ring buffer; otherwise it starts at the beginning and drops
// records older than the lookback.
func (k kmsgSource) Run(ctx context.Context, out chan<- Line) error {
	f, err := os.OpenFile(k.path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open kernel log: %w", err)
	}
	defer f.Close()
	boot, err := bootTime()
	if err != nil {
		return err
	}
	if k.lookback <= 0 {
		if _, err := f.Seek(0, 2); err != nil {
			return fmt.Errorf("seek to the end of %s: %w", k.path, err)
		}
	}
	cutoff := time.Now().Add(-k.lookback)
	// A closed file wakes the blocked read when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = f.Close() })
	defer stop()
	// The file is non-blocking so that Close interrupts reads through
	// the runtime poller.
	buf := make([]byte, 8192)
	for {
		n, err := f.Read(buf)
		switch {
		case errors.Is(err, syscall.EPIPE):
			// The kernel overwrote records we had not read yet; go on
			// from the oldest one left.
			continue
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read %s: %w", k.path, err)
		}
		rec, perr := ParseKmsgRecord(buf[:n])
		if perr != nil {
			continue
		}
		t := boot.Add(rec.Since)
		if t.Before(cutoff) {
			continue
		}
		select {
		case out <- Line{Time: t, Text: rec.Message}:
		case <-ctx.Done():
			return nil
		}
	}
}
