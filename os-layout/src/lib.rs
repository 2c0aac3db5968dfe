//! The node's disk layout and OS update scheme, as one definition:
//! `hakube-build` lays out disks, ESP entries and update bundles with it, and
//! `hakube-firstboot` reads slots and entries and installs updates with it.
//!
//! - Partitions (types from the Discoverable Partitions Specification): `esp`,
//!   two x86-64 root slots, `var`. A root slot is labelled `hakube_<version>`
//!   or `_empty`: the labels systemd-sysupdate matches and writes
//!   (sysupdate.d(5), `Type=partition`).
//! - Each version has a kernel, an initrd and a Boot Loader Specification
//!   entry on the ESP, all named by the version; the entry names its own root
//!   by PARTUUID, so falling back to an older entry also falls back to its
//!   root (systemd#32653).
//! - Boot counting (Automatic Boot Assessment): an update's entry starts at
//!   `+3`; the first install's entry has no counter (there is nothing to fall
//!   back to). loader.conf has no `default` (systemd#31215): systemd-boot boots
//!   the newest entry that has tries left.

pub mod entry;
pub mod sysupdate;
pub mod version;

pub use entry::{BootCounter, EntryName};
use uuid::Uuid;
pub use version::ImageVersion;

/// `IMAGE_ID` in the OS root's os-release, and the prefix of every name.
pub const IMAGE_ID: &str = "hakube";

/// Namespace of every UUID hakube derives (uuid v5 of a descriptive name).
pub const NAMESPACE: Uuid = uuid::uuid!("5a3f0c1e-7d2b-5e64-9c1a-6b8f2d4e0a17");

/// Partition type GUIDs (Discoverable Partitions Specification).
pub mod types {
    use uuid::{uuid, Uuid};
    pub const ESP: Uuid = uuid!("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    pub const ROOT_X86_64: Uuid = uuid!("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
    pub const VAR: Uuid = uuid!("4d21b016-b534-45c2-a9fb-5c16e091fd2d");
}

/// GPT attribute bit 63: "do not auto-mount" (Discoverable Partitions Specification).
pub const ATTR_NO_AUTO: u64 = 1 << 63;

pub const ESP_LABEL: &str = "esp";
pub const VAR_LABEL: &str = "var";
/// The label of a root slot that holds no version (sysupdate's convention).
pub const EMPTY_SLOT_LABEL: &str = "_empty";
/// Where the node mounts the ESP (fstab; systemd-bless-boot and sysupdate find it there).
pub const ESP_MOUNT: &str = "/efi";

/// Tries an update's boot entry starts with.
pub const TRIES: u32 = 3;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Sizes of the disk and its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// The virtual disk (sparse).
    pub disk: u64,
    pub esp: u64,
    /// Each root slot.
    pub root: u64,
    /// The var partition as built; it grows to fill the disk on first boot.
    pub var: u64,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            disk: 20 * GIB,
            esp: 256 * MIB,
            root: 2 * GIB,
            var: GIB,
        }
    }
}

/// A partition of the layout, in disk order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Esp,
    RootA,
    RootB,
    Var,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Esp, Part::RootA, Part::RootB, Part::Var];
    /// Stable name, used to seed the partition's UUID.
    pub fn id(self) -> &'static str {
        match self {
            Part::Esp => "esp",
            Part::RootA => "root-a",
            Part::RootB => "root-b",
            Part::Var => "var",
        }
    }
    pub fn type_guid(self) -> Uuid {
        match self {
            Part::Esp => types::ESP,
            Part::RootA | Part::RootB => types::ROOT_X86_64,
            Part::Var => types::VAR,
        }
    }
    pub fn size(self, s: &Sizes) -> u64 {
        match self {
            Part::Esp => s.esp,
            Part::RootA | Part::RootB => s.root,
            Part::Var => s.var,
        }
    }
    /// The label the first install gives it: slot A holds `version`, slot B is empty.
    pub fn initial_label(self, version: &ImageVersion) -> String {
        match self {
            Part::Esp => ESP_LABEL.into(),
            Part::RootA => root_label(version),
            Part::RootB => EMPTY_SLOT_LABEL.into(),
            Part::Var => VAR_LABEL.into(),
        }
    }
    /// Slot B is not auto-mounted (it is chosen by the boot entry's root=).
    pub fn initial_attributes(self) -> u64 {
        match self {
            Part::RootB => ATTR_NO_AUTO,
            _ => 0,
        }
    }
}

/// The label of a root slot holding `version`.
pub fn root_label(version: &ImageVersion) -> String {
    format!("{IMAGE_ID}_{version}")
}

/// The version a root slot's label names; `None` for an empty or foreign slot.
pub fn version_of_label(label: &str) -> Option<ImageVersion> {
    label
        .strip_prefix(IMAGE_ID)?
        .strip_prefix('_')?
        .parse()
        .ok()
}

/// The PARTUUID an update's root gets wherever sysupdate writes it: derived
/// from cluster and version, carried in the bundle's file name (`@u`), and
/// named by the entry's `root=PARTUUID=`.
pub fn update_root_uuid(cluster: &str, version: &ImageVersion) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("{cluster}/root/{version}").as_bytes())
}

