//! OS updates with automatic rollback: `upgrade`, the boot health gate,
//! `rollback` and the slot part of `status`.
//!
//! The A/B mechanics are systemd's: systemd-sysupdate writes the other root
//! slot, kernel, initrd and a counted boot entry (transfer definitions in
//! `/usr/lib/sysupdate.d`, made by `hakube_os_layout::sysupdate`);
//! systemd-boot counts tries and falls back to the newest entry with tries
//! left; systemd-bless-boot marks the entry good once boot-complete.target is
//! reached, which the health gate holds back until this node's role is
//! healthy. What sysupdate does not do, done here: fetching over http(s) or
//! from a directory without GPG signatures (SHA256SUMS verified here),
//! refusing a root that does not fit the slot or an entry that does not name
//! its own root before anything is written, and the health gate itself.
//!
//! /var is shared by both slots and is never migrated by an update: a newer
//! version may only start writing state an older one cannot read after its
//! boot was blessed (the gate runs before anything else of the update's own),
//! so a fallback boots the old version on the state it left.

pub mod bundle;
pub mod slots;
pub mod state;

use crate::system::{run_checked, Clock, Cmd, CommandRunner};
use crate::BadInput;
use anyhow::{bail, Context, Result};
use hakube_os_layout::{self as layout, EntryName};
use slots::Slots;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// systemd-boot's vendor GUID for its EFI variables (Boot Loader Interface).
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
const SYSUPDATE: &str = "/usr/lib/systemd/systemd-sysupdate";
const BLESS_BOOT: &str = "/usr/lib/systemd/systemd-bless-boot";

/// Where the boot pieces are, as seen from `root`.
pub struct Platform<'a> {
    /// The node's root: the ESP is at `<root>/efi`, the kernel command line
    /// at `<root>/proc/cmdline`, EFI variables under `<root>/sys/firmware/efi`.
    pub root: PathBuf,
    /// The boot disk (or a disk image file); `None`: the disk the root is
    /// mounted from.
    pub disk: Option<PathBuf>,
    pub cmd: &'a dyn CommandRunner,
    pub clock: &'a dyn Clock,
}

impl Platform<'_> {
    fn esp(&self) -> PathBuf {
        self.root.join(layout::ESP_MOUNT.trim_start_matches('/'))
    }

    fn disk(&self) -> Result<PathBuf> {
        if let Some(d) = &self.disk {
            return Ok(d.clone());
        }
        // The disk the root slot was mounted from. Not the disk of
        // /dev/disk/by-partlabel/var: a second hakube disk attached makes
        // that name ambiguous, and an update would go to the other disk.
        let out = run_checked(
            self.cmd,
            &Cmd::new("findmnt").args(["-nro", "SOURCE", "--mountpoint", "/"]),
        )
        .context("finding the boot disk (the device the root is mounted from)")?;
        let root = out.stdout.trim().to_string();
        if root.is_empty() {
            bail!("findmnt names no device for /");
        }
        let out = run_checked(self.cmd, &Cmd::new("lsblk").args(["-npo", "PKNAME", &root]))
            .context("finding the boot disk (the disk of the root partition)")?;
        let d = out.stdout.trim();
        if d.is_empty() {
            bail!("lsblk names no disk for {root}, the root's device");
        }
        Ok(PathBuf::from(d))
    }

    fn efivar_exists(&self, name: &str) -> bool {
        self.root
            .join("sys/firmware/efi/efivars")
            .join(format!("{name}-{LOADER_GUID}"))
            .exists()
    }

    /// Both slots as the disk, ESP, firmware and kernel command line show them.
    pub fn slots(&self) -> Result<Slots> {
        let disk = self.disk()?;
        let out = run_checked(
            self.cmd,
            &Cmd::new("sfdisk").arg("--json").arg(disk.to_string_lossy()),
        )
        .with_context(|| format!("reading the partition table of {}", disk.display()))?;
        let (roots, _) = slots::parse_sfdisk(&out.stdout)?;
        let entries = slots::list_entries(&self.esp())?;
        let cmdline_path = self.root.join("proc/cmdline");
        let cmdline = std::fs::read_to_string(&cmdline_path)
            .with_context(|| format!("reading {}", cmdline_path.display()))?;
        let booted = layout::root_uuid_of_cmdline(&cmdline).map(|u| u.to_string());
        Ok(slots::assemble(
            &roots,
            entries,
            booted.as_deref(),
            self.efivar_exists("LoaderBootCountPath"),
        ))
    }

    fn record(&self, action: &str, version: &str, result: &str) -> Result<()> {
        state::record(
            &self.root,
            state::Event {
                at: crate::system::rfc3339(self.clock.now()),
                action: action.into(),
                version: version.into(),
                result: result.into(),
            },
        )
    }

    fn reboot(&self) -> Result<()> {
        run_checked(
            self.cmd,
            &Cmd::new("systemctl").args(["--no-block", "reboot"]),
        )
        .context("asking systemd to reboot")?;
        Ok(())
    }

    fn rename_entry(&self, from: &EntryName, to: &EntryName) -> Result<()> {
        let dir = self.esp().join(layout::ESP_ENTRIES_DIR);
        let (a, b) = (dir.join(from.to_string()), dir.join(to.to_string()));
        std::fs::rename(&a, &b)
            .with_context(|| format!("renaming {} to {}", a.display(), b.display()))?;
        // The ESP is FAT: make the rename durable before a reboot.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn booted(slots: &Slots) -> Result<&slots::Slot> {
    slots.booted().ok_or_else(|| {
        anyhow::anyhow!(
            "cannot tell which root slot is booted: the kernel command line names no root \
             PARTUUID of this disk"
        )
    })
}

