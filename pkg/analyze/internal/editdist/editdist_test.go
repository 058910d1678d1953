package editdist

import "testing"

func TestLevenshtein(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"nginx", "nginx", 0},
		{"", "web", 3},
		{"web", "", 3},
		{"order", "ordr", 1},       // deletion
		{"order", "orders", 1},     // insertion
		{"order", "ordex", 1},      // substitution
		{"frontend", "fronted", 1}, // the typo a selector test uses
		{"kitten", "sitting", 3},
		{"ngnix", "nginx", 2},
		{"api", "db", 3},
		{"forward", "froward", 2}, // a transposition costs two
		{"café", "cafe", 1},       // runes, not bytes
		{"日本", "日本語", 1},
	}
	for _, tc := range cases {
		if got := Levenshtein(tc.a, tc.b); got != tc.want {
			t.Errorf("Levenshtein(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := Levenshtein(tc.b, tc.a); got != tc.want {
			t.Errorf("Levenshtein(%q, %q) = %d, want %d (not symmetric)", tc.b, tc.a, got, tc.want)
		}
	}
}
