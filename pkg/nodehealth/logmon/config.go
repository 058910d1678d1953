// Package logmon runs Node Problem Detector system-log-monitor configs:
// it reads NPD's JSON format unchanged (plugin kmsg, filelog or journald,
// conditions with defaults, temporary and permanent rules) and adds
// documented extension fields that make permanent conditions clear again
// (a recovery pattern or an expiry) and count repeated matches.
package logmon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// Plugin names accepted in a config's "plugin" field.
const (
	PluginKmsg     = "kmsg"
	PluginFilelog  = "filelog"
	PluginJournald = "journald"
)

// Rule types accepted in a rule's "type" field.
const (
	RuleTemporary = "temporary"
	RulePermanent = "permanent"
)

// Config is one system-log-monitor config file in NPD's format.
type Config struct {
	// Plugin is the log source: kmsg, filelog or journald.
	Plugin string `json:"plugin"`
	// PluginConfig holds source options; filelog uses "timestamp",
	// "message" and "timestampFormat", journald uses "source".
	PluginConfig map[string]string `json:"pluginConfig,omitempty"`
	// LogPath is the file, device or journal directory to read.
	LogPath string `json:"logPath,omitempty"`
	// Lookback is how far back in the log to start, as a Go duration.
	Lookback string `json:"lookback,omitempty"`
	// Delay is accepted for compatibility with NPD and ignored.
	Delay string `json:"delay,omitempty"`
	// BufferSize is how many recent lines a multi-line pattern sees.
	BufferSize int `json:"bufferSize,omitempty"`
	// Source names the monitor in events and conditions.
	Source string `json:"source"`
	// MetricsReporting is accepted for compatibility; metrics are always on.
	MetricsReporting *bool `json:"metricsReporting,omitempty"`
	// Conditions are the conditions this monitor owns, in their default
	// (problem absent) state.
	Conditions []ConditionDefault `json:"conditions,omitempty"`
	// Rules match log lines.
	Rules []Rule `json:"rules"`

	// File is where the config was loaded from, for error messages.
	File string `json:"-"`
	// lookback is Lookback parsed.
	lookback time.Duration
}