/// `upgrade SOURCE`: verify, stage, let systemd-sysupdate write the other
/// slot and its counted entry, then reboot (unless `no_reboot`).
pub fn upgrade(p: &Platform, source: &str, no_reboot: bool) -> Result<String> {
    let src = bundle::Source::parse(source);
    let slots = p.slots()?;
    let current = booted(&slots)?.clone();
    let target = slots
        .other()
        .context("the disk has only one root slot")?
        .clone();
    let b = bundle::index(&src)?;
    let v = b.version.to_string();
    if current.version.as_deref() >= Some(v.as_str()) {
        return Err(BadInput(format!(
            "{source} offers version {v}; this node runs {} already: only newer versions are installed",
            current.version.as_deref().unwrap_or("?")
        ))
        .into());
    }
    if target.version.as_deref() == Some(v.as_str()) {
        return Err(BadInput(format!(
            "version {v} is already in slot {} ({}); `rollback` switches to it",
            target.partition, target.assessment
        ))
        .into());
    }
    let stage = p.root.join(layout::STAGE_DIR);
    bundle::stage(&src, &b, &stage, target.size)
        .with_context(|| format!("fetching and verifying the update {v} from {source}"))?;
    let wrote = run_checked(p.cmd, &Cmd::new(SYSUPDATE).args(["update", &v]))
        .with_context(|| format!("installing version {v} with systemd-sysupdate"));
    let _ = std::fs::remove_dir_all(&stage);
    if let Err(e) = wrote {
        p.record("upgrade", &v, &format!("failed: {e:#}"))?;
        return Err(e);
    }
    // What sysupdate did, checked from the disk rather than trusted.
    let after = p.slots()?;
    let slot = after
        .slots
        .iter()
        .find(|s| s.version.as_deref() == Some(v.as_str()))
        .with_context(|| format!("after systemd-sysupdate no root slot holds version {v}"))?;
    let entry = after
        .entry_for(&v)
        .with_context(|| format!("after systemd-sysupdate there is no boot entry for {v}"))?;
    if entry.tries_left() != Some(layout::TRIES) {
        bail!(
            "the new boot entry {entry} does not count {} tries",
            layout::TRIES
        );
    }
    if slot.partuuid != b.root_uuid.to_string() {
        bail!(
            "slot {} holds {v} with PARTUUID {}, its entry boots {}",
            slot.partition,
            slot.partuuid,
            b.root_uuid
        );
    }
    p.record("upgrade", &v, &format!("installed in {}", slot.partition))?;
    let msg = format!(
        "version {v} installed in {} (entry {entry}); {}\n",
        slot.partition,
        if no_reboot {
            "it boots at the next reboot"
        } else {
            "rebooting"
        }
    );
    if !no_reboot {
        eprint!("hakube-firstboot: {msg}");
        p.reboot()?;
    }
    Ok(msg)
}

/// `rollback`: boot the other slot from now on, by marking the booted entry
/// bad (systemd-boot then picks the other one; no default is ever set).
pub fn rollback(p: &Platform, no_reboot: bool) -> Result<String> {
    let slots = p.slots()?;
    let current = booted(&slots)?.clone();
    let other = slots.other().context("the disk has only one root slot")?;
    let Some(other_v) = other.version.clone() else {
        return Err(BadInput(format!(
            "slot {} is empty: nothing to roll back to",
            other.partition
        ))
        .into());
    };
    if !slots::bootable(&slots, other) {
        return Err(BadInput(format!(
            "slot {} holds {other_v}, but its boot entry is {}: nothing to roll back to",
            other.partition, other.assessment
        ))
        .into());
    }
    let cur_v = current.version.clone().unwrap_or_default();
    let entry = slots
        .entry_for(&cur_v)
        .with_context(|| format!("no boot entry for the booted version {cur_v}"))?
        .clone();
    p.rename_entry(&entry, &entry.marked_bad())?;
    p.record(
        "rollback",
        &cur_v,
        &format!("marked bad on request; {other_v} boots next"),
    )?;
    let msg = format!(
        "{cur_v} marked bad; {other_v} ({}) boots next\n",
        other.partition
    );
    if !no_reboot {
        eprint!("hakube-firstboot: {msg}");
        p.reboot()?;
    }
    Ok(msg)
}

