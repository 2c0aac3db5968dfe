//! The base root filesystem: Debian bookworm made with mmdebstrap (no VM, no
//! SSH), cached as a tar keyed by a canonical manifest of its inputs.

use super::content;
use super::fsutil;
use super::tools::{Invocation, Runner, MMDEBSTRAP};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

pub const SUITE: &str = "bookworm";
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// Every role's packages: one OS root serves masters, workers and etcd members.
/// Kubernetes binaries, containerd, runc, CNI plugins and etcd come from the
/// artifacts, not from Debian.
pub const PACKAGES: &[&str] = &[
    "apparmor",
    "ca-certificates",
    "conntrack",
    "dbus",
    "e2fsprogs",
    "ebtables",
    "ethtool",
    "fdisk",
    "haproxy",
    "initramfs-tools",
    "iproute2",
    "iptables",
    "keepalived",
    "kmod",
    "libseccomp2",
    "linux-image-cloud-amd64",
    "openssh-server",
    "procps",
    "qemu-guest-agent",
    "socat",
    "systemd",
    // systemd-bless-boot and its generator (boot counting), bootctl.
    "systemd-boot",
    "systemd-boot-efi",
    "systemd-sysv",
    "systemd-timesyncd",
    "udev",
];

/// Keeps the root small: no documentation, manuals or translations.
pub const DPKG_OPTS: &[&str] = &[
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
];

/// A cached base root filesystem.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Base {
    pub key: String,
    #[serde(skip)]
    pub tar: PathBuf,
    /// When the tar was made; the default SOURCE_DATE_EPOCH of images built on it.
    pub created_epoch: i64,
    pub suite: String,
    pub mirror: String,
    pub packages: Vec<String>,
    #[serde(skip)]
    pub cache_hit: bool,
}

/// The canonical, sorted manifest of everything that goes into the base.
pub fn key_material(source_date_epoch: Option<i64>) -> String {
    let mut pkgs: Vec<&str> = PACKAGES.to_vec();
    pkgs.sort_unstable();
    let mut lines = vec![
        format!("builder {}", env!("CARGO_PKG_VERSION")),
        format!("suite {SUITE}"),
        format!("mirror {MIRROR}"),
        "variant minbase".to_string(),
        format!("packages {}", pkgs.join(",")),
    ];
    for o in DPKG_OPTS {
        lines.push(format!("dpkgopt {o}"));
    }
    for f in content::INITRAMFS_FILES.iter().chain(content::ROOT_FILES) {
        lines.push(format!(
            "file {} {:o} {}",
            f.path,
            f.mode,
            fsutil::sha256_bytes(f.contents)
        ));
    }
    lines.push(format!(
        "customize-hook {}",
        fsutil::sha256_bytes(content::CUSTOMIZE_HOOK)
    ));
    if let Some(e) = source_date_epoch {
        lines.push(format!("source-date-epoch {e}"));
    }
    lines.sort();
    lines.join("\n") + "\n"
}

pub fn cache_key(source_date_epoch: Option<i64>) -> String {
    fsutil::sha256_bytes(key_material(source_date_epoch).as_bytes())
}

/// Returns the cached base, building it with mmdebstrap when missing.
pub fn ensure(
    runner: &dyn Runner,
    cache_dir: &Path,
    source_date_epoch: Option<i64>,
) -> Result<Base> {
    let key = cache_key(source_date_epoch);
    let dir = cache_dir.join("rootfs");
    let tar = dir.join(format!("{key}.tar"));
    let meta = dir.join(format!("{key}.json"));
    if tar.is_file() && meta.is_file() {
        let text =
            fs::read_to_string(&meta).with_context(|| format!("reading {}", meta.display()))?;
        let mut base: Base =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", meta.display()))?;
        base.tar = tar;
        base.cache_hit = true;
        return Ok(base);
    }
    runner.require(&[MMDEBSTRAP])?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // A build killed here leaves its work directory; the next one sweeps it.
    let work = crate::private::WorkDir::new_in(&dir, ".build-")?;
    let early = work.path().join("early");
    let late = work.path().join("late");
    content::write_files(&early, content::INITRAMFS_FILES)?;
    content::write_files(&late, content::ROOT_FILES)?;
    let hook = work.path().join("customize.sh");
    fs::write(&hook, content::CUSTOMIZE_HOOK)
        .with_context(|| format!("writing {}", hook.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755))?;
    // mmdebstrap picks the output format from the extension.
    let out = work.path().join("base.tar");

    // Kill safety: as root mmdebstrap defaults to `root` mode, which
    // bind-mounts /dev and /sys into a chroot under $TMPDIR in the host's
    // mount namespace; a killed build would leave those mounts (and a whole
    // chroot) behind. `unshare` mode as root keeps every mount in a private
    // namespace that dies with it, and TMPDIR puts the chroot inside the work
    // directory the next build sweeps.
    let mut inv = Invocation::new(MMDEBSTRAP)
        .arg("--mode=unshare")
        .env("TMPDIR", work.path().display().to_string())
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg("--aptopt=APT::Install-Recommends \"false\"");
    for o in DPKG_OPTS {
        inv = inv.arg(format!("--dpkgopt={o}"));
    }
    inv = inv
        .arg(format!("--essential-hook=sync-in {} /", early.display()))
        .arg(format!("--customize-hook=sync-in {} /", late.display()))
        .arg(format!("--customize-hook={}", hook.display()))
        .args([
            SUITE.to_string(),
            out.display().to_string(),
            MIRROR.to_string(),
        ]);
    if let Some(e) = source_date_epoch {
        inv = inv.env("SOURCE_DATE_EPOCH", e.to_string());
    }
    let spinner = crate::ui::spinner("mmdebstrap (Debian bookworm)");
    let result = runner.run(&inv);
    spinner.finish_and_clear();
    result.context("building the base root filesystem with mmdebstrap")?;

    let created_epoch = source_date_epoch.unwrap_or_else(now_epoch);
    let base = Base {
        key: key.clone(),
        tar: tar.clone(),
        created_epoch,
        suite: SUITE.into(),
        mirror: MIRROR.into(),
        packages: PACKAGES.iter().map(|s| s.to_string()).collect(),
        cache_hit: false,
    };
    let meta_tmp = work.path().join("meta.json");
    fs::write(&meta_tmp, serde_json::to_vec_pretty(&base)?)
        .with_context(|| format!("writing {}", meta_tmp.display()))?;
    // Tar first, metadata last: an entry counts only when its metadata exists.
    fsutil::commit(&out, &tar)?;
    fsutil::commit(&meta_tmp, &meta)?;
    Ok(base)
}

fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_canonical_and_covers_inputs() {
        let m = key_material(None);
        assert!(m.contains("packages apparmor,ca-certificates,"));
        assert!(m.contains("file etc/fstab 644 "));
        assert!(m.contains("suite bookworm"));
        let mut sorted: Vec<&str> = m.lines().collect();
        sorted.sort_unstable();
        assert_eq!(sorted, m.lines().collect::<Vec<_>>());
        assert_eq!(cache_key(None), cache_key(None));
        assert_ne!(cache_key(None), cache_key(Some(1)));
    }
}
