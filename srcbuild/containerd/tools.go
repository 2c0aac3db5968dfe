//go:build tools

// Package tools pins the commands this module builds, so that
// `go mod tidy` keeps every module they need.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/containerd-stress"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
