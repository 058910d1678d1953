// Package evidence holds what the area analyzers share to write the
// evidence of their findings: capped lists, ages relative to the snapshot,
// one-line messages, plurals, event lines, and whether the snapshot read
// what a conclusion would rest on.
//
// Everything here is a pure function of its arguments; ages are measured
// against a time the caller passes (the snapshot's TakenAt), never the
// wall clock.
package evidence

import (
	"fmt"
	"strings"
)

// MaxListed caps lists in evidence and titles: the first MaxListed items,
// then a line or phrase saying how many more there are.
const MaxListed = 5

// MaxMessage caps the kubelet, scheduler and controller messages that
// evidence quotes.
const MaxMessage = 300

// Capped returns the first MaxListed items and, when there are more, a
// last item "... and N more".
func Capped(items []string) []string { return CappedN(items, MaxListed) }

// CappedN returns the first n items and, when there are more, a last item
// "... and N more". It never changes items.
func CappedN(items []string, n int) []string {
	if len(items) <= n {
		return items
	}
	out := append([]string(nil), items[:n]...)
	return append(out, fmt.Sprintf("... and %d more", len(items)-n))
}

// Join joins the first MaxListed items with ", " and counts the rest:
// "a, b, c, d, e ... and 2 more".
func Join(items []string) string { return JoinN(items, MaxListed) }

// JoinN joins the first n items with ", " and counts the rest.
func JoinN(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s ... and %d more", strings.Join(items[:n], ", "), len(items)-n)
}

// Short collapses the whitespace of a message (kubelet messages span
// lines) and caps it at MaxMessage characters, marking a cut with "…".
func Short(msg string) string { return ShortN(msg, MaxMessage) }

// ShortN collapses the whitespace of a message and caps it at n
// characters (runes), marking a cut with "…".
func ShortN(msg string, n int) string {
	msg = strings.Join(strings.Fields(msg), " ")
	if r := []rune(msg); len(r) > n {
		return string(r[:n]) + "…"
	}
	return msg
}

// Plural renders a count and a noun: "1 pod", "3 pods". The plural adds
// "s"; pass a noun that takes it.
func Plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// Word picks the form of a word that agrees with n subjects:
// Word(1, "has", "have") is "has", Word(3, "has", "have") is "have".
func Word(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
