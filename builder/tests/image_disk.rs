//! The disk pipeline (var partition, ESP, GPT, qcow2, libvirt XML) on a small
//! stand-in OS root made here, read back with sfdisk, debugfs and mtools.
//! Needs e2fsprogs, dosfstools, mtools, erofs-utils, qemu-utils, fdisk.

use hakube_build::image::{self, disk, gpt, osroot::OsRoot, tools::HostRunner};
use hakube_build::private::ImageAccess;
use hakube_build::tree::FileTree;
use hakube_build::ui::Steps;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const EPOCH: i64 = 1_700_000_000;

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tiny OS root: an erofs of a few files, a /var seed, stand-in boot files.
fn stand_in_os(dir: &Path) -> OsRoot {
    let root = dir.join("rootsrc");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("var")).unwrap();
    fs::write(root.join("usr/bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
    let os = dir.join("os");
    fs::create_dir_all(&os).unwrap();
    sh(&format!(
        "mkfs.erofs --quiet -zlz4hc -T{EPOCH} --ignore-mtime -U6d2f9e1a-0000-4000-8000-000000000001 {}/root.erofs {}",
        os.display(),
        root.display()
    ));
    let var = dir.join("varsrc");
    fs::create_dir_all(var.join("lib/dpkg")).unwrap();
    fs::create_dir_all(var.join("log")).unwrap();
    fs::write(var.join("lib/dpkg/status"), "Package: base\n").unwrap();
    sh(&format!(
        "tar -cf {}/var.tar --sort=name --numeric-owner -C {} .",
        os.display(),
        var.display()
    ));
    fs::write(os.join("vmlinuz"), vec![0x4b; 3 << 20]).unwrap();
    fs::write(os.join("initrd.img"), vec![0x17; 2 << 20]).unwrap();
    fs::write(os.join("systemd-bootx64.efi"), b"MZ stand-in systemd-boot").unwrap();
    OsRoot::from_dir(&os, "6.12.0-test-amd64", EPOCH).unwrap()
}

fn node_tree() -> FileTree {
    let mut t = FileTree::new();
    t.add_public("etc/hostname", "worker-1\n");
    t.add_secret("etc/kubernetes/pki/ca.crt", "CERT");
    t.add_public("var/lib/hakube/marker", "from the node tree");
    t.enable_unit("hakube-firstboot.service", "multi-user.target", false);
    t
}

fn build(os: &OsRoot, tree: &FileTree, node: &str, out: &Path) -> image::BuiltImage {
    build_for(os, tree, node, out, ImageAccess::Owner)
}

fn build_for(
    os: &OsRoot,
    tree: &FileTree,
    node: &str,
    out: &Path,
    access: ImageAccess,
) -> image::BuiltImage {
    let cluster = hakube_build::spec::load(None).unwrap();
    let node = cluster.node(node).unwrap().clone();
    fs::create_dir_all(out).unwrap();
    image::assemble_node(
        &HostRunner,
        &mut Steps::new(true),
        cluster.name.as_str(),
        &node,
        os,
        tree,
        &hakube_build::images::NodeLayout {
            needed: &[],
            pulled: Vec::new(),
            lock: &hakube_build::artifacts::lock::Lock::default(),
            store: None,
        },
        out,
        access,
    )
    .unwrap()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn raw_of(qcow2: &Path, dir: &Path) -> PathBuf {
    let raw = dir.join("back.raw");
    sh(&format!(
        "qemu-img convert -f qcow2 -O raw {} {}",
        qcow2.display(),
        raw.display()
    ));
    raw
}

fn extract(raw: &Path, start: u64, sectors: u64, to: &Path) {
    sh(&format!(
        "dd if={} of={} bs=512 skip={start} count={sectors} status=none conv=sparse",
        raw.display(),
        to.display()
    ));
}

#[test]
fn node_disk_has_the_documented_layout_and_contents() {
    let dir = tempfile::tempdir().unwrap();
    let os = stand_in_os(dir.path());
    let out = dir.path().join("out");
    let img = build(&os, &node_tree(), "worker-1", &out);
    assert_eq!(img.qcow2, out.join("worker-1.qcow2"));
    assert!(img.size > 0 && img.sha256.len() == 64);
    // Nothing but the final files is left in the output directory.
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["worker-1.qcow2", "worker-1.xml"]);
    // The image holds the node's keys: owner only. The XML holds none.
    assert_eq!(mode(&img.qcow2), 0o600);
    assert_eq!(mode(&img.xml), 0o644);

    let info = sh(&format!(
        "qemu-img info --output=json {}",
        img.qcow2.display()
    ));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 20u64 << 30);

    let raw = raw_of(&img.qcow2, dir.path());
    let table: serde_json::Value =
        serde_json::from_str(&sh(&format!("sfdisk --json {}", raw.display()))).unwrap();
    let pt = &table["partitiontable"];
    assert_eq!(pt["label"], "gpt");
    let parts = pt["partitions"].as_array().unwrap();
    let field = |i: usize, k: &str| parts[i][k].as_str().unwrap_or("").to_string();
    let names: Vec<String> = (0..parts.len()).map(|i| field(i, "name")).collect();
    // Slot A is labelled with the image version (the build time), slot B
    // empty: the labels systemd-sysupdate matches.
    assert_eq!(names, ["esp", "hakube_20231114.221320", "_empty", "var"]);
    assert_eq!(field(0, "type"), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(field(1, "type"), "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    assert_eq!(field(2, "type"), "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    assert_eq!(field(3, "type"), "4D21B016-B534-45C2-A9FB-5C16E091FD2D");
    assert_eq!(parts[1]["size"], parts[2]["size"]);
    assert!(field(2, "attrs").contains("GUID:63"), "{:?}", parts[2]);
    assert!(!field(1, "attrs").contains("GUID:63"));
    // sfdisk found no problem with the backup header or CRCs.
    let verify = Command::new("sfdisk")
        .arg("--verify")
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let gpt = disk::plan(
        "hakube",
        "worker-1",
        &disk::Layout::default(),
        &os.image_version().unwrap(),
    );
    assert_eq!(
        pt["id"].as_str().unwrap().to_lowercase(),
        gpt.disk_guid.to_string()
    );
    let sect = |i: usize, k: &str| parts[i][k].as_u64().unwrap();

    // root-a holds the erofs image (superblock magic at 1024).
    let root = dir.path().join("root.img");
    extract(&raw, sect(1, "start"), 8, &root);
    let sb = fs::read(&root).unwrap();
    assert_eq!(&sb[1024..1028], &0xE0F5_E1E2u32.to_le_bytes());
    // root-b is empty.
    let rootb = dir.path().join("rootb.img");
    extract(&raw, sect(2, "start"), 2048, &rootb);
    assert!(fs::read(&rootb).unwrap().iter().all(|b| *b == 0));

    // var: the OS root's /var plus the node tree (etc/ in the overlay upper).
    let var = dir.path().join("var.img");
    extract(&raw, sect(3, "start"), sect(3, "size"), &var);
    let cat = |p: &str| {
        sh(&format!(
            "debugfs -R 'cat {p}' {} 2>/dev/null",
            var.display()
        ))
    };
    assert_eq!(cat("/lib/dpkg/status"), "Package: base\n");
    assert_eq!(cat("/lib/hakube/overlay/etc/upper/hostname"), "worker-1\n");
    assert_eq!(cat("/lib/hakube/marker"), "from the node tree");
    let stat = sh(&format!(
        "debugfs -R 'stat /lib/hakube/overlay/etc/upper/kubernetes/pki/ca.crt' {} 2>/dev/null",
        var.display()
    ));
    assert!(stat.contains("Mode:  0600"), "{stat}");
    assert!(stat.contains("ctime: 0x6553f100"), "{stat}");
    let link = sh(&format!(
        "debugfs -R 'stat /lib/hakube/overlay/etc/upper/systemd/system/multi-user.target.wants/hakube-firstboot.service' {} 2>/dev/null",
        var.display()
    ));
    assert!(link.contains("Type: symlink"), "{link}");
    assert!(
        link.contains("/etc/systemd/system/hakube-firstboot.service"),
        "{link}"
    );
    let ls = sh(&format!(
        "debugfs -R 'ls -p /lib/hakube/overlay' {} 2>/dev/null",
        var.display()
    ));
    for d in ["etc", "cni-bin"] {
        assert!(ls.contains(&format!("/{d}/")), "{ls}");
    }
    sh(&format!("e2fsck -fn {}", var.display()));
    let label = sh(&format!("blkid -o value -s LABEL {}", var.display()));
    assert_eq!(label.trim(), "var");

    // ESP: systemd-boot, loader.conf, the counted entry, kernel and initrd.
    let esp = dir.path().join("esp.img");
    extract(&raw, sect(0, "start"), sect(0, "size"), &esp);
    let mtype = |p: &str| sh(&format!("mtype -i {} ::/{p}", esp.display()));
    assert_eq!(mtype("EFI/BOOT/BOOTX64.EFI"), "MZ stand-in systemd-boot");
    assert_eq!(
        mtype("EFI/systemd/systemd-bootx64.efi"),
        "MZ stand-in systemd-boot"
    );
    // The first install's entry has no counter (nothing to fall back to) and
    // names slot A by PARTUUID (systemd#32653).
    let ls = sh(&format!("mdir -b -i {} ::/loader/entries", esp.display()));
    assert_eq!(
        ls.trim(),
        "::/loader/entries/hakube_20231114.221320.conf",
        "{ls}"
    );
    let entry = mtype("loader/entries/hakube_20231114.221320.conf");
    assert!(
        entry.contains("linux /hakube/hakube_20231114.221320.vmlinuz"),
        "{entry}"
    );
    assert!(
        entry.contains("initrd /hakube/hakube_20231114.221320.initrd"),
        "{entry}"
    );
    let root_a = field(1, "uuid").to_lowercase();
    assert!(
        entry.contains(&format!(
            "options root=PARTUUID={root_a} rootfstype=erofs ro console=tty0 console=ttyS0,115200"
        )),
        "{entry}"
    );
    assert!(entry.contains("version 20231114.221320\n"), "{entry}");
    assert!(entry.contains("(Linux 6.12.0-test-amd64)"), "{entry}");
    // No default: it would win over boot counting (systemd#31215).
    let loader = mtype("loader/loader.conf");
    assert!(
        !loader.lines().any(|l| l.starts_with("default")),
        "{loader}"
    );
    let kernel = dir.path().join("k");
    sh(&format!(
        "mcopy -n -i {} ::/hakube/hakube_20231114.221320.vmlinuz {}",
        esp.display(),
        kernel.display()
    ));
    assert_eq!(fs::read(&kernel).unwrap(), vec![0x4b; 3 << 20]);
    sh(&format!("fsck.vfat -n {}", esp.display()));

    // The libvirt domain validates against libvirt's schema.
    let xml = fs::read_to_string(&img.xml).unwrap();
    assert!(xml.contains("<os firmware='efi'>"));
    assert!(xml.contains("machine='q35'"));
    assert!(xml.contains("<mac address='"));
    assert!(xml.contains(&format!("<source file='{}'/>", img.qcow2.display())));
    // libvirt's DAC driver relabels the 0600 image for the domain's qemu.
    assert!(xml.contains("<seclabel type='dynamic' model='dac' relabel='yes'/>"));
    assert!(xml.contains("org.qemu.guest_agent.0"));
    let v = Command::new("virt-xml-validate")
        .arg(&img.xml)
        .arg("domain")
        .output()
        .expect("virt-xml-validate (Debian package libvirt-clients)");
    assert!(
        v.status.success(),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
}

#[test]
fn image_group_gives_0640_and_the_group_and_no_build_file_is_ever_readable_by_others() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let os = stand_in_os(dir.path());
    let out = dir.path().join("out");
    fs::create_dir_all(&out).unwrap();
    // Watch the output directory while the build runs: every entry that
    // appears (work directory, files renamed in) must never be readable by
    // others while it holds anything secret.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (out, stop) = (out.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeMap::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for e in fs::read_dir(&out).unwrap().flatten() {
                    if let Ok(m) = e.metadata() {
                        let n = e.file_name().to_string_lossy().into_owned();
                        seen.entry(n)
                            .or_insert_with(Vec::new)
                            .push(m.mode() & 0o777);
                    }
                }
            }
            seen
        })
    };
    // `nogroup` exists on every Debian system; root may give files to it.
    let gid = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .unwrap()
        .gid;
    let img = build_for(&os, &node_tree(), "worker-1", &out, ImageAccess::Group(gid));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    assert_eq!(mode(&img.qcow2), 0o640);
    assert_eq!(fs::metadata(&img.qcow2).unwrap().gid(), gid.as_raw());
    for (name, modes) in &seen {
        let expect: &[u32] = if name.ends_with(".xml") {
            &[0o644]
        } else if name.ends_with(".qcow2") {
            &[0o640]
        } else {
            assert!(name.starts_with(".worker-1.work-"), "unexpected {name}");
            &[0o700]
        };
        assert!(
            modes.iter().all(|m| expect.contains(m)),
            "{name} was seen with modes {:?}",
            modes.iter().map(|m| format!("{m:o}")).collect::<Vec<_>>()
        );
    }
    assert!(
        seen.keys().any(|n| n.starts_with(".worker-1.work-")),
        "{seen:?}"
    );
}

