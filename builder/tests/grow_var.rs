//! `usr/lib/hakube/grow-var` (run at every boot) against a fake sysfs and
//! /dev and fake sfdisk/partx/resize2fs that record their calls: it grows
//! the var partition only when the disk has room, and a failing resize2fs is
//! visible and fails the unit.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/os/rootfs/usr/lib/hakube/grow-var"
);

struct Disk {
    dir: tempfile::TempDir,
}

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

fn tool(bin: &Path, name: &str, body: &str) {
    let p = bin.join(name);
    write(
        &p,
        &format!("#!/bin/sh\necho \"{name} $*\" >> \"$TOOL_LOG\"\n{body}\n"),
    );
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

impl Disk {
    /// A disk of `disk_sectors` whose 4th partition starts at `start` with `size` sectors.
    fn new(disk_sectors: u64, start: u64, size: u64) -> Disk {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let dev = r.join("devices/vda");
        write(&dev.join("size"), &format!("{disk_sectors}\n"));
        write(&dev.join("vda4/partition"), "4\n");
        write(&dev.join("vda4/start"), &format!("{start}\n"));
        write(&dev.join("vda4/size"), &format!("{size}\n"));
        fs::create_dir_all(r.join("sys/class/block")).unwrap();
        fs::rename(r.join("devices"), r.join("sys/devices")).unwrap();
        symlink("../../devices/vda", r.join("sys/class/block/vda")).unwrap();
        symlink("../../devices/vda/vda4", r.join("sys/class/block/vda4")).unwrap();
        write(&r.join("dev/vda4"), "");
        write(&r.join("dev/vda"), "");
        // A second hakube disk whose by-partlabel/var link won the race:
        // grow-var must follow the mounted /var, never that name.
        fs::create_dir_all(r.join("dev/disk/by-partlabel")).unwrap();
        write(&r.join("dev/vdb4"), "");
        symlink("../../vdb4", r.join("dev/disk/by-partlabel/var")).unwrap();
        let bin = r.join("bin");
        // Growing the partition: it then ends 34 sectors before the disk's end.
        tool(
            &bin,
            "sfdisk",
            &format!(
                "case \"$*\" in *-N*) cat >/dev/null; echo $(( {disk_sectors} - 34 - {start} )) > \"$HAKUBE_SYS/devices/vda/vda4/size\";; esac"
            ),
        );
        tool(&bin, "partx", "");
        // /var is mounted from vda4 (the initramfs took it from the boot disk).
        // (Not logged: the calls asserted are the ones that change the disk.)
        let findmnt = bin.join("findmnt");
        write(
            &findmnt,
            "#!/bin/sh\n[ \"$*\" = \"-nro SOURCE --mountpoint /var\" ] && echo \"$HAKUBE_DEV/vda4\"\n",
        );
        fs::set_permissions(&findmnt, fs::Permissions::from_mode(0o755)).unwrap();
        tool(
            &bin,
            "resize2fs",
            "if [ -n \"${RESIZE_FAILS:-}\" ]; then echo \"resize2fs: Bad magic number in super-block while trying to open $1\" >&2; exit 1; fi\necho \"The filesystem on $1 is now N blocks long.\"",
        );
        Disk { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn run(&self, resize_fails: bool) -> Output {
        let r = self.root();
        let mut c = Command::new("sh");
        c.arg(SCRIPT)
            .env("HAKUBE_SYS", r.join("sys"))
            .env("HAKUBE_DEV", r.join("dev"))
            .env("TOOL_LOG", r.join("log"))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    r.join("bin").display(),
                    std::env::var("PATH").unwrap()
                ),
            );
        if resize_fails {
            c.env("RESIZE_FAILS", "1");
        }
        c.output().unwrap()
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.root().join("log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn grows_once_then_leaves_the_partition_table_alone() {
    // 20 GiB disk, var at 4.25 GiB with 1 GiB: room to grow.
    let d = Disk::new(41_943_040, 8_912_896, 2_097_152);
    let first = d.run(false);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("grown from 2097152 to"),
        "{}",
        text(&first.stdout)
    );
    let calls = d.calls();
    assert!(
        calls[0].starts_with("sfdisk --relocate gpt-bak-std"),
        "{calls:?}"
    );
    assert!(
        calls[1].starts_with("sfdisk --no-reread --no-tell-kernel -q -N 4"),
        "{calls:?}"
    );
    assert!(calls[2].starts_with("partx -u -n 4"), "{calls:?}");
    assert!(calls[3].starts_with("resize2fs"), "{calls:?}");
    // The mounted /var (vda4), not what by-partlabel/var names (vdb4).
    assert!(calls[3].ends_with("/dev/vda4"), "{calls:?}");
    // The next boot: nothing left to grow, so no GPT write.
    let again = d.run(false);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let calls = d.calls();
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert!(calls[4].starts_with("resize2fs"), "{calls:?}");
    assert!(
        text(&again.stdout).contains("already fills"),
        "{}",
        text(&again.stdout)
    );
    assert!(
        text(&again.stdout).contains("is now N blocks long"),
        "resize2fs output is shown"
    );
}

#[test]
fn a_failing_resize2fs_fails_the_unit_and_says_why() {
    let d = Disk::new(41_943_040, 8_912_896, 41_943_040 - 34 - 8_912_896);
    let out = d.run(true);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Bad magic number in super-block"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(d.calls().iter().all(|c| !c.starts_with("sfdisk")));
}
