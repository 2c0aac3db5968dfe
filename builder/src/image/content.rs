//! OS content the image work ships in the shared OS root (not per node):
//! initramfs hooks that mount /var and the /etc overlay, fstab, systemd units
//! for the runtimes, kubelet, etcd, growing /var and boot health.
//! Per-node configuration comes from `render` and lives on /var.

/// A file laid into the root filesystem at `path` (relative to `/`).
#[derive(Debug, Clone, Copy)]
pub struct OsFile {
    pub path: &'static str,
    pub mode: u32,
    pub contents: &'static [u8],
}

macro_rules! os_file {
    ($path:literal, $mode:literal, $src:literal) => {
        OsFile {
            path: $path,
            mode: $mode,
            contents: include_bytes!(concat!("../../os/", $src)),
        }
    };
}

/// Laid in before the kernel package is installed, so its postinst builds the
/// initramfs with them once (no second update-initramfs run).
pub const INITRAMFS_FILES: &[OsFile] = &[
    os_file!(
        "etc/initramfs-tools/hooks/hakube",
        0o755,
        "initramfs/hakube-hook"
    ),
    os_file!(
        "etc/initramfs-tools/scripts/local-bottom/hakube-var",
        0o755,
        "initramfs/hakube-var"
    ),
    // Also used by the root (the ESP generator); here so the hook finds it.
    os_file!(
        "usr/lib/hakube/boot-part",
        0o755,
        "rootfs/usr/lib/hakube/boot-part"
    ),
];

/// Laid in after all packages are installed.
pub const ROOT_FILES: &[OsFile] = &[
    os_file!("etc/fstab", 0o644, "rootfs/etc/fstab"),
    os_file!(
        "usr/lib/systemd/system/kubelet.service",
        0o644,
        "rootfs/usr/lib/systemd/system/kubelet.service"
    ),
    os_file!(
        "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
        0o644,
        "rootfs/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"
    ),
    os_file!(
        "usr/lib/systemd/system/containerd.service",
        0o644,
        "rootfs/usr/lib/systemd/system/containerd.service"
    ),
    os_file!(
        "usr/lib/systemd/system/crio.service",
        0o644,
        "rootfs/usr/lib/systemd/system/crio.service"
    ),
    os_file!(
        "usr/lib/systemd/system/etcd.service",
        0o644,
        "rootfs/usr/lib/systemd/system/etcd.service"
    ),
    os_file!(
        "usr/lib/systemd/system/hakube-grow-var.service",
        0o644,
        "rootfs/usr/lib/systemd/system/hakube-grow-var.service"
    ),
    os_file!(
        "usr/lib/systemd/system/hakube-boot-health.service",
        0o644,
        "rootfs/usr/lib/systemd/system/hakube-boot-health.service"
    ),
    os_file!(
        "usr/lib/systemd/system/hakube-boot-assess.service",
        0o644,
        "rootfs/usr/lib/systemd/system/hakube-boot-assess.service"
    ),
    os_file!(
        "usr/lib/systemd/system/hakube-boot-bad.service",
        0o644,
        "rootfs/usr/lib/systemd/system/hakube-boot-bad.service"
    ),
    os_file!(
        "usr/lib/hakube/boot-bad",
        0o755,
        "rootfs/usr/lib/hakube/boot-bad"
    ),
    os_file!(
        "usr/lib/systemd/system/ssh.service.d/hakube-host-keys.conf",
        0o644,
        "rootfs/usr/lib/systemd/system/ssh.service.d/hakube-host-keys.conf"
    ),
    os_file!(
        "usr/lib/systemd/system-preset/00-hakube.preset",
        0o644,
        "rootfs/usr/lib/systemd/system-preset/00-hakube.preset"
    ),
    os_file!(
        "usr/lib/systemd/system-generators/hakube-esp",
        0o755,
        "rootfs/usr/lib/systemd/system-generators/hakube-esp"
    ),
    os_file!(
        "usr/lib/hakube/grow-var",
        0o755,
        "rootfs/usr/lib/hakube/grow-var"
    ),
    os_file!(
        "usr/lib/hakube/boot-health",
        0o755,
        "rootfs/usr/lib/hakube/boot-health"
    ),
];

/// The mmdebstrap customize hook (enables units, strips build leftovers).
pub const CUSTOMIZE_HOOK: &[u8] = include_bytes!("../../os/customize.sh");

/// Writes `files` under `dir` with their modes (directories 0755).
pub fn write_files(dir: &std::path::Path, files: &[OsFile]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        let path = dir.join(f.path);
        if let Some(parent) = path.parent() {
            super::fsutil::create_dirs_0755(dir, parent)?;
        }
        std::fs::write(&path, f.contents).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_script_mounts_var_and_the_etc_overlay() {
        let s = std::str::from_utf8(INITRAMFS_FILES[1].contents).unwrap();
        assert!(s.contains("/usr/lib/hakube/boot-part var \"${rootmnt}\""));
        assert!(!s.contains("var_dev=/dev/disk/by-partlabel"));
        assert!(s.contains("${rootmnt}/var"));
        assert!(s.contains("lowerdir=${rootmnt}/etc,upperdir=$ov/upper,workdir=$ov/work"));
        assert!(s.contains("ov=${rootmnt}/var/lib/hakube/overlay/etc"));
    }

    #[test]
    fn units_are_where_the_other_parts_expect_them() {
        let find = |p: &str| {
            ROOT_FILES
                .iter()
                .find(|f| f.path == p)
                .map(|f| std::str::from_utf8(f.contents).unwrap())
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        assert!(find("usr/lib/systemd/system/etcd.service").contains(
            "ExecStart=/usr/local/bin/etcd --config-file=/var/lib/hakube/etcd/etcd.conf.yml"
        ));
        let dropin = find("usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf");
        assert!(dropin.contains("--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf"));
        assert!(dropin.contains("EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env"));
        assert!(find("usr/lib/systemd/system/containerd.service")
            .contains("ExecStart=/usr/local/bin/containerd"));
        let health = find("usr/lib/systemd/system/hakube-boot-health.service");
        assert!(health.contains("Before=boot-complete.target"));
        assert!(health.contains("RequiredBy=boot-complete.target"));
        assert!(health.contains("OnFailure=hakube-boot-bad.service"));
        let gate = find("usr/lib/systemd/system/hakube-boot-assess.service");
        assert!(gate.contains("ExecStart=/usr/local/bin/hakube-firstboot health --gate"));
        assert!(gate.contains("Before=boot-complete.target"));
        assert!(gate.contains("RequiredBy=boot-complete.target"));
        assert!(gate.contains("OnFailure=hakube-boot-bad.service"));
        assert!(find("usr/lib/hakube/boot-bad").contains("systemd-bless-boot bad"));
        let fstab = find("etc/fstab");
        assert!(fstab.contains("overlay\t/opt/cni/bin\toverlay\tlowerdir=/opt/cni/bin"));
        assert!(fstab
            .lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| !l.contains("swap")));
    }
}