#[test]
fn same_inputs_give_bit_identical_qcow2() {
    let dir = tempfile::tempdir().unwrap();
    let os = stand_in_os(dir.path());
    let a = build(&os, &node_tree(), "worker-1", &dir.path().join("a"));
    // Different directory, later wall-clock time: the same bytes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = build(&os, &node_tree(), "worker-1", &dir.path().join("b"));
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(
        hakube_build::image::fsutil::sha256_file(&a.qcow2).unwrap(),
        a.sha256
    );
    // A different node tree changes the image.
    let mut other = node_tree();
    other.add_public("etc/hostname", "worker-x\n");
    let c = build(&os, &other, "worker-1", &dir.path().join("c"));
    assert_ne!(a.sha256, c.sha256);
}

#[test]
fn gpt_writer_round_trips_through_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.raw");
    let g = gpt::Gpt {
        disk_guid: disk::seeded_uuid("c", "n", "disk"),
        disk_sectors: 64 * 2048,
        partitions: vec![
            gpt::Partition {
                name: "alpha".into(),
                type_guid: gpt::types::ESP,
                guid: disk::seeded_uuid("c", "n", "a"),
                first_lba: 2048,
                last_lba: 4095,
                attributes: 0,
            },
            gpt::Partition {
                name: "beta-ü".into(),
                type_guid: gpt::types::VAR,
                guid: disk::seeded_uuid("c", "n", "b"),
                first_lba: 4096,
                last_lba: 64 * 2048 - 34,
                attributes: gpt::ATTR_NO_AUTO,
            },
        ],
    };
    let f = fs::File::create(&path).unwrap();
    f.set_len(64 << 20).unwrap();
    g.write_to(&f).unwrap();
    drop(f);
    let j: serde_json::Value =
        serde_json::from_str(&sh(&format!("sfdisk --json {}", path.display()))).unwrap();
    let p = &j["partitiontable"]["partitions"];
    assert_eq!(p[0]["name"], "alpha");
    assert_eq!(p[0]["start"], 2048);
    assert_eq!(p[0]["size"], 2048);
    assert_eq!(
        p[0]["uuid"].as_str().unwrap().to_lowercase(),
        disk::seeded_uuid("c", "n", "a").to_string()
    );
    assert_eq!(p[1]["name"], "beta-ü");
    assert_eq!(p[1]["size"], 64 * 2048 - 34 - 4096 + 1);
    assert!(p[1]["attrs"].as_str().unwrap().contains("GUID:63"));
    assert_eq!(j["partitiontable"]["lastlba"], 64 * 2048 - 34);
    let verify = Command::new("sfdisk")
        .arg("--verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // Overlapping partitions are refused.
    let mut bad = g.clone();
    bad.partitions[1].first_lba = 4000;
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    assert!(bad.write_to(&f).is_err());
}
