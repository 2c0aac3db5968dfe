//go:build tools

// Package tools pins the commands this module builds, so that
// `go mod tidy` keeps every module they need.
package tools

import (
	_ "github.com/flannel-io/flannel"
)
