//! The node's disk: partition plan with seeded identifiers, the raw GPT disk
//! assembled from partition images, and its qcow2 conversion.

use super::fsutil;
use super::gpt::{Gpt, Partition, SECTOR};
use super::tools::{Invocation, Runner, QEMU_IMG};
use anyhow::{Context, Result};
use hakube_os_layout::{ImageVersion, Part};
use std::path::Path;
use uuid::Uuid;

/// Namespace of every UUID hakube derives (uuid v5 of a descriptive name).
pub use hakube_os_layout::NAMESPACE;

const MIB: u64 = 1 << 20;

/// Sizes of the disk and its partitions (one definition, shared with the node).
pub type Layout = hakube_os_layout::Sizes;

/// A deterministic UUID for `what` of `node` in `cluster`.
pub fn seeded_uuid(cluster: &str, node: &str, what: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("{cluster}/{node}/{what}").as_bytes())
}

/// The partition table of a first install of `version`, in
/// [`Part::ALL`] order: esp, root slot A (labelled with the version), root
/// slot B (`_empty`, no-auto), var; 1 MiB aligned.
pub fn plan(cluster: &str, node: &str, layout: &Layout, version: &ImageVersion) -> Gpt {
    let align = MIB / SECTOR;
    let mut next = align;
    let mut parts = Vec::new();
    for part in Part::ALL {
        let sectors = part.size(layout) / SECTOR;
        parts.push(Partition {
            name: part.initial_label(version),
            type_guid: part.type_guid(),
            guid: seeded_uuid(cluster, node, &format!("partition/{}", part.id())),
            first_lba: next,
            last_lba: next + sectors - 1,
            attributes: part.initial_attributes(),
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
    for (part, p) in Part::ALL.iter().zip(&gpt.partitions) {
        let src = match part {
            Part::Esp => contents.esp,
            Part::RootA => contents.root_a,
            Part::Var => contents.var,
            Part::RootB => continue,
        };
        fsutil::copy_sparse_into(src, &f, p.offset(), p.size())
            .with_context(|| format!("placing {} into partition {}", src.display(), p.name))?;
    }
    f.sync_all().context("flushing the raw disk")?;
    Ok(())
}

/// Converts the raw disk to qcow2, its clusters compressed with zstd. The
/// erofs root and the kernel/initrd are compressed already, but the
/// containerd image store on /var holds the images unpacked (static
/// binaries, about three times their layers' size): zstd brings a master's
/// qcow2 from 1387 MB to 834 MB in 8 s (zlib: 851 MB in 34 s). QEMU reads
/// compressed clusters transparently and writes new ones uncompressed;
/// `compression_type=zstd` needs QEMU 5.1 or later built with zstd (Debian's
/// is). The output is the same bytes for the same input (in-order writes).
pub fn to_qcow2(runner: &dyn Runner, raw: &Path, qcow2: &Path) -> Result<()> {
    runner
        .run(
            &Invocation::new(QEMU_IMG)
                .args([
                    "convert",
                    "-q",
                    "-c",
                    "-f",
                    "raw",
                    "-O",
                    "qcow2",
                    "-o",
                    "cluster_size=65536,compression_type=zstd",
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

    use super::super::gpt::ATTR_NO_AUTO;

    #[test]
    fn plan_is_aligned_ordered_and_seeded() {
        let l = Layout::default();
        let v: ImageVersion = "20261201.202300".parse().unwrap();
        let plan = |c: &str, n: &str, l: &Layout| plan(c, n, l, &v);
        let g = plan("hakube", "worker-1", &l);
        let names: Vec<&str> = g.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["esp", "hakube_20261201.202300", "_empty", "var"]);
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
