// Package psi reads Linux pressure stall information (PSI) for the node
// (/proc/pressure) and for pods (cgroup v2 *.pressure files), turns node
// memory and I/O pressure into conditions with hysteresis, and exports
// every value as a metric.
package psi

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Resources returns the PSI resources the agent reads.
func Resources() []string { return []string{"cpu", "memory", "io"} }

// Stat is one PSI line: "some" or "full".
type Stat struct {
	Avg10, Avg60, Avg300 float64
	// Total is the cumulative stall time in microseconds.
	Total uint64
}

// Pressure is one resource's PSI.
type Pressure struct {
	Some Stat
	// Full is absent (HasFull false) for cpu on kernels before 5.13.
	Full    Stat
	HasFull bool
}

// Parse reads a pressure file. PSI has no parser in prometheus/procfs for
// cgroup files, and the format is two fixed lines, so it is parsed here.
func Parse(r io.Reader) (Pressure, error) {
	var p Pressure
	seen := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		var st Stat
		for _, f := range fields[1:] {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				return Pressure{}, fmt.Errorf("PSI field %q: want key=value", f)
			}
			var err error
			switch k {
			case "avg10":
				st.Avg10, err = strconv.ParseFloat(v, 64)
			case "avg60":
				st.Avg60, err = strconv.ParseFloat(v, 64)
			case "avg300":
				st.Avg300, err = strconv.ParseFloat(v, 64)
			case "total":
				st.Total, err = strconv.ParseUint(v, 10, 64)
			}
			if err != nil {
				return Pressure{}, fmt.Errorf("PSI field %q: %w", f, err)
			}
		}
		switch fields[0] {
		case "some":
			p.Some, seen = st, true
		case "full":
			p.Full, p.HasFull = st, true
		default:
			return Pressure{}, fmt.Errorf("PSI line %q: want some or full", sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		return Pressure{}, fmt.Errorf("read PSI: %w", err)
	}
	if !seen {
		return Pressure{}, fmt.Errorf("PSI: no \"some\" line")
	}
	return p, nil
}

// ReadFile parses one pressure file.
func ReadFile(path string) (Pressure, error) {
	f, err := os.Open(path)
	if err != nil {
		return Pressure{}, fmt.Errorf("read PSI: %w", err)
	}
	defer f.Close()
	p, err := Parse(f)
	if err != nil {
		return Pressure{}, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ReadDir reads <dir>/{cpu,memory,io} (the layout of /proc/pressure) or,
// with suffix ".pressure", a cgroup v2 directory's *.pressure files. It
// returns what it could read and an error for the rest.
func ReadDir(dir, suffix string) (map[string]Pressure, error) {
	out := map[string]Pressure{}
	var errs []string
	for _, r := range Resources() {
		p, err := ReadFile(filepath.Join(dir, r+suffix))
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		out[r] = p
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}
