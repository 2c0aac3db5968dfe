//! Partition images made from directories, without mounts: the node's /var
//! (ext4 via `mke2fs -d`) and the EFI system partition (FAT via `mkfs.vfat`
//! and mtools). Timestamps are clamped and identifiers seeded, so the same
//! inputs give the same bytes.

use super::fsutil;
use super::osroot::OsRoot;
use super::tools::{Invocation, Runner, DEBUGFS, MCOPY, MKE2FS, MKFS_VFAT, MMD, TAR};
use crate::tree::FileTree;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Component, Path};
use uuid::Uuid;

/// Where the node tree's `etc/` lands on the var partition: the upper layer
/// of the /etc overlay the initramfs mounts.
pub const ETC_UPPER: &str = "lib/hakube/overlay/etc/upper";

/// Identifiers of one node's var filesystem.
pub struct VarIds {
    pub uuid: Uuid,
    pub hash_seed: Uuid,
}

/// Lays out the var partition's contents in `stage`: the OS root's /var,
/// then the node tree (`etc/...` into the /etc overlay's upper layer,
/// `var/...` at the partition root).
pub fn stage_var(runner: &dyn Runner, os: &OsRoot, tree: &FileTree, stage: &Path) -> Result<()> {
    fs::create_dir_all(stage).with_context(|| format!("creating {}", stage.display()))?;
    runner
        .run(
            &Invocation::new(TAR)
                .args(["--extract", "--file"])
                .arg(os.var_tar())
                .arg("--directory")
                .arg(stage)
                .args([
                    "--numeric-owner",
                    "--preserve-permissions",
                    "--xattrs",
                    "--xattrs-include=*",
                ]),
        )
        .context("extracting the OS root's /var")?;
    for sub in [
        "lib/hakube/overlay/etc/upper",
        "lib/hakube/overlay/etc/work",
        "lib/hakube/overlay/cni-bin/upper",
        "lib/hakube/overlay/cni-bin/work",
    ] {
        fsutil::create_dirs_0755(stage, &stage.join(sub))?;
    }
    for (path, _) in tree.iter() {
        match path.components().next() {
            Some(Component::Normal(c)) if c == "etc" || c == "var" => {}
            _ => bail!(
                "node tree path {} is outside etc/ and var/ (the only places a node's files can live)",
                path.display()
            ),
        }
    }
    let tmp = tempfile::tempdir_in(stage.parent().unwrap_or(stage))
        .context("creating a directory for the node tree")?;
    let written = tmp.path().join("tree");
    tree.write_to(&written)?;
    // Directories FileTree made follow the umask; upper-layer directories
    // shadow the lower ones, so give them the usual 0755.
    for rel in fsutil::walk_sorted(&written)? {
        let p = written.join(&rel);
        if p.is_dir() && !p.is_symlink() {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
        }
    }
    if written.join("etc").is_dir() {
        fsutil::merge_move(&written.join("etc"), &stage.join(ETC_UPPER))?;
    }
    if written.join("var").is_dir() {
        fsutil::merge_move(&written.join("var"), stage)?;
    }
    Ok(())
}