/// What the health gate decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOutcome {
    /// The boot is not on trial (first install, or already blessed).
    NotCounted,
    Healthy(String),
    /// Marked bad (and a reboot requested).
    MarkedBad(String),
}

/// The boot health gate (hakube-boot-assess.service, before
/// boot-complete.target): on a counted boot, wait up to `deadline` for
/// `check` to pass; then the boot is blessed by systemd-bless-boot. If it
/// does not pass in time, or fails in a way waiting cannot mend (a unit
/// crash-looping: [`crate::health::Definite`]), mark the entry bad and
/// reboot: systemd-boot then boots the previous slot.
pub fn gate(
    p: &Platform,
    deadline: Duration,
    interval: Duration,
    no_reboot: bool,
    check: &dyn Fn() -> Result<String>,
) -> Result<GateOutcome> {
    let slots = p.slots()?;
    let version = booted(&slots)?.version.clone().unwrap_or_default();
    if !slots.boot_counted {
        return Ok(GateOutcome::NotCounted);
    }
    let start = p.clock.now();
    let mut last;
    let waited = loop {
        let definite = match check() {
            Ok(s) => {
                p.record("health", &version, &format!("healthy: {s}"))?;
                return Ok(GateOutcome::Healthy(s));
            }
            Err(e) => {
                last = format!("{e:#}");
                crate::health::is_definite(&e)
            }
        };
        let waited = (p.clock.now() - start).unsigned_abs();
        if waited >= deadline || definite {
            break waited;
        }
        crate::steps::log(&format!(
            "health gate: {version} not healthy yet ({last}); {}s of {}s",
            waited.as_secs(),
            deadline.as_secs()
        ));
        p.clock.sleep(interval.min(deadline.saturating_sub(waited)));
    };
    let why = if waited < deadline {
        format!(
            "unhealthy after {}s, which waiting cannot mend: {last}",
            waited.as_secs()
        )
    } else {
        format!("unhealthy after {}s: {last}", deadline.as_secs())
    };
    p.record("health", &version, &format!("{why}; marked bad"))?;
    run_checked(p.cmd, &Cmd::new(BLESS_BOOT).arg("bad")).context("marking the boot entry bad")?;
    if !no_reboot {
        p.reboot()?;
    }
    Ok(GateOutcome::MarkedBad(why))
}

/// The slots and the last update event, for `status`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OsStatus {
    #[serde(flatten)]
    pub slots: Slots,
    pub last_result: Option<state::Event>,
}

pub fn os_status(p: &Platform) -> Result<OsStatus> {
    Ok(OsStatus {
        slots: p.slots()?,
        last_result: state::load(&p.root)?.events.pop(),
    })
}

pub fn os_status_text(s: &OsStatus) -> String {
    let mut out = slots::to_text(&s.slots);
    if let Some(e) = &s.last_result {
        out.push_str(&format!(
            "last: {} {} {}: {}\n",
            e.at, e.action, e.version, e.result
        ));
    }
    out
}

/// `root` as a path, for callers that only have a `&Path`.
pub fn platform<'a>(root: &Path, cmd: &'a dyn CommandRunner, clock: &'a dyn Clock) -> Platform<'a> {
    Platform {
        root: root.to_path_buf(),
        disk: None,
        cmd,
        clock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::FakeRunner;
    use crate::system::{Output, SystemClock};

    #[test]
    fn the_boot_disk_is_the_disk_the_root_is_mounted_from() {
        let cmd = FakeRunner::new();
        cmd.on(
            "findmnt -nro SOURCE --mountpoint /",
            Output::ok("/dev/vdb2\n"),
        );
        cmd.on("lsblk -npo PKNAME /dev/vdb2", Output::ok("/dev/vdb\n"));
        let p = platform(Path::new("/nonexistent"), &cmd, &SystemClock);
        assert_eq!(p.disk().unwrap(), PathBuf::from("/dev/vdb"));
        // A second hakube disk makes partition labels ambiguous: none is read.
        assert!(
            cmd.calls().iter().all(|c| !c.contains("by-partlabel")),
            "{:?}",
            cmd.calls()
        );
    }

    #[test]
    fn no_device_for_the_root_is_an_error_that_says_so() {
        let cmd = FakeRunner::new();
        cmd.on("findmnt", Output::ok("\n"));
        let p = platform(Path::new("/nonexistent"), &cmd, &SystemClock);
        let e = format!("{:#}", p.disk().unwrap_err());
        assert!(e.contains("findmnt names no device for /"), "{e}");
        assert_eq!(cmd.count("lsblk"), 0);
    }
}
