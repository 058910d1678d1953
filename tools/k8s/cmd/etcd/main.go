// Command etcd is a thin wrapper around etcd's own entry point, so that the
// lab can build etcd from the Go module proxy at the version pinned in this
// module's go.mod, with no download from anywhere else.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
