package runtime

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLogFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c", "0.log")
	lf, err := OpenLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 5, time.UTC)
	lf.now = func() time.Time { return t0 }
	out, errs := lf.Stream("stdout"), lf.Stream("stderr")
	for _, w := range []struct {
		s *LogStream
		p string
	}{{out, "hel"}, {out, "lo\nwor"}, {errs, "oops\n"}, {out, "ld\nno newline"}} {
		if _, err := w.s.Write([]byte(w.p)); err != nil {
			t.Fatal(err)
		}
	}
	long := strings.Repeat("x", maxLogLine+10)
	if _, err := errs.Write([]byte(long)); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*LogStream{out, errs} {
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	lf.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l, err := ParseLogLine(sc.Bytes())
		if err != nil {
			t.Fatalf("ParseLogLine(%q): %v", sc.Text(), err)
		}
		if !l.Time.Equal(t0) {
			t.Errorf("time %s, want %s", l.Time, t0)
		}
		tag := "F"
		if l.Partial {
			tag = "P"
		}
		content := string(l.Content)
		if len(content) > 20 {
			content = content[:3] + "..." + string(rune('0'+len(content)%10))
		}
		got = append(got, l.Stream+" "+tag+" "+content)
	}
	want := []string{"stdout F hello", "stderr F oops", "stdout F world", "stderr P xxx..." + string(rune('0'+maxLogLine%10)), "stdout F no newline", "stderr F xxxxxxxxxx"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("log lines\n got %q\nwant %q", got, want)
	}
	for _, bad := range []string{"", "2026-11-28T12:00:00Z", "yesterday stdout F x", "2026-11-28T12:00:00Z stdout"} {
		if _, err := ParseLogLine([]byte(bad)); err == nil {
			t.Errorf("ParseLogLine(%q): no error", bad)
		}
	}
}
