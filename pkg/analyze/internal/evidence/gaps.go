package evidence

import "github.com/kdiag/kdiag/pkg/cluster"

// Gapped reports whether resource r could not be read for namespace ns: a
// gap recorded for ns or for every namespace. Checks skip what a gap
// covers and never conclude from the absence of its objects.
func Gapped(s *cluster.Snapshot, r cluster.Resource, ns string) bool {
	for _, g := range s.Gaps {
		if g.Resource == r && (g.Namespace == "" || g.Namespace == ns) {
			return true
		}
	}
	return false
}

// ReadIn reports whether the snapshot read resource r completely in
// namespace ns: no gap covers it, and the read was not limited to another
// namespace. A check needs it before saying that ns has no such object.
func ReadIn(s *cluster.Snapshot, r cluster.Resource, ns string) bool {
	return !Gapped(s, r, ns) && (s.Namespace == "" || s.Namespace == ns)
}
