//! The base root filesystem: Debian 13 trixie made with mmdebstrap (no VM, no
//! SSH), cached as a tar keyed by a canonical manifest of its inputs.
//!
//! A Debian 12 build host can make it: trixie's InRelease is signed by keys
//! that bookworm's debian-archive-keyring already carries.

use super::content;
use super::fsutil;
use super::tools::{Invocation, Runner, MMDEBSTRAP};
use crate::cache::Lease;
use anyhow::{Context, Result};
use hakube_node_profile::Runtime;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const SUITE: &str = "trixie";
/// `<cache>/rootfs/<key>.tar` and `<key>.json` (see [`crate::cache`]).
pub const CACHE_SUBDIR: &str = "rootfs";
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// Every role's packages: one OS root serves masters, workers and etcd members.
/// Kubernetes binaries, containerd, runc, CRI-O, CNI plugins and etcd come
/// from the artifacts, not from Debian.
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
    // unpigz: containerd decompresses image layers with it when it is on
    // PATH (faster than Go's gzip), which the first boot's image import and
    // every later pull spend most of their time on.
    "pigz",
    "procps",
    "qemu-guest-agent",
    "socat",
    "systemd",
    // systemd-bless-boot and its generator (boot counting); bootctl comes
    // with it (trixie's systemd-boot-tools).
    "systemd-boot",
    // The systemd-boot EFI binary the ESP's loader is taken from.
    "systemd-boot-efi",
    // systemd-sysupdate (trixie ships it in systemd-container): OS updates.
    "systemd-container",
    "systemd-repart",
    // DHCP nodes' resolver (the lease's DNS servers); enabled per node.
    "systemd-resolved",
    "systemd-sysv",
    "systemd-timesyncd",
    "udev",
];

/// What only a CRI-O cluster's root carries. skopeo imports the disk's images
/// into CRI-O's store at first boot (containerd imports with its own `ctr`).
/// skopeo's containers-common depends on a container network stack that
/// nothing here uses: netavark (17 MB) is named so that apt does not pick
/// containernetworking-plugins (55 MB).
pub const CRIO_PACKAGES: &[&str] = &["netavark", "skopeo"];

/// The packages of a root for `runtime`.
pub fn packages(runtime: Runtime) -> Vec<&'static str> {
    let mut v = PACKAGES.to_vec();
    if runtime == Runtime::CriO {
        v.extend_from_slice(CRIO_PACKAGES);
    }
    v.sort_unstable();
    v
}

/// Exact versions of the packages that make the boot and update path: the
/// kernel, systemd and its boot pieces, the initramfs generator. They are part
/// of the cache key and installed as `name=version`, so a base is rebuilt
/// exactly when one is bumped, and a build never takes a different kernel or
/// systemd silently. Debian's archive serves only the newest version of a
/// stable suite: after a point release mmdebstrap fails naming the version,
/// and these are bumped (the versions of trixie 13.8, read from its Packages
/// index on 2026-12-01).
pub const PINNED: &[(&str, &str)] = &[
    ("initramfs-tools", "0.148.4"),
    ("linux-image-cloud-amd64", "6.12.117-1"),
    ("systemd", "257.13-1~deb13u1"),
    ("systemd-boot", "257.13-1~deb13u1"),
    ("systemd-boot-efi", "257.13-1~deb13u1"),
    ("systemd-container", "257.13-1~deb13u1"),
    ("systemd-repart", "257.13-1~deb13u1"),
    ("systemd-sysv", "257.13-1~deb13u1"),
    ("udev", "257.13-1~deb13u1"),
];

/// The `--include` list: every package, pinned ones as `name=version`.
pub fn include_list(runtime: Runtime) -> Vec<String> {
    packages(runtime)
        .iter()
        .map(|p| match PINNED.iter().find(|(n, _)| n == p) {
            Some((n, v)) => format!("{n}={v}"),
            None => p.to_string(),
        })
        .collect()
}

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
    /// Every installed package and its version (dpkg-query in the new root).
    #[serde(default)]
    pub package_versions: BTreeMap<String, String>,
    #[serde(skip)]
    pub cache_hit: bool,
    /// Holds the entry against pruning by other builds while this lives.
    #[serde(skip)]
    pub lease: Option<Arc<Lease>>,
}

