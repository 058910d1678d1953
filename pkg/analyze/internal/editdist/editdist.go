// Package editdist measures how far apart two short strings are, so that
// analyzers can point at a likely typo: a label value or a plugin name one
// letter off from the wanted one.
package editdist

// Levenshtein returns the number of single-character insertions,
// deletions and substitutions that turn a into b, counting characters as
// runes. It uses two rows of the classic dynamic programme: O(len(a) x
// len(b)) time, O(len(b)) memory, fine for label values and names.
//
// Hand-written rather than imported (github.com/agnivade/levenshtein would
// do): it is fifteen lines, and the analyzers share this one copy.
func Levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
