//! A minimal GPT writer: protective MBR, primary and backup headers and
//! partition arrays, on a plain file (no loop devices). Layout per UEFI 2.10
//! section 5.3; GUIDs are stored in the mixed-endian form UEFI uses.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use uuid::Uuid;

pub const SECTOR: u64 = 512;
const ENTRY_SIZE: usize = 128;
const ENTRY_COUNT: usize = 128;
/// Sectors the partition array occupies (128 entries x 128 bytes).
const ARRAY_SECTORS: u64 = (ENTRY_SIZE * ENTRY_COUNT) as u64 / SECTOR;
const HEADER_SIZE: usize = 92;

/// Partition type GUIDs of the Discoverable Partitions Specification.
pub use hakube_os_layout::types;

/// GPT attribute bit 63: "do not auto-mount" (Discoverable Partitions Specification).
pub use hakube_os_layout::ATTR_NO_AUTO;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub type_guid: Uuid,
    pub guid: Uuid,
    /// First and last sector, inclusive.
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn size(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * SECTOR
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    pub disk_guid: Uuid,
    /// Total disk size in sectors.
    pub disk_sectors: u64,
    pub partitions: Vec<Partition>,
}

impl Gpt {
    pub fn first_usable(&self) -> u64 {
        2 + ARRAY_SECTORS
    }
    pub fn last_usable(&self) -> u64 {
        self.disk_sectors - 2 - ARRAY_SECTORS
    }

    fn check(&self) -> Result<()> {
        if self.partitions.len() > ENTRY_COUNT {
            bail!("at most {ENTRY_COUNT} partitions fit a GPT");
        }
        let mut prev_last = self.first_usable() - 1;
        for p in &self.partitions {
            if p.first_lba <= prev_last
                || p.last_lba < p.first_lba
                || p.last_lba > self.last_usable()
            {
                bail!(
                    "partition {} ({}..{}) overlaps another or lies outside {}..{}",
                    p.name,
                    p.first_lba,
                    p.last_lba,
                    self.first_usable(),
                    self.last_usable()
                );
            }
            if p.name.encode_utf16().count() > 36 {
                bail!("partition name {:?} is longer than 36 UTF-16 units", p.name);
            }
            prev_last = p.last_lba;
        }
        Ok(())
    }

    /// The partition array (128 entries).
    fn array(&self) -> Vec<u8> {
        let mut buf = vec![0u8; ENTRY_SIZE * ENTRY_COUNT];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut buf[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
            e[0..16].copy_from_slice(&p.type_guid.to_bytes_le());
            e[16..32].copy_from_slice(&p.guid.to_bytes_le());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (j, unit) in p.name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        buf
    }

    fn header(&self, current: u64, backup: u64, array_lba: u64, array_crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        // 16..20: header CRC, computed last over the header with this field zero.
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_bytes_le());
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRY_COUNT as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// A protective MBR: one partition of type 0xEE covering the disk.
    fn protective_mbr(&self) -> Vec<u8> {
        let mut m = vec![0u8; SECTOR as usize];
        let e = &mut m[446..462];
        e[0] = 0x00;
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.disk_sectors - 1).unwrap_or(u32::MAX);
        e[12..16].copy_from_slice(&size.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    /// Writes MBR, primary and backup GPT into `file`, which must already be
    /// `disk_sectors * 512` bytes long.
    pub fn write_to(&self, file: &File) -> Result<()> {
        self.check()?;
        let len = file
            .metadata()
            .context("reading the disk file's size")?
            .len();
        if len != self.disk_sectors * SECTOR {
            bail!(
                "disk file is {len} bytes, expected {}",
                self.disk_sectors * SECTOR
            );
        }
        let array = self.array();
        let array_crc = crc32fast::hash(&array);
        let last = self.disk_sectors - 1;
        let backup_array_lba = last - ARRAY_SECTORS;
        let writes: [(u64, Vec<u8>); 5] = [
            (0, self.protective_mbr()),
            (1, self.header(1, last, 2, array_crc)),
            (2, array.clone()),
            (backup_array_lba, array),
            (last, self.header(last, 1, backup_array_lba, array_crc)),
        ];
        for (lba, bytes) in writes {
            file.write_all_at(&bytes, lba * SECTOR)
                .with_context(|| format!("writing GPT structures at sector {lba}"))?;
        }
        Ok(())
    }
}