/// The canonical, sorted manifest of everything that goes into the base.
pub fn key_material(runtime: Runtime, source_date_epoch: Option<i64>) -> String {
    let pkgs = packages(runtime);
    let mut lines = vec![
        format!("builder {}", env!("CARGO_PKG_VERSION")),
        format!("suite {SUITE}"),
        format!("mirror {MIRROR}"),
        "variant minbase".to_string(),
        format!("packages {}", pkgs.join(",")),
    ];
    for (name, version) in PINNED {
        lines.push(format!("pin {name}={version}"));
    }
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

pub fn cache_key(runtime: Runtime, source_date_epoch: Option<i64>) -> String {
    fsutil::sha256_bytes(key_material(runtime, source_date_epoch).as_bytes())
}

/// Returns the cached base, building it with mmdebstrap when missing.
pub fn ensure(
    runner: &dyn Runner,
    cache_dir: &Path,
    runtime: Runtime,
    source_date_epoch: Option<i64>,
) -> Result<Base> {
    let key = cache_key(runtime, source_date_epoch);
    let dir = cache_dir.join(CACHE_SUBDIR);
    let tar = dir.join(format!("{key}.tar"));
    let meta = dir.join(format!("{key}.json"));
    // The metadata is the entry's marker: a lease on it holds the entry.
    let lease = if tar.is_file() {
        Lease::take(&meta)?
    } else {
        None
    };
    if let Some(lease) = lease {
        let text =
            fs::read_to_string(&meta).with_context(|| format!("reading {}", meta.display()))?;
        let mut base: Base =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", meta.display()))?;
        base.tar = tar;
        base.cache_hit = true;
        base.lease = Some(Arc::new(lease));
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
    let versions_file = work.path().join("packages.tsv");
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
        .arg(format!("--include={}", include_list(runtime).join(",")))
        .arg("--aptopt=APT::Install-Recommends \"false\"");
    for o in DPKG_OPTS {
        inv = inv.arg(format!("--dpkgopt={o}"));
    }
    inv = inv
        .arg(format!("--essential-hook=sync-in {} /", early.display()))
        .arg(format!("--customize-hook=sync-in {} /", late.display()))
        .arg(format!("--customize-hook={}", hook.display()))
        // Runs on the host with the root as $1: the versions go to the work
        // directory, not into the image.
        .arg(format!(
            "--customize-hook=chroot \"$1\" dpkg-query -W -f '${{Package}}\\t${{Version}}\\n' > '{}'",
            versions_file.display()
        ))
        .args([
            SUITE.to_string(),
            out.display().to_string(),
            MIRROR.to_string(),
        ]);
    if let Some(e) = source_date_epoch {
        inv = inv.env("SOURCE_DATE_EPOCH", e.to_string());
    }
    let spinner = crate::ui::spinner(&format!("mmdebstrap (Debian {SUITE})"));
    let result = runner.run(&inv);
    spinner.finish_and_clear();
    result.with_context(|| {
        format!(
            "building the base root filesystem with mmdebstrap (Debian {SUITE}; if apt \
             reports a pinned version missing, the archive has moved to a newer point \
             release: update base::PINNED)"
        )
    })?;
    let package_versions = read_versions(&versions_file)?;
    check_pins(&package_versions)?;

    let created_epoch = source_date_epoch.unwrap_or_else(now_epoch);
    let base = Base {
        key: key.clone(),
        tar: tar.clone(),
        created_epoch,
        suite: SUITE.into(),
        mirror: MIRROR.into(),
        packages: packages(runtime).iter().map(|s| s.to_string()).collect(),
        package_versions,
        cache_hit: false,
        lease: None,
    };
    let meta_tmp = work.path().join("meta.json");
    fs::write(&meta_tmp, serde_json::to_vec_pretty(&base)?)
        .with_context(|| format!("writing {}", meta_tmp.display()))?;
    // Held from before it is published, so no pruner can take it between.
    let lease =
        Lease::take(&meta_tmp)?.with_context(|| format!("{} vanished", meta_tmp.display()))?;
    // Tar first, metadata last: an entry counts only when its metadata exists.
    fsutil::commit(&out, &tar)?;
    fsutil::commit(&meta_tmp, &meta)?;
    Ok(Base {
        lease: Some(Arc::new(lease.held_at(&meta)?)),
        ..base
    })
}

/// Parses `dpkg-query -W -f '${Package}\t${Version}\n'` output.
fn read_versions(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_versions(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn parse_versions(text: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let Some((name, version)) = line.split_once('\t') else {
            anyhow::bail!("line {}: expected PACKAGE<TAB>VERSION, got {line:?}", i + 1);
        };
        out.insert(name.to_string(), version.to_string());
    }
    if out.is_empty() {
        anyhow::bail!("no package listed");
    }
    Ok(out)
}

/// apt installed exactly the pinned versions (a held or replaced package
/// would otherwise go unnoticed).
fn check_pins(installed: &BTreeMap<String, String>) -> Result<()> {
    for (name, want) in PINNED {
        match installed.get(*name) {
            Some(got) if got == want => {}
            got => anyhow::bail!(
                "the base root has {name} {}, base::PINNED says {want}",
                got.map(String::as_str).unwrap_or("not installed")
            ),
        }
    }
    Ok(())
}

pub fn now_epoch() -> i64 {
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
        let m = key_material(Runtime::Containerd, None);
        assert!(m.contains("packages apparmor,ca-certificates,"));
        assert!(m.contains("file etc/fstab 644 "));
        assert!(m.contains("suite trixie"));
        assert!(m.contains("pin systemd=257."));
        assert!(m.contains("pin linux-image-cloud-amd64=6.12."));
        let mut sorted: Vec<&str> = m.lines().collect();
        sorted.sort_unstable();
        assert_eq!(sorted, m.lines().collect::<Vec<_>>());
        let c = Runtime::Containerd;
        assert_eq!(cache_key(c, None), cache_key(c, None));
        assert_ne!(cache_key(c, None), cache_key(c, Some(1)));
        assert_ne!(cache_key(c, None), cache_key(Runtime::CriO, None));
        assert!(!m.contains("skopeo"));
        assert!(key_material(Runtime::CriO, None).contains(",skopeo,"));
    }

    #[test]
    fn pinned_packages_are_installed_as_name_equals_version() {
        let inc = include_list(Runtime::Containerd);
        assert!(!inc.contains(&"skopeo".to_string()));
        assert!(include_list(Runtime::CriO).contains(&"skopeo".to_string()));
        assert!(inc.contains(&"systemd-boot-efi=257.13-1~deb13u1".to_string()));
        assert!(inc.contains(&"openssh-server".to_string()));
        for (name, _) in PINNED {
            assert!(PACKAGES.contains(name), "{name} pinned but not installed");
        }
    }

    #[test]
    fn versions_parse_and_pins_are_checked() {
        let mut text: String = PINNED.iter().map(|(n, v)| format!("{n}\t{v}\n")).collect();
        text.push_str("zlib1g\t1:1.3.dfsg+really1.3.1-1+b1\n");
        let v = parse_versions(&text).unwrap();
        assert_eq!(v["zlib1g"], "1:1.3.dfsg+really1.3.1-1+b1");
        check_pins(&v).unwrap();
        let mut drifted = v.clone();
        drifted.insert("systemd".into(), "257.14-1".into());
        let e = check_pins(&drifted).unwrap_err().to_string();
        assert!(
            e.contains("systemd 257.14-1") && e.contains("257.13-1~deb13u1"),
            "{e}"
        );
        assert!(parse_versions("no tab here\n").is_err());
        assert!(parse_versions("").is_err());
    }
}
