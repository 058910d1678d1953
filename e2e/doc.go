// Package e2e holds kdiag's end-to-end tests: the tutorial
// (docs/tutorial.md) played against a real lab with real pods, through
// the kdiag and kubectl binaries, as a user runs it. They need root (the
// lab's pods live in network namespaces and cgroups) and skip otherwise;
// CI runs them as root.
package e2e
