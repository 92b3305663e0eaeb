// The etcd server's main module (see main.go). No go.sum is kept: tools.sh sets the version
// from tools.versions and resolves the rest with `go mod tidy` in the build folder.
module kb-platform/deploy/cluster/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.7.3
