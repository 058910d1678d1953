// Package examples embeds the committed example dumps, so that the kdiag
// binary can run its main job on them anywhere (`kdiag doctor --demo`).
package examples

import (
	"embed"
	"fmt"
	"io/fs"
)

// storeDemo is the dump of the lab's store-demo scenario. go:embed needs a
// package-level variable; it is never written, only read through StoreDemo.
//
//go:embed store-demo
var storeDemo embed.FS

// StoreDemo returns the store-demo dump as a file system rooted at the dump.
func StoreDemo() (fs.FS, error) {
	sub, err := fs.Sub(storeDemo, "store-demo")
	if err != nil {
		return nil, fmt.Errorf("embedded store-demo dump: %w", err)
	}
	return sub, nil
}