// ConditionDefault is a condition in its problem-absent state.
type ConditionDefault struct {
	Type    string `json:"type"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// Rule is one log pattern. NPD's fields come first; Recovery and Frequency
// are kdiag extensions that NPD ignores.
type Rule struct {
	// Type is temporary (an Event) or permanent (a condition).
	Type string `json:"type"`
	// Condition names the condition a permanent rule sets.
	Condition string `json:"condition,omitempty"`
	// Reason is the Event or condition reason.
	Reason string `json:"reason"`
	// Pattern is a Go regexp matched against the end of the log buffer.
	Pattern string `json:"pattern"`
	// PatternGeneratedMessageSuffix is appended to the generated message.
	PatternGeneratedMessageSuffix string `json:"patternGeneratedMessageSuffix,omitempty"`
	// Recovery lets a permanent condition go back to its default.
	Recovery *Recovery `json:"recovery,omitempty"`
	// Frequency sets the condition only after Count matches within Window.
	Frequency *Frequency `json:"frequency,omitempty"`

	re         *regexp.Regexp
	endRE      *regexp.Regexp
	recoveryRE *regexp.Regexp
	after      time.Duration
	window     time.Duration
	interval   time.Duration
}

// Recovery says when a permanent condition that this rule set clears.
type Recovery struct {
	// Pattern clears the condition when a later log line matches it.
	Pattern string `json:"pattern,omitempty"`
	// After clears the condition this long after the last match (a Go duration).
	After string `json:"after,omitempty"`
	// Command is a health check: while the condition is True it runs every
	// Interval (default 1m, time limit the same up to 30s), and exit status
	// 0 clears the condition.
	Command []string `json:"command,omitempty"`
	// Interval between health checks (a Go duration).
	Interval string `json:"interval,omitempty"`
	// Reason and Message describe the cleared condition; they default to the
	// condition's default reason and message.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// Frequency makes a permanent rule fire only on repeated matches.
type Frequency struct {
	// Count matches within Window set the condition.
	Count int `json:"count"`
	// Window is a Go duration.
	Window string `json:"window"`
}

// LoadFile reads and validates one config file.
func LoadFile(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read monitor config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("monitor config %s: %w", path, err)
	}
	c.File = path
	return c, nil
}

// Parse decodes and validates a config. Unknown fields are ignored, as NPD
// ignores them, so that configs written for newer NPD versions still load.
func Parse(b []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decode JSON: %w", err)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// validate checks the config, compiles its patterns and fills defaults.
func (c *Config) validate() error {
	var errs []error
	switch c.Plugin {
	case PluginKmsg:
		if c.LogPath == "" {
			c.LogPath = "/dev/kmsg"
		}
	case PluginFilelog:
		if c.LogPath == "" {
			errs = append(errs, errors.New("filelog plugin needs logPath"))
		}
		if c.PluginConfig["timestamp"] == "" || c.PluginConfig["message"] == "" || c.PluginConfig["timestampFormat"] == "" {
			errs = append(errs, errors.New(`filelog plugin needs pluginConfig "timestamp", "message" and "timestampFormat"`))
		}
		for _, k := range []string{"timestamp", "message"} {
			if _, err := regexp.Compile(c.PluginConfig[k]); err != nil {
				errs = append(errs, fmt.Errorf("pluginConfig %q: %w", k, err))
			}
		}
	case PluginJournald:
	case "":
		errs = append(errs, errors.New(`missing "plugin" (kmsg, filelog or journald)`))
	default:
		errs = append(errs, fmt.Errorf("unknown plugin %q (want kmsg, filelog or journald)", c.Plugin))
	}
	if c.Source == "" {
		errs = append(errs, errors.New(`missing "source"`))
	}
	if c.BufferSize <= 0 {
		c.BufferSize = 10
	}
	if c.Lookback != "" && c.Lookback != "0" {
		d, err := time.ParseDuration(c.Lookback)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("lookback %q is not a duration", c.Lookback))
		}
		c.lookback = d
	}
	conds := map[string]bool{}
	for i, d := range c.Conditions {
		if d.Type == "" || d.Reason == "" {
			errs = append(errs, fmt.Errorf("conditions[%d]: needs type and reason", i))
		}
		conds[d.Type] = true
	}
	for i := range c.Rules {
		r := &c.Rules[i]
		if err := r.compile(conds); err != nil {
			errs = append(errs, fmt.Errorf("rules[%d] (%s): %w", i, r.Reason, err))
		}
	}
	return errors.Join(errs...)
}

// compile checks one rule and compiles its patterns.
func (r *Rule) compile(conds map[string]bool) error {
	var err error
	if r.Reason == "" {
		return errors.New("missing reason")
	}
	if r.re, err = regexp.Compile(r.Pattern); err != nil || r.Pattern == "" {
		return fmt.Errorf("pattern %q: %v", r.Pattern, orEmpty(err))
	}
	r.endRE = regexp.MustCompile(`(?:` + r.Pattern + `)\z`)
	switch r.Type {
	case RuleTemporary:
		if r.Recovery != nil || r.Frequency != nil {
			return errors.New("recovery and frequency apply to permanent rules only")
		}
	case RulePermanent:
		if !conds[r.Condition] {
			return fmt.Errorf("condition %q is not declared in \"conditions\"", r.Condition)
		}
	default:
		return fmt.Errorf("type %q (want temporary or permanent)", r.Type)
	}
	if rc := r.Recovery; rc != nil {
		if rc.Pattern == "" && rc.After == "" && len(rc.Command) == 0 {
			return errors.New("recovery needs a pattern, after or command")
		}
		if rc.Interval != "" && len(rc.Command) == 0 {
			return errors.New("recovery interval needs a command")
		}
		if len(rc.Command) > 0 {
			if rc.Command[0] == "" {
				return errors.New("recovery command: empty program name")
			}
			r.interval = time.Minute
			if rc.Interval != "" {
				if r.interval, err = time.ParseDuration(rc.Interval); err != nil || r.interval <= 0 {
					return fmt.Errorf("recovery interval %q is not a positive duration", rc.Interval)
				}
			}
		}
		if rc.Pattern != "" {
			if r.recoveryRE, err = regexp.Compile(rc.Pattern); err != nil {
				return fmt.Errorf("recovery pattern: %w", err)
			}
		}
		if rc.After != "" {
			if r.after, err = time.ParseDuration(rc.After); err != nil || r.after <= 0 {
				return fmt.Errorf("recovery after %q is not a positive duration", rc.After)
			}
		}
	}
	if f := r.Frequency; f != nil {
		if f.Count < 1 {
			return errors.New("frequency count must be at least 1")
		}
		if r.window, err = time.ParseDuration(f.Window); err != nil || r.window <= 0 {
			return fmt.Errorf("frequency window %q is not a positive duration", f.Window)
		}
	}
	return nil
}

func orEmpty(err error) string {
	if err == nil {
		return "empty pattern"
	}
	return strings.TrimPrefix(err.Error(), "error parsing regexp: ")
}
