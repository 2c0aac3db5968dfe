//! The OS root: the base root filesystem plus the Kubernetes artifacts and
//! hakube-firstboot, as one read-only erofs image shared by every node and
//! role. Its /var moves to a seed tar (each node's /var partition starts from
//! it); kernel, initrd and systemd-boot are taken out for the ESP.
//!
//! Each OS root has an image version (the build's time, see
//! `hakube_os_layout::ImageVersion`), written into os-release as
//! IMAGE_VERSION: systemd-sysupdate reads the running version from there.

use super::base::Base;
use super::fsutil;
use super::tools::{Invocation, Runner, MKFS_EROFS, TAR};
use crate::artifacts::Resolved;
use crate::cache::Lease;
use anyhow::{bail, Context, Result};
use hakube_os_layout::{self as layout, ImageVersion};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `<cache>/osroot/<key>/` (see [`crate::cache`]).
pub const CACHE_SUBDIR: &str = "osroot";

/// Inputs of the OS root besides the base.
pub struct Inputs<'a> {
    pub base: &'a Base,
    pub artifacts: &'a Resolved,
    pub firstboot_bin: &'a Path,
    pub source_date_epoch: i64,
    /// The build time that names a newly built root (SOURCE_DATE_EPOCH when
    /// set, else now); a cached root keeps the version it was built with.
    pub version_epoch: i64,
}

/// A cached OS root.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OsRoot {
    pub key: String,
    pub kernel_version: String,
    pub erofs_sha256: String,
    pub source_date_epoch: i64,
    /// The image version (IMAGE_VERSION in its os-release).
    pub version: String,
    #[serde(skip)]
    pub dir: PathBuf,
    #[serde(skip)]
    pub cache_hit: bool,
    /// Holds the entry against pruning by other builds while this lives.
    #[serde(skip)]
    pub lease: Option<Arc<Lease>>,
}

impl OsRoot {
    pub fn erofs(&self) -> PathBuf {
        self.dir.join("root.erofs")
    }
    /// The root's /var (the seed of every node's var partition).
    pub fn var_tar(&self) -> PathBuf {
        self.dir.join("var.tar")
    }
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
    pub fn systemd_boot(&self) -> PathBuf {
        self.dir.join("systemd-bootx64.efi")
    }
    pub fn image_version(&self) -> Result<ImageVersion> {
        self.version
            .parse()
            .with_context(|| format!("the OS root in {}", self.dir.display()))
    }
    /// Assembles an `OsRoot` from a directory holding those files (tests).
    pub fn from_dir(dir: &Path, kernel_version: &str, source_date_epoch: i64) -> Result<OsRoot> {
        let erofs_sha256 = fsutil::sha256_file(&dir.join("root.erofs"))?;
        Ok(OsRoot {
            key: erofs_sha256.clone(),
            kernel_version: kernel_version.into(),
            erofs_sha256,
            source_date_epoch,
            version: ImageVersion::from_epoch(source_date_epoch)?.to_string(),
            dir: dir.to_path_buf(),
            cache_hit: false,
            lease: None,
        })
    }
}

pub fn cache_key(inputs: &Inputs, firstboot_sha256: &str) -> String {
    let material = format!(
        "base {}\nfirstboot {}\nsource-date-epoch {}\nerofs -zlz4hc\nbuilder {}\nartifacts\n{}\n",
        inputs.base.key,
        firstboot_sha256,
        inputs.source_date_epoch,
        env!("CARGO_PKG_VERSION"),
        inputs.artifacts.cache_key_material()
    );
    fsutil::sha256_bytes(material.as_bytes())
}

