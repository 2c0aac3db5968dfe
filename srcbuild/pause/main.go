// Command pause holds a pod sandbox's namespaces: it sleeps until SIGINT or
// SIGTERM, and as PID 1 of the pod (shared PID namespace) it reaps the
// zombies that other containers' orphans leave behind. It does what
// Kubernetes' build/pause does, written in Go for this from-source build.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped by srcbuild/build (-X main.version=...).
var version = "unset"

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Printf("pause version %s (hakube, from source)\n", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		switch sig {
		case syscall.SIGCHLD:
			reap()
		default:
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", sig)
			os.Exit(0)
		}
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
