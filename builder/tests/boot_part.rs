//! `usr/lib/hakube/boot-part` (the initramfs finds /var with it) and the
//! `hakube-esp` systemd generator (the ESP on /efi), against a fake /proc and
//! /sys holding two hakube disks made from one image: the same partition
//! names on both, so `/dev/disk/by-partlabel/*` would be ambiguous. Each must
//! name the partition on the disk the root was mounted from.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BOOT_PART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/os/rootfs/usr/lib/hakube/boot-part"
);
const ESP_GENERATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/os/rootfs/usr/lib/systemd/system-generators/hakube-esp"
);

/// The partition names of a hakube disk, in order (os-layout's labels).
const PARTS: [&str; 4] = ["esp", "hakube_1.0.0", "_empty", "var"];

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    /// Disks `vda` (major 254, minor 0) and `vdb` (254:16) with `parts` each;
    /// `mounts` are `(MAJ:MIN, mount point)` lines of mountinfo in order.
    fn new(parts: &[&str], mounts: &[(&str, &str)]) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        for (disk, base) in [("vda", 0), ("vdb", 16)] {
            let ddir = format!("devices/pci0000:00/virtio{base}/block/{disk}");
            write(&sys.join(&ddir).join("size"), "41943040\n");
            fs::create_dir_all(sys.join("dev/block")).unwrap();
            symlink(
                format!("../../{ddir}"),
                sys.join(format!("dev/block/254:{base}")),
            )
            .unwrap();
            for (i, name) in parts.iter().enumerate() {
                let n = i + 1;
                let pdir = format!("{ddir}/{disk}{n}");
                write(&sys.join(&pdir).join("partition"), &format!("{n}\n"));
                write(
                    &sys.join(&pdir).join("uevent"),
                    &format!(
                        "MAJOR=254\nMINOR={}\nDEVNAME={disk}{n}\nDEVTYPE=partition\nDISKSEQ=9\nPARTN={n}\nPARTNAME={name}\n",
                        base + n
                    ),
                );
                symlink(
                    format!("../../{pdir}"),
                    sys.join(format!("dev/block/254:{}", base + n)),
                )
                .unwrap();
            }
        }
        let mut info = String::from("22 1 0:21 / /proc rw,nosuid - proc proc rw\n");
        for (i, (mm, point)) in mounts.iter().enumerate() {
            info.push_str(&format!(
                "{} 1 {mm} / {point} ro,relatime shared:1 - erofs /dev/x ro\n",
                30 + i
            ));
        }
        write(&dir.path().join("proc/self/mountinfo"), &info);
        Host { dir }
    }

    fn env(&self, c: &mut Command) {
        c.env("HAKUBE_PROC", self.dir.path().join("proc"))
            .env("HAKUBE_SYS", self.dir.path().join("sys"));
    }

    fn boot_part(&self, args: &[&str]) -> Output {
        let mut c = Command::new("sh");
        c.arg(BOOT_PART).args(args);
        self.env(&mut c);
        c.output().unwrap()
    }

    fn generator(&self) -> (Output, PathBuf) {
        // The generator calls boot-part from HAKUBE_LIB.
        let lib = self.dir.path().join("lib");
        fs::create_dir_all(&lib).unwrap();
        fs::copy(BOOT_PART, lib.join("boot-part")).unwrap();
        let out = self.dir.path().join("generator");
        fs::create_dir_all(&out).unwrap();
        let mut c = Command::new("sh");
        c.arg(ESP_GENERATOR)
            .arg(&out)
            .arg(self.dir.path().join("early"))
            .arg(self.dir.path().join("late"))
            .env("HAKUBE_LIB", &lib);
        self.env(&mut c);
        (c.output().unwrap(), out)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn names_the_partition_on_the_disk_the_root_came_from() {
    // Booted from vdb's slot A (254:18); vda is a second copy of the image.
    let h = Host::new(&PARTS, &[("254:18", "/")]);
    let o = h.boot_part(&["var"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "/dev/vdb4\n");
    let o = h.boot_part(&["esp", "/"]);
    assert_eq!(text(&o.stdout), "/dev/vdb1\n", "{}", text(&o.stderr));

    // The same image booted from vda.
    let h = Host::new(&PARTS, &[("254:2", "/")]);
    assert_eq!(text(&h.boot_part(&["var"]).stdout), "/dev/vda4\n");
}

#[test]
fn follows_the_initramfs_root_mount_point_and_the_topmost_mount() {
    // In the initramfs the root is on /root; a later mount over / (here one
    // from vda) hides an earlier one and does not count for /root.
    let h = Host::new(&PARTS, &[("254:2", "/"), ("254:19", "/root")]);
    assert_eq!(text(&h.boot_part(&["var", "/root"]).stdout), "/dev/vdb4\n");
    let h = Host::new(&PARTS, &[("254:2", "/"), ("254:18", "/")]);
    assert_eq!(text(&h.boot_part(&["var"]).stdout), "/dev/vdb4\n");
}

/// `boot-part args` fails with exit 1, prints nothing and says `why`.
fn refuses(h: &Host, args: &[&str], why: &str) {
    let o = h.boot_part(args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(why), "{}", text(&o.stderr));
    assert!(o.stdout.is_empty(), "{}", text(&o.stdout));
}

#[test]
fn says_why_when_it_cannot_name_one_partition() {
    let h = Host::new(&PARTS, &[("254:18", "/")]);
    refuses(&h, &["var", "/root"], "nothing is mounted on /root");

    // The root on a whole disk (no partition table): no disk to search.
    let h = Host::new(&PARTS, &[("254:16", "/")]);
    refuses(&h, &["var"], "is not a partition of a disk");

    let h = Host::new(&["esp", "hakube_1.0.0", "_empty"], &[("254:18", "/")]);
    refuses(&h, &["var"], "no partition named 'var' on the disk of /");

    let h = Host::new(&["esp", "hakube_1.0.0", "var", "var"], &[("254:18", "/")]);
    refuses(&h, &["var"], "two partitions named 'var' (vdb3, vdb4)");

    let o = h.boot_part(&[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_generator_mounts_the_boot_disks_esp_on_efi() {
    let h = Host::new(&PARTS, &[("254:18", "/")]);
    let (o, out) = h.generator();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let unit = fs::read_to_string(out.join("efi.mount")).unwrap();
    assert!(unit.contains("\nWhat=/dev/vdb1\n"), "{unit}");
    assert!(unit.contains("\nWhere=/efi\n"), "{unit}");
    assert!(unit.contains("\nType=vfat\n"), "{unit}");
    assert!(unit.contains("\nOptions=umask=0077,quiet\n"), "{unit}");
    let wants = out.join("local-fs.target.wants/efi.mount");
    assert_eq!(
        fs::read_link(&wants).unwrap(),
        PathBuf::from("../efi.mount")
    );
}

#[test]
fn the_generator_writes_nothing_and_does_not_fail_the_boot_without_an_esp() {
    let h = Host::new(&["hakube_1.0.0", "_empty", "var"], &[("254:17", "/")]);
    let (o, out) = h.generator();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no partition named 'esp'"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
}
