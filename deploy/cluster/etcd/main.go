// Command etcd is the etcd server, built from the go.etcd.io/etcd/server/v3 module by
// deploy/cluster/tools.sh (the etcd release binaries are not reachable from CI; the Go module
// proxy is). The version is the one deploy/cluster/tools.versions names: tools.sh copies this
// folder into the tool's cache folder, requires that version and runs `go mod tidy` there.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
