// hakube's pause: the process that holds a pod's namespaces open.
module hakube.dev/srcbuild/pause

go 1.26.0