/// Returns the cached OS root for these inputs, building it when missing.
pub fn ensure(runner: &dyn Runner, cache_dir: &Path, inputs: &Inputs) -> Result<OsRoot> {
    let firstboot_sha256 = fsutil::sha256_file(inputs.firstboot_bin)?;
    let key = cache_key(inputs, &firstboot_sha256);
    let parent = cache_dir.join(CACHE_SUBDIR);
    let dir = parent.join(&key);
    let meta = dir.join("meta.json");
    if let Some(lease) = Lease::take(&dir)?.filter(|_| meta.is_file()) {
        let text =
            fs::read_to_string(&meta).with_context(|| format!("reading {}", meta.display()))?;
        let mut os: OsRoot =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", meta.display()))?;
        os.dir = dir;
        os.cache_hit = true;
        os.lease = Some(Arc::new(lease));
        return Ok(os);
    }
    fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    // A build killed here leaves its work directory; the next one sweeps it.
    let work = crate::private::WorkDir::new_in(&parent, ".build-")?;
    let stage = work.path().join("root");
    let out = work.path().join("out");
    fs::create_dir_all(&stage)?;
    fs::create_dir_all(&out)?;

    runner
        .run(
            &Invocation::new(TAR)
                .args(["--extract", "--file"])
                .arg(&inputs.base.tar)
                .args(["--directory"])
                .arg(&stage)
                .args([
                    "--numeric-owner",
                    "--preserve-permissions",
                    "--xattrs",
                    "--xattrs-include=*",
                ]),
        )
        .context("extracting the base root filesystem")?;

    inputs
        .artifacts
        .install_into(&stage)
        .context("installing the Kubernetes artifacts into the OS root")?;
    install_firstboot(inputs.firstboot_bin, &stage)?;
    let version = ImageVersion::from_epoch(inputs.version_epoch)
        .context("naming the OS root's image version")?;
    stamp_os_release(&stage, &version)?;
    install_sysupdate_transfers(&stage)?;

    let kernel_version = take_boot_files(&stage, &out)?;

    // /var goes to the var partition; the erofs keeps an empty mount point.
    let var = stage.join("var");
    fsutil::clamp_times(&var, inputs.source_date_epoch)?;
    runner
        .run(
            &Invocation::new(TAR)
                .args(["--create", "--file"])
                .arg(out.join("var.tar"))
                .args(["--directory"])
                .arg(&var)
                .args([
                    "--sort=name",
                    "--numeric-owner",
                    "--xattrs",
                    "--xattrs-include=*",
                    "--format=posix",
                    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                    ".",
                ]),
        )
        .context("saving the root's /var")?;
    fs::remove_dir_all(&var).with_context(|| format!("emptying {}", var.display()))?;
    fs::create_dir(&var)?;

    let uuid = uuid::Uuid::new_v5(&super::disk::NAMESPACE, format!("osroot/{key}").as_bytes());
    let spinner = crate::ui::spinner("mkfs.erofs");
    let made = runner.run(
        &Invocation::new(MKFS_EROFS)
            .arg("-zlz4hc")
            .arg(format!("-T{}", inputs.source_date_epoch))
            .arg("--ignore-mtime")
            .arg(format!("-U{uuid}"))
            .arg("--quiet")
            .arg(out.join("root.erofs"))
            .arg(&stage),
    );
    spinner.finish_and_clear();
    made.context("making the erofs root image")?;

    let os = OsRoot {
        key: key.clone(),
        kernel_version,
        erofs_sha256: fsutil::sha256_file(&out.join("root.erofs"))?,
        source_date_epoch: inputs.source_date_epoch,
        version: version.to_string(),
        dir: dir.clone(),
        cache_hit: false,
        lease: None,
    };
    fs::write(out.join("meta.json"), serde_json::to_vec_pretty(&os)?)
        .context("writing the OS root metadata")?;
    // Held from before it is published, so no pruner can take it between.
    let lease = Lease::take(&out)?.with_context(|| format!("{} vanished", out.display()))?;
    // Another build may have finished the same entry meanwhile: same content.
    if let Err(e) = fs::rename(&out, &dir) {
        if !dir.join("meta.json").is_file() {
            return Err(e).with_context(|| format!("renaming into {}", dir.display()));
        }
    }
    Ok(OsRoot {
        lease: Some(Arc::new(lease.held_at(&dir)?)),
        ..os
    })
}

fn install_firstboot(bin: &Path, root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dest = root.join("usr/local/bin/hakube-firstboot");
    fsutil::create_dirs_0755(root, dest.parent().unwrap_or(root))?;
    fs::copy(bin, &dest)
        .with_context(|| format!("copying {} to {}", bin.display(), dest.display()))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", dest.display()))?;
    Ok(())
}

/// IMAGE_ID and IMAGE_VERSION in os-release (os-release(5)): the running
/// version for systemd-sysupdate (`%A`) and for `hakube-firstboot status`.
fn stamp_os_release(root: &Path, version: &ImageVersion) -> Result<()> {
    let path = root.join("usr/lib/os-release");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out: String = text
        .lines()
        .filter(|l| !l.starts_with("IMAGE_ID=") && !l.starts_with("IMAGE_VERSION="))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!(
        "IMAGE_ID={}\nIMAGE_VERSION={version}\n",
        layout::IMAGE_ID
    ));
    fs::write(&path, out).with_context(|| format!("writing {}", path.display()))
}

/// The systemd-sysupdate transfer definitions (from the shared layout).
fn install_sysupdate_transfers(root: &Path) -> Result<()> {
    let dir = root.join(layout::sysupdate::DEFINITIONS_DIR);
    fsutil::create_dirs_0755(root, &dir)?;
    for (name, body) in layout::sysupdate::transfers() {
        let p = dir.join(name);
        fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Copies the kernel, initrd and systemd-boot out of the root; returns the
/// kernel version. Exactly one kernel is expected.
fn take_boot_files(root: &Path, out: &Path) -> Result<String> {
    let boot = root.join("boot");
    let mut versions: Vec<String> = fs::read_dir(&boot)
        .with_context(|| format!("listing {}", boot.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .collect();
    versions.sort();
    let [version] = versions.as_slice() else {
        bail!(
            "expected exactly one kernel in {}, found {versions:?}",
            boot.display()
        );
    };
    let copies = [
        (boot.join(format!("vmlinuz-{version}")), out.join("vmlinuz")),
        (
            boot.join(format!("initrd.img-{version}")),
            out.join("initrd.img"),
        ),
        (
            root.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
            out.join("systemd-bootx64.efi"),
        ),
    ];
    for (from, to) in copies {
        fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(version.clone())
}