/// Makes the ext4 image of `stage` at `image` (`size` bytes).
pub fn make_var(
    runner: &dyn Runner,
    stage: &Path,
    image: &Path,
    size: u64,
    ids: &VarIds,
    epoch: i64,
) -> Result<()> {
    fsutil::clamp_times(stage, epoch)?;
    let f = fs::File::create(image).with_context(|| format!("creating {}", image.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {}", image.display()))?;
    drop(f);
    runner
        .run(
            &Invocation::new(MKE2FS)
                .args(["-q", "-F", "-t", "ext4", "-L", "var", "-m", "1"])
                .arg("-U")
                .arg(ids.uuid.to_string())
                .arg("-E")
                .arg(format!(
                    "hash_seed={},root_owner=0:0,lazy_itable_init=1",
                    ids.hash_seed
                ))
                .arg("-d")
                .arg(stage)
                .arg(image)
                .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
                .env("SOURCE_DATE_EPOCH", epoch.to_string()),
        )
        .context("making the var filesystem")?;
    // mke2fs -d copies each source file's ctime, which no one can set; pin
    // it (and every other inode time) to the epoch with debugfs.
    let mut cmds = String::new();
    let mut paths = vec![std::path::PathBuf::new()];
    paths.extend(fsutil::walk_sorted(stage)?);
    for rel in paths {
        let p = format!("/{}", rel.display());
        if p.contains('"') || p.contains('\n') {
            bail!("unsupported file name on /var: {p:?}");
        }
        for field in ["ctime", "atime", "mtime", "crtime"] {
            cmds.push_str(&format!("sif \"{p}\" {field} @{epoch}\n"));
        }
    }
    let cmdfile = image.with_extension("debugfs");
    fs::write(&cmdfile, cmds).with_context(|| format!("writing {}", cmdfile.display()))?;
    let fixed = runner.run(
        &Invocation::new(DEBUGFS)
            .arg("-w")
            .arg("-f")
            .arg(&cmdfile)
            .arg(image)
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string()),
    );
    let _ = fs::remove_file(&cmdfile);
    fixed.context("pinning inode times on the var filesystem")?;
    Ok(())
}

/// The ESP's files: systemd-boot, loader.conf (no default), the first
/// install's entry (no counter: there is nothing to fall back to) naming slot
/// A's PARTUUID, and its kernel and initrd, all named by the image version as
/// systemd-sysupdate's transfers expect (hakube_os_layout).
pub fn esp_files(os: &OsRoot, root_a: &Uuid) -> Result<Vec<(String, Vec<u8>)>> {
    use hakube_os_layout::{self as layout, EntryName};
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    let sdboot = read(&os.systemd_boot())?;
    let v = os.image_version()?;
    let entry = layout::entry_conf(&v, &os.kernel_version, root_a);
    Ok(vec![
        ("EFI/BOOT/BOOTX64.EFI".into(), sdboot.clone()),
        ("EFI/systemd/systemd-bootx64.efi".into(), sdboot),
        (
            layout::ESP_LOADER_CONF.into(),
            layout::LOADER_CONF.as_bytes().to_vec(),
        ),
        (
            format!(
                "{}/{}",
                layout::ESP_ENTRIES_DIR,
                EntryName::new(v.clone(), None)
            ),
            entry.into_bytes(),
        ),
        (layout::esp_kernel(&v), read(&os.kernel())?),
        (layout::esp_initrd(&v), read(&os.initrd())?),
    ])
}

/// Makes a FAT32 ESP image of `size` bytes holding `files`.
pub fn make_esp(
    runner: &dyn Runner,
    files: &[(String, Vec<u8>)],
    image: &Path,
    size: u64,
    volume_id: u32,
    epoch: i64,
) -> Result<()> {
    let stage = tempfile::tempdir_in(image.parent().unwrap_or(Path::new(".")))
        .context("creating an ESP staging directory")?;
    let _ = fs::remove_file(image);
    let sde = epoch.to_string();
    runner
        .run(
            &Invocation::new(MKFS_VFAT)
                .args(["-C", "-F", "32", "-n", "ESP", "--invariant"])
                .arg("-i")
                .arg(format!("{volume_id:08x}"))
                .arg(image)
                .arg((size / 1024).to_string())
                .env("SOURCE_DATE_EPOCH", &sde),
        )
        .context("making the EFI system partition")?;
    let mut dirs: Vec<String> = Vec::new();
    for (path, _) in files {
        let mut acc = String::new();
        for part in path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            acc = if acc.is_empty() {
                part.to_string()
            } else {
                format!("{acc}/{part}")
            };
            if !dirs.contains(&acc) {
                dirs.push(acc.clone());
            }
        }
    }
    let img = image.display().to_string();
    if !dirs.is_empty() {
        runner
            .run(
                &Invocation::new(MMD)
                    .args(["-i", &img])
                    .args(dirs.iter().map(|d| format!("::/{d}")))
                    .env("SOURCE_DATE_EPOCH", &sde),
            )
            .context("creating ESP directories")?;
    }
    for (i, (path, data)) in files.iter().enumerate() {
        let local = stage.path().join(format!("f{i}"));
        fs::write(&local, data).with_context(|| format!("writing {}", local.display()))?;
        fsutil::clamp_times(&local, epoch)?;
        runner
            .run(
                &Invocation::new(MCOPY)
                    .args(["-m", "-o", "-i", &img])
                    .arg(&local)
                    .arg(format!("::/{path}"))
                    .env("SOURCE_DATE_EPOCH", &sde),
            )
            .with_context(|| format!("copying {path} into the ESP"))?;
    }
    Ok(())
}