/// The kernel command line of the entry booting the root with `root_uuid`.
pub fn kernel_cmdline(root_uuid: &Uuid) -> String {
    format!("root=PARTUUID={root_uuid} rootfstype=erofs ro console=tty0 console=ttyS0,115200")
}

/// The PARTUUID the running kernel was told to boot (`root=PARTUUID=` in /proc/cmdline).
pub fn root_uuid_of_cmdline(cmdline: &str) -> Option<Uuid> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("root=PARTUUID="))
        .and_then(|u| Uuid::parse_str(u).ok())
}

/// Paths of a version's files on the ESP (relative to its root).
pub fn esp_kernel(version: &ImageVersion) -> String {
    format!("{IMAGE_ID}/{IMAGE_ID}_{version}.vmlinuz")
}
pub fn esp_initrd(version: &ImageVersion) -> String {
    format!("{IMAGE_ID}/{IMAGE_ID}_{version}.initrd")
}
pub const ESP_ENTRIES_DIR: &str = "loader/entries";
pub const ESP_LOADER_CONF: &str = "loader/loader.conf";

/// loader.conf: no `default` (systemd#31215: a default wins over boot
/// counting, so a bad entry would keep booting), no menu.
pub const LOADER_CONF: &str =
    "# hakube: no default; systemd-boot boots the newest entry with tries left\n\
                               # (boot counting), so a failed update falls back by itself.\n\
                               timeout 0\neditor no\n";

/// The Boot Loader Specification entry of `version`.
pub fn entry_conf(version: &ImageVersion, kernel_version: &str, root_uuid: &Uuid) -> String {
    format!(
        "title hakube {version} (Linux {kernel_version})\nversion {version}\nsort-key {IMAGE_ID}\n\
         linux /{}\ninitrd /{}\noptions {}\n",
        esp_kernel(version),
        esp_initrd(version),
        kernel_cmdline(root_uuid)
    )
}

/// File names in an update bundle (one directory, or one URL prefix).
pub mod bundle {
    use super::{ImageVersion, IMAGE_ID};
    use uuid::Uuid;
    pub const SHA256SUMS: &str = "SHA256SUMS";
    pub fn root(version: &ImageVersion, uuid: &Uuid) -> String {
        format!("{IMAGE_ID}_{version}_{uuid}.root.erofs")
    }
    pub fn kernel(version: &ImageVersion) -> String {
        format!("{IMAGE_ID}_{version}.vmlinuz")
    }
    pub fn initrd(version: &ImageVersion) -> String {
        format!("{IMAGE_ID}_{version}.initrd")
    }
    pub fn entry(version: &ImageVersion) -> String {
        format!("{IMAGE_ID}_{version}.conf")
    }
}

/// Where on the node an update is staged (verified) before sysupdate writes it.
pub const STAGE_DIR: &str = "var/lib/hakube/update/staged";
/// The node's record of updates, health results and rollbacks.
pub const STATE_FILE: &str = "var/lib/hakube/update/state.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_foreign_ones_are_not_versions() {
        let v: ImageVersion = "20261201.202300".parse().unwrap();
        assert_eq!(root_label(&v), "hakube_20261201.202300");
        assert_eq!(version_of_label(&root_label(&v)), Some(v.clone()));
        assert_eq!(version_of_label(EMPTY_SLOT_LABEL), None);
        assert_eq!(version_of_label("root-a"), None);
        assert_eq!(version_of_label("hakube_x"), None);
        assert!(
            root_label(&v).encode_utf16().count() <= 36,
            "GPT names hold 36 UTF-16 units"
        );
    }

    #[test]
    fn entry_names_its_own_root_and_kernel() {
        let v: ImageVersion = "20261201.202300".parse().unwrap();
        let u = update_root_uuid("hakube", &v);
        assert_ne!(u, update_root_uuid("other", &v));
        let e = entry_conf(&v, "6.12.117+deb13-cloud-amd64", &u);
        assert!(
            e.contains(&format!("options root=PARTUUID={u} rootfstype=erofs ro")),
            "{e}"
        );
        assert!(
            e.contains("linux /hakube/hakube_20261201.202300.vmlinuz"),
            "{e}"
        );
        assert!(e.contains("version 20261201.202300\n"), "{e}");
        assert_eq!(root_uuid_of_cmdline(&kernel_cmdline(&u)), Some(u));
        assert_eq!(root_uuid_of_cmdline("root=PARTLABEL=root-a ro"), None);
        assert!(!LOADER_CONF.lines().any(|l| l.starts_with("default")));
    }

    #[test]
    fn layout_is_two_equal_root_slots_between_esp_and_var() {
        let s = Sizes::default();
        let v: ImageVersion = "20261201.202300".parse().unwrap();
        assert_eq!(Part::RootA.size(&s), Part::RootB.size(&s));
        assert_eq!(Part::RootA.type_guid(), Part::RootB.type_guid());
        assert_eq!(Part::RootB.initial_label(&v), EMPTY_SLOT_LABEL);
        assert_eq!(Part::RootA.initial_label(&v), "hakube_20261201.202300");
        assert_eq!(Part::RootB.initial_attributes(), ATTR_NO_AUTO);
        assert_eq!(
            Part::ALL.last(),
            Some(&Part::Var),
            "var is last so it can grow"
        );
    }
}
