//! The node's two root slots as the disk, the ESP and the firmware show them:
//! the GPT (read with `sfdisk --json`, from the boot disk or a disk image
//! file), the boot entries on the ESP and systemd-boot's EFI variables.

use anyhow::{Context, Result};
use hakube_os_layout::entry::{boot_choice, Assessment};
use hakube_os_layout::{self as layout, EntryName, ImageVersion};
use serde::Serialize;
use std::path::Path;

/// One root partition of the GPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPartition {
    /// Partition device or `<image>N`, as sfdisk names it.
    pub node: String,
    pub partuuid: String,
    pub label: String,
    /// Bytes.
    pub size: u64,
}

/// Root-type partitions of `sfdisk --json` output, in disk order.
pub fn parse_sfdisk(json: &str) -> Result<(Vec<RootPartition>, u64)> {
    let v: serde_json::Value =
        serde_json::from_str(json).context("parsing sfdisk --json output")?;
    let table = &v["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let parts = table["partitions"]
        .as_array()
        .context("sfdisk --json: no partitiontable.partitions")?;
    let root_type = layout::types::ROOT_X86_64.to_string();
    let roots = parts
        .iter()
        .filter(|p| {
            p["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case(&root_type))
        })
        .map(|p| RootPartition {
            node: p["node"].as_str().unwrap_or_default().to_string(),
            partuuid: p["uuid"].as_str().unwrap_or_default().to_lowercase(),
            label: p["name"].as_str().unwrap_or_default().to_string(),
            size: p["size"].as_u64().unwrap_or(0) * sector,
        })
        .collect();
    Ok((roots, sector))
}

/// A slot as `status` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Slot {
    pub partition: String,
    pub partuuid: String,
    pub label: String,
    /// `None`: the slot is empty.
    pub version: Option<String>,
    pub booted: bool,
    /// The boot entry's file name on the ESP.
    pub entry: Option<String>,
    /// good (blessed or first install), indeterminate (counting), bad, or
    /// none (no entry: cannot boot).
    pub assessment: String,
    pub tries_left: Option<u32>,
    /// systemd-boot will boot this slot next (no default is set: the newest
    /// entry with tries left).
    pub next_boot: bool,
    pub size: u64,
}

/// Everything about both slots.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Slots {
    pub slots: Vec<Slot>,
    /// The booted entry is counted (an update on trial).
    pub boot_counted: bool,
    #[serde(skip)]
    pub entries: Vec<EntryName>,
}

impl Slots {
    pub fn booted(&self) -> Option<&Slot> {
        self.slots.iter().find(|s| s.booted)
    }
    pub fn other(&self) -> Option<&Slot> {
        self.slots.iter().find(|s| !s.booted)
    }
    pub fn entry_for(&self, version: &str) -> Option<&EntryName> {
        self.entries.iter().find(|e| e.version.as_str() == version)
    }
}

/// Hakube entries in `<esp>/loader/entries`, sorted by name.
pub fn list_entries(esp: &Path) -> Result<Vec<EntryName>> {
    let dir = esp.join(layout::ESP_ENTRIES_DIR);
    let mut out: Vec<EntryName> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing the boot entries in {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(EntryName::parse))
        .collect();
    out.sort_by_key(|a| a.to_string());
    Ok(out)
}

/// Puts the three sources together.
pub fn assemble(
    roots: &[RootPartition],
    entries: Vec<EntryName>,
    booted_partuuid: Option<&str>,
    boot_counted: bool,
) -> Slots {
    let next = boot_choice(&entries).map(|e| e.version.clone());
    let slots = roots
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let version: Option<ImageVersion> = layout::version_of_label(&r.label);
            let entry = version
                .as_ref()
                .and_then(|v| entries.iter().find(|e| &e.version == v));
            Slot {
                partition: format!("root-{}", (b'a' + i as u8) as char),
                partuuid: r.partuuid.clone(),
                label: r.label.clone(),
                version: version.as_ref().map(|v| v.to_string()),
                booted: booted_partuuid.is_some_and(|b| b.eq_ignore_ascii_case(&r.partuuid)),
                entry: entry.map(|e| e.to_string()),
                assessment: entry
                    .map(|e| e.assessment().as_str())
                    .unwrap_or("none")
                    .to_string(),
                tries_left: entry.and_then(|e| e.tries_left()),
                next_boot: version.is_some() && version == next,
                size: r.size,
            }
        })
        .collect();
    Slots {
        slots,
        boot_counted,
        entries,
    }
}

/// True when the entry is usable as a fallback (not judged bad).
pub fn bootable(slots: &Slots, slot: &Slot) -> bool {
    slot.version
        .as_deref()
        .and_then(|v| slots.entry_for(v))
        .is_some_and(|e| e.assessment() != Assessment::Bad)
}

pub fn to_text(s: &Slots) -> String {
    let mut out = format!(
        "{:<8} {:<16} {:<7} {:<14} {:>10}  {}\n",
        "SLOT", "VERSION", "BOOTED", "STATE", "TRIES LEFT", "ENTRY"
    );
    for slot in &s.slots {
        out.push_str(&format!(
            "{:<8} {:<16} {:<7} {:<14} {:>10}  {}{}\n",
            slot.partition,
            slot.version.as_deref().unwrap_or("(empty)"),
            if slot.booted { "yes" } else { "no" },
            slot.assessment,
            slot.tries_left
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            slot.entry.as_deref().unwrap_or("-"),
            if slot.next_boot { "  (next boot)" } else { "" }
        ));
    }
    out
}
