#!/bin/sh
# mmdebstrap customize hook for the hakube base root ($1 = the root directory).
set -eu
root="$1"
in_root() { chroot "$root" "$@"; }

in_root systemctl enable systemd-networkd.service systemd-timesyncd.service \
	hakube-grow-var.service hakube-boot-health.service hakube-boot-assess.service
# Enabled per node by its tree (or started by hakube-firstboot), never by default.
in_root systemctl disable ssh.service haproxy.service keepalived.service systemd-resolved.service
# A distinct identity per node: machine-id is generated on first boot (empty
# file = first boot); SSH host keys and the build host's name are not baked in.
: > "$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*_key "$root"/etc/ssh/ssh_host_*_key.pub
rm -f "$root/etc/hostname" "$root/etc/resolv.conf"
# The ESP is mounted by hakube-esp from the boot disk; systemd's own ESP
# discovery (by the loader's partition UUID, which two copies of one image
# share) would race it for efi.mount. Root, /var and swap come from elsewhere.
mkdir -p "$root/etc/systemd/system-generators"
ln -sf /dev/null "$root/etc/systemd/system-generators/systemd-gpt-auto-generator"
# Mount points and directories the OS root needs. The kubelet watches
# /etc/kubernetes/manifests from its start and logs every second while it is
# missing (the upstream kubelet package ships it; workers never get a file).
mkdir -p "$root/efi" "$root/opt/cni/bin" "$root/etc/cni/net.d" "$root/usr/local/bin" "$root/usr/local/sbin"
mkdir -p -m 0700 "$root/etc/kubernetes/manifests"
mkdir -p "$root/var/lib/hakube/overlay/etc/upper" "$root/var/lib/hakube/overlay/etc/work" \
	"$root/var/lib/hakube/overlay/cni-bin/upper" "$root/var/lib/hakube/overlay/cni-bin/work"
# Nothing from the build that is not needed at runtime.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
	"$root"/var/log/apt "$root"/var/log/dpkg.log "$root"/var/log/alternatives.log "$root"/var/log/bootstrap.log
