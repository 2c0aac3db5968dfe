// Stand-in for a module the Go module proxy does not serve
// (github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc answers 404).
// Only flannel's TencentCloud VPC backend imports it; with this stand-in that
// one backend fails on use with a clear error, every other backend (vxlan,
// host-gw, wireguard ...) is flannel's own code. Not used by hakube.
module github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc

go 1.22
