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
# AppArmor profiles that do nothing on a hakube node: Debian's apparmor ships
# about 90 profiles for desktop programs (browsers, editors, chat clients,
# Xorg, sbuild), and apparmor.service compiled every one of them at each
# first boot (about 20 s of a TCG guest's boot, before anything else could
# start). Dropped: profiles attached to one plain path that does not exist in
# this root, and `flags=(unconfined)` profiles, which confine nothing (they
# let programs create user namespaces where the kernel restricts that;
# Debian's kernel does not). The rest stay, and containerd loads its own
# profile for containers.
for f in "$root"/etc/apparmor.d/*; do
	[ -f "$f" ] || continue
	if grep -q 'flags=(unconfined)' "$f"; then
		rm -f "$f"
		continue
	fi
	path=$(sed -n 's/^[[:space:]]*profile [^[:space:]]* \(\/[^[:space:]]*\).*/\1/p' "$f" | head -n 1)
	case $path in "" | *[{}*?[]*) continue ;; esac
	[ -e "$root$path" ] || rm -f "$f"
done
# Nothing from the build that is not needed at runtime.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
	"$root"/var/log/apt "$root"/var/log/dpkg.log "$root"/var/log/alternatives.log "$root"/var/log/bootstrap.log
