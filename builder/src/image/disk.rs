//! The node's disk: partition plan with seeded identifiers, the raw GPT disk
//! assembled from partition images, and its qcow2 conversion.

use super::fsutil;
use super::gpt::{types, Gpt, Partition, ATTR_NO_AUTO, SECTOR};
use super::tools::{Invocation, Runner, QEMU_IMG};
use anyhow::{Context, Result};
use std::path::Path;
use uuid::Uuid;

/// Namespace of every UUID hakube derives (uuid v5 of a descriptive name).
pub const NAMESPACE: Uuid = uuid::uuid!("5a3f0c1e-7d2b-5e64-9c1a-6b8f2d4e0a17");

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Sizes of the disk and its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    /// The virtual disk (sparse).
    pub disk: u64,
    pub esp: u64,
    /// Each root slot (A holds the erofs, B stays empty for updates).
    pub root: u64,
    /// The var partition as built; it grows to fill the disk on first boot.
    pub var: u64,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            disk: 20 * GIB,
            esp: 256 * MIB,
            root: 2 * GIB,
            var: GIB,
        }
    }
}

/// A deterministic UUID for `what` of `node` in `cluster`.
pub fn seeded_uuid(cluster: &str, node: &str, what: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("{cluster}/{node}/{what}").as_bytes())
}

/// The partition table: esp, root-a, root-b (no-auto), var; 1 MiB aligned.
pub fn plan(cluster: &str, node: &str, layout: &Layout) -> Gpt {
    let align = MIB / SECTOR;
    let mut next = align;
    let mut parts = Vec::new();
    let specs: [(&str, Uuid, u64, u64); 4] = [
        ("esp", types::ESP, layout.esp, 0),
        ("root-a", types::ROOT_X86_64, layout.root, 0),
        ("root-b", types::ROOT_X86_64, layout.root, ATTR_NO_AUTO),
        ("var", types::VAR, layout.var, 0),
    ];
    for (name, ty, size, attributes) in specs {
        let sectors = size / SECTOR;
        parts.push(Partition {
            name: name.into(),
            type_guid: ty,
            guid: seeded_uuid(cluster, node, &format!("partition/{name}")),
            first_lba: next,
            last_lba: next + sectors - 1,
            attributes,
        });
        next += sectors.div_ceil(align) * align;
    }
    Gpt {
        disk_guid: seeded_uuid(cluster, node, "disk"),
        disk_sectors: layout.disk / SECTOR,
        partitions: parts,
    }
}

/// Partition images to place, by partition name.
pub struct Contents<'a> {
    pub esp: &'a Path,
    pub root_a: &'a Path,
    pub var: &'a Path,
}

/// Writes a sparse raw disk at `raw`: GPT plus the partition images.
pub fn assemble_raw(gpt: &Gpt, contents: &Contents, raw: &Path) -> Result<()> {
    // The raw disk carries the node's secrets: 0600 from its first byte.
    let f = crate::private::create_file(raw)?;
    f.set_len(gpt.disk_sectors * SECTOR)
        .with_context(|| format!("sizing {}", raw.display()))?;
    gpt.write_to(&f)?;
    for p in &gpt.partitions {
        let src = match p.name.as_str() {
            "esp" => contents.esp,
            "root-a" => contents.root_a,
            "var" => contents.var,
            _ => continue,
        };
        fsutil::copy_sparse_into(src, &f, p.offset(), p.size())
            .with_context(|| format!("placing {} into partition {}", src.display(), p.name))?;
    }
    f.sync_all().context("flushing the raw disk")?;
    Ok(())
}

/// Converts the raw disk to qcow2. Uncompressed: the erofs root and the
/// kernel/initrd are compressed already, so `-c` saves little and costs time
/// (see bench/build.sh).
pub fn to_qcow2(runner: &dyn Runner, raw: &Path, qcow2: &Path) -> Result<()> {
    runner
        .run(
            &Invocation::new(QEMU_IMG)
                .args([
                    "convert",
                    "-q",
                    "-f",
                    "raw",
                    "-O",
                    "qcow2",
                    "-o",
                    "cluster_size=65536",
                ])
                .arg(raw)
                .arg(qcow2),
        )
        .context("converting the disk to qcow2")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_aligned_ordered_and_seeded() {
        let l = Layout::default();
        let g = plan("hakube", "worker-1", &l);
        let names: Vec<&str> = g.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["esp", "root-a", "root-b", "var"]);
        for p in &g.partitions {
            assert_eq!(p.first_lba % 2048, 0, "{} not 1 MiB aligned", p.name);
        }
        assert_eq!(g.partitions[1].size(), g.partitions[2].size());
        assert_eq!(g.partitions[2].attributes, ATTR_NO_AUTO);
        assert_eq!(plan("hakube", "worker-1", &l), g);
        assert_ne!(plan("hakube", "worker-2", &l).disk_guid, g.disk_guid);
        assert_ne!(g.partitions[1].guid, g.partitions[2].guid);
    }
}
