//! The slot and boot-count state machine of OS updates, against disk image
//! files: a real GPT on a sparse file (made and read by sfdisk, as on a
//! node) and an ESP directory. `upgrade`, the health gate, `rollback` and
//! `status` run for real; what systemd does around them is simulated here,
//! step by step, as its documentation says it behaves:
//! - systemd-sysupdate (sysupdate.d(5)): writes the root image into the slot
//!   that is not the running version, labels it `hakube_V`, sets the PARTUUID
//!   from the file name's `@u`, installs kernel/initrd/entry (`+3`), and drops
//!   the version it replaced;
//! - systemd-boot: boots the newest entry with tries left (no default) and
//!   counts one try down; systemd-bless-boot: removes the counter, or sets
//!   tries left to 0.
//!
//! The VM test (builder/tests/vm_update.rs) runs the real ones.

use anyhow::Result;
use hakube_firstboot::health;
use hakube_firstboot::system::{Clock, Cmd, CommandRunner, Output, ProcessRunner};
use hakube_firstboot::update::{self, GateOutcome, Platform};
use hakube_os_layout::entry::boot_choice;
use hakube_os_layout::{self as layout, bundle, EntryName, ImageVersion};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECTOR: u64 = 512;
/// Slot size in the test disk: 4 MiB.
const SLOT_SECTORS: u64 = 8192;

fn v(s: &str) -> ImageVersion {
    s.parse().unwrap()
}

fn sh(cmd: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Node {
    dir: tempfile::TempDir,
    disk: PathBuf,
}

impl Node {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn esp(&self) -> PathBuf {
        self.root().join("efi")
    }
    fn entries(&self) -> Vec<EntryName> {
        update::slots::list_entries(&self.esp()).unwrap()
    }
    fn entry_names(&self) -> Vec<String> {
        self.entries().iter().map(|e| e.to_string()).collect()
    }
    fn efivar(&self, name: &str) -> PathBuf {
        self.root().join(format!(
            "sys/firmware/efi/efivars/{name}-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
        ))
    }

    /// systemd-boot: the newest entry with tries left, one try counted.
    fn boot(&self) -> EntryName {
        let entries = self.entries();
        let pick = boot_choice(&entries).expect("an entry to boot").clone();
        let counted = pick.after_try();
        let dir = self.esp().join(layout::ESP_ENTRIES_DIR);
        fs::rename(dir.join(pick.to_string()), dir.join(counted.to_string())).unwrap();
        let conf = fs::read_to_string(dir.join(counted.to_string())).unwrap();
        let options = conf
            .lines()
            .find_map(|l| l.strip_prefix("options "))
            .unwrap()
            .to_string();
        fs::write(self.root().join("proc/cmdline"), options + "\n").unwrap();
        let count = self.efivar("LoaderBootCountPath");
        if pick.counter.is_some() {
            fs::write(&count, format!("/loader/entries/{pick}")).unwrap();
        } else {
            let _ = fs::remove_file(&count);
        }
        counted
    }

    /// systemd-bless-boot good, after boot-complete.target.
    fn bless(&self) {
        if !self.efivar("LoaderBootCountPath").exists() {
            return;
        }
        let booted = self.booted_entry();
        self.rename(&booted, &booted.blessed());
    }

    fn booted_entry(&self) -> EntryName {
        let cmdline = fs::read_to_string(self.root().join("proc/cmdline")).unwrap();
        self.entries()
            .into_iter()
            .find(|e| {
                let conf = fs::read_to_string(
                    self.esp().join(layout::ESP_ENTRIES_DIR).join(e.to_string()),
                )
                .unwrap();
                conf.contains(cmdline.trim())
            })
            .expect("the booted entry")
    }

    fn rename(&self, from: &EntryName, to: &EntryName) {
        let dir = self.esp().join(layout::ESP_ENTRIES_DIR);
        fs::rename(dir.join(from.to_string()), dir.join(to.to_string())).unwrap();
    }

    fn gpt(&self) -> serde_json::Value {
        serde_json::from_str(&sh(&format!("sfdisk --json {}", self.disk.display()))).unwrap()
    }

    fn slot_bytes(&self, index: usize, len: usize) -> Vec<u8> {
        let g = self.gpt();
        let start = g["partitiontable"]["partitions"][index]["start"]
            .as_u64()
            .unwrap();
        let data = fs::read(&self.disk).unwrap();
        data[(start * SECTOR) as usize..(start * SECTOR) as usize + len].to_vec()
    }
}

/// A first install of `v1`: esp, root A (`hakube_v1`), root B (`_empty`), var.
fn first_install(v1: &ImageVersion) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    fs::File::create(&disk).unwrap().set_len(64 << 20).unwrap();
    let a = "0b9bd0c4-2b3e-4e8e-8d1a-3f3c1c2a0001";
    let script = format!(
        "label: gpt\nunit: sectors\n\
         start=2048, size=8192, type={}, name=esp\n\
         start=10240, size={SLOT_SECTORS}, type={}, uuid={a}, name={}\n\
         start=18432, size={SLOT_SECTORS}, type={}, name={}, attrs=GUID:63\n\
         start=26624, size=32768, type={}, name=var\n",
        layout::types::ESP,
        layout::types::ROOT_X86_64,
        layout::root_label(v1),
        layout::types::ROOT_X86_64,
        layout::EMPTY_SLOT_LABEL,
        layout::types::VAR,
    );
    let f = dir.path().join("gpt.sfdisk");
    fs::write(&f, script).unwrap();
    sh(&format!("sfdisk -q {} < {}", disk.display(), f.display()));
    let node = Node { dir, disk };
    let root = node.root();
    for d in [
        "efi/loader/entries",
        "efi/hakube",
        "proc",
        "sys/firmware/efi/efivars",
        "var",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(
        root.join("efi").join(layout::ESP_LOADER_CONF),
        layout::LOADER_CONF,
    )
    .unwrap();
    let uuid = uuid::Uuid::parse_str(a).unwrap();
    fs::write(
        root.join("efi")
            .join(layout::ESP_ENTRIES_DIR)
            .join(EntryName::new(v1.clone(), None).to_string()),
        layout::entry_conf(v1, "6.12.0-test", &uuid),
    )
    .unwrap();
    node
}

/// Writes a bundle of `version` in `dir` with a root image of `root_len` bytes.
fn make_bundle(dir: &Path, version: &ImageVersion, root_len: usize) -> PathBuf {
    let out = dir.join(version.as_str());
    fs::create_dir_all(&out).unwrap();
    let uuid = layout::update_root_uuid("test", version);
    let root: Vec<u8> = (0..root_len).map(|i| (i % 251) as u8).collect();
    let files = [
        (bundle::root(version, &uuid), root),
        (bundle::kernel(version), b"kernel".to_vec()),
        (bundle::initrd(version), b"initrd".to_vec()),
        (
            bundle::entry(version),
            layout::entry_conf(version, "6.12.0-test", &uuid).into_bytes(),
        ),
    ];
    let mut sums = String::new();
    for (name, data) in &files {
        fs::write(out.join(name), data).unwrap();
        sums.push_str(&format!("{}  {name}\n", hex::encode(Sha256::digest(data))));
    }
    fs::write(out.join(bundle::SHA256SUMS), sums).unwrap();
    out
}

/// systemd-sysupdate, systemd-bless-boot and systemctl as the node runs them;
/// sfdisk and lsblk for real.
struct Systemd<'a> {
    node: &'a Node,
    reboots: RefCell<u32>,
    calls: RefCell<Vec<String>>,
}

impl Systemd<'_> {
    fn sysupdate(&self, version: &str) -> Output {
        let n = self.node;
        let stage = n.root().join(layout::STAGE_DIR);
        let ver = v(version);
        let staged: Vec<String> = fs::read_dir(&stage)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let root_file = staged
            .iter()
            .find(|f| f.ends_with(".root.erofs"))
            .unwrap()
            .clone();
        let uuid = root_file
            .trim_end_matches(".root.erofs")
            .rsplit('_')
            .next()
            .unwrap()
            .to_string();
        // The running version (%A) is protected; the other slot is replaced.
        let cmdline = fs::read_to_string(n.root().join("proc/cmdline")).unwrap();
        let booted = layout::root_uuid_of_cmdline(&cmdline).unwrap().to_string();
        let g = n.gpt();
        let parts = g["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .clone();
        let (idx, slot) = parts
            .iter()
            .enumerate()
            .find(|(_, p)| {
                p["type"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case(&layout::types::ROOT_X86_64.to_string())
                    && !p["uuid"].as_str().unwrap().eq_ignore_ascii_case(&booted)
            })
            .unwrap();
        let replaced = layout::version_of_label(slot["name"].as_str().unwrap());
        let data = fs::read(stage.join(&root_file)).unwrap();
        let start = slot["start"].as_u64().unwrap();
        let mut disk = fs::OpenOptions::new().write(true).open(&n.disk).unwrap();
        use std::io::{Seek, SeekFrom, Write};
        disk.seek(SeekFrom::Start(start * SECTOR)).unwrap();
        disk.write_all(&data).unwrap();
        drop(disk);
        let partno = idx + 1;
        sh(&format!(
            "sfdisk -q --part-uuid {} {partno} {uuid}",
            n.disk.display()
        ));
        sh(&format!(
            "sfdisk -q --part-label {} {partno} {}",
            n.disk.display(),
            layout::root_label(&ver)
        ));
        let esp = n.esp();
        if let Some(old) = replaced {
            let _ = fs::remove_file(esp.join(layout::esp_kernel(&old)));
            let _ = fs::remove_file(esp.join(layout::esp_initrd(&old)));
            for e in n.entries().iter().filter(|e| e.version == old) {
                fs::remove_file(esp.join(layout::ESP_ENTRIES_DIR).join(e.to_string())).unwrap();
            }
        }
        fs::copy(
            stage.join(bundle::kernel(&ver)),
            esp.join(layout::esp_kernel(&ver)),
        )
        .unwrap();
        fs::copy(
            stage.join(bundle::initrd(&ver)),
            esp.join(layout::esp_initrd(&ver)),
        )
        .unwrap();
        let counted = EntryName::new(
            ver.clone(),
            Some(layout::BootCounter {
                left: layout::TRIES,
                done: 0,
            }),
        );
        fs::copy(
            stage.join(bundle::entry(&ver)),
            esp.join(layout::ESP_ENTRIES_DIR).join(counted.to_string()),
        )
        .unwrap();
        Output::ok("")
    }
}

impl CommandRunner for Systemd<'_> {
    fn run(&self, cmd: &Cmd) -> Result<Output> {
        self.calls.borrow_mut().push(cmd.line());
        match cmd.program.as_str() {
            "sfdisk" | "lsblk" => ProcessRunner.run(cmd),
            "/usr/lib/systemd/systemd-sysupdate" => {
                assert_eq!(cmd.args[0], "update");
                Ok(self.sysupdate(&cmd.args[1]))
            }
            "/usr/lib/systemd/systemd-bless-boot" => {
                assert_eq!(cmd.args, ["bad"]);
                let booted = self.node.booted_entry();
                self.node.rename(&booted, &booted.marked_bad());
                Ok(Output::ok(""))
            }
            "systemctl" => {
                assert_eq!(cmd.args, ["--no-block", "reboot"]);
                *self.reboots.borrow_mut() += 1;
                Ok(Output::ok(""))
            }
            other => panic!("unexpected command {other}"),
        }
    }
}

struct Clk;
impl Clock for Clk {
    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }
    fn sleep(&self, _: Duration) {}
}

fn platform<'a>(n: &Node, sd: &'a Systemd) -> Platform<'a> {
    Platform {
        root: n.root(),
        disk: Some(n.disk.clone()),
        cmd: sd,
        clock: &Clk,
    }
}

/// One slot as the tests compare it: partition, version, booted,
/// assessment, tries left, next boot.
type SlotRow = (String, Option<String>, bool, String, Option<u32>, bool);

fn slot_summary(p: &Platform) -> Vec<SlotRow> {
    update::os_status(p)
        .unwrap()
        .slots
        .slots
        .iter()
        .map(|s| {
            (
                s.partition.clone(),
                s.version.clone(),
                s.booted,
                s.assessment.clone(),
                s.tries_left,
                s.next_boot,
            )
        })
        .collect()
}

fn some(s: &str) -> Option<String> {
    Some(s.to_string())
}

#[test]
fn update_fallback_and_rollback_move_between_the_two_slots() {
    let (v1, v2, v3, v4) = (
        v("20261201.000000"),
        v("20261202.000000"),
        v("20261203.000000"),
        v("20261204.000000"),
    );
    let node = first_install(&v1);
    let bundles = node.dir.path().join("bundles");
    let sd = Systemd {
        node: &node,
        reboots: RefCell::new(0),
        calls: RefCell::new(vec![]),
    };
    let p = platform(&node, &sd);

    // First boot: the uncounted entry, nothing to assess.
    assert_eq!(node.boot().to_string(), "hakube_20261201.000000.conf");
    assert_eq!(
        update::gate(
            &p,
            Duration::ZERO,
            Duration::ZERO,
            false,
            &|| anyhow::bail!("not asked")
        )
        .unwrap(),
        GateOutcome::NotCounted
    );
    assert_eq!(
        slot_summary(&p),
        [
            (
                "root-a".into(),
                some("20261201.000000"),
                true,
                "good".into(),
                None,
                true
            ),
            ("root-b".into(), None, false, "none".into(), None, false),
        ]
    );

    // Upgrade to v2: slot B written, entry counted with 3 tries, next boot.
    let b2 = make_bundle(&bundles, &v2, 1 << 20);
    let msg = update::upgrade(&p, b2.to_str().unwrap(), true).unwrap();
    assert!(msg.contains("installed in root-b"), "{msg}");
    assert_eq!(*sd.reboots.borrow(), 0, "--no-reboot");
    assert!(
        !node.root().join(layout::STAGE_DIR).exists(),
        "stage cleared"
    );
    assert_eq!(
        node.slot_bytes(2, 1 << 20),
        fs::read(b2.join(bundle::root(&v2, &layout::update_root_uuid("test", &v2)))).unwrap()
    );
    assert_eq!(
        slot_summary(&p)[1],
        (
            "root-b".into(),
            some("20261202.000000"),
            false,
            "indeterminate".into(),
            Some(3),
            true
        )
    );

    // The same version again, or an older one, is refused.
    let again = update::upgrade(&p, b2.to_str().unwrap(), true).unwrap_err();
    assert_eq!(hakube_firstboot::exit_code(&again), 2, "{again:#}");
    assert!(
        format!("{again:#}").contains("already in slot root-b"),
        "{again:#}"
    );

    // Boot v2: counted; healthy within the deadline; blessed.
    assert_eq!(node.boot().to_string(), "hakube_20261202.000000+2-1.conf");
    let tries = std::cell::Cell::new(0);
    let out = update::gate(&p, Duration::from_secs(60), Duration::ZERO, false, &|| {
        tries.set(tries.get() + 1);
        if tries.get() < 3 {
            anyhow::bail!("etcd not yet")
        }
        Ok("etcd member healthy".into())
    })
    .unwrap();
    assert_eq!(out, GateOutcome::Healthy("etcd member healthy".into()));
    node.bless();
    assert_eq!(
        slot_summary(&p),
        [
            (
                "root-a".into(),
                some("20261201.000000"),
                false,
                "good".into(),
                None,
                false
            ),
            (
                "root-b".into(),
                some("20261202.000000"),
                true,
                "good".into(),
                None,
                true
            ),
        ]
    );

    // A bundle whose file does not match SHA256SUMS, and one too big for
    // the slot, are refused before anything is written.
    let before = (node.gpt(), node.entry_names());
    let b3 = make_bundle(&bundles, &v3, 1 << 20);
    let root3 = b3.join(bundle::root(&v3, &layout::update_root_uuid("test", &v3)));
    let mut data = fs::read(&root3).unwrap();
    data[4096] ^= 1;
    fs::write(&root3, &data).unwrap();
    let e = update::upgrade(&p, b3.to_str().unwrap(), true).unwrap_err();
    assert!(format!("{e:#}").contains("SHA256SUMS says"), "{e:#}");
    let big = make_bundle(
        &bundles.join("big"),
        &v3,
        (SLOT_SECTORS * SECTOR) as usize + 1,
    );
    let e = update::upgrade(&p, big.to_str().unwrap(), true).unwrap_err();
    assert!(
        format!("{e:#}").contains("larger than the root slot"),
        "{e:#}"
    );
    assert_eq!((node.gpt(), node.entry_names()), before);
    assert!(!sd
        .calls
        .borrow()
        .iter()
        .any(|c| c.contains("systemd-sysupdate update 20261203")));
    assert!(!node.root().join(layout::STAGE_DIR).exists());

    // v3 (good bytes) goes into slot A, replacing v1; its health fails: the
    // gate marks it bad and reboots; systemd-boot comes back on v2.
    let b3 = make_bundle(&bundles.join("ok"), &v3, 1 << 20);
    update::upgrade(&p, b3.to_str().unwrap(), false).unwrap();
    assert_eq!(*sd.reboots.borrow(), 1);
    assert_eq!(
        node.entry_names(),
        [
            "hakube_20261202.000000.conf",
            "hakube_20261203.000000+3.conf"
        ]
    );
    assert!(
        !node.esp().join(layout::esp_kernel(&v1)).exists(),
        "v1 dropped"
    );
    assert_eq!(node.boot().to_string(), "hakube_20261203.000000+2-1.conf");
    // The kubelet crash-loops: a definite failure, judged at once rather
    // than after the hour of deadline (a second check would be a wait).
    let asked = std::cell::Cell::new(0);
    let out = update::gate(
        &p,
        Duration::from_secs(3600),
        Duration::ZERO,
        false,
        &|| {
            asked.set(asked.get() + 1);
            assert_eq!(
                asked.get(),
                1,
                "the gate waited on after a definite failure"
            );
            Err(anyhow::Error::new(health::Definite(
                "kubelet.service is not active and systemd restarted it 6 times on this boot"
                    .into(),
            ))
            .context("checking the node"))
        },
    )
    .unwrap();
    assert!(
        matches!(out, GateOutcome::MarkedBad(ref w)
            if w.contains("kubelet.service is not active") && w.contains("which waiting cannot mend")),
        "{out:?}"
    );
    assert_eq!(*sd.reboots.borrow(), 2);
    assert_eq!(
        node.boot().to_string(),
        "hakube_20261202.000000.conf",
        "fallback"
    );
    let st = update::os_status(&p).unwrap();
    assert_eq!(
        slot_summary(&p),
        [
            (
                "root-a".into(),
                some("20261203.000000"),
                false,
                "bad".into(),
                Some(0),
                false
            ),
            (
                "root-b".into(),
                some("20261202.000000"),
                true,
                "good".into(),
                None,
                true
            ),
        ]
    );
    let last = st.last_result.unwrap();
    assert_eq!(
        (last.action.as_str(), last.version.as_str()),
        ("health", "20261203.000000")
    );
    assert!(last.result.contains("marked bad"), "{last:?}");
    let text = update::os_status_text(&update::os_status(&p).unwrap());
    assert!(
        text.contains("root-a   20261203.000000  no      bad"),
        "{text}"
    );

    // Nothing good to roll back to: the other slot is the bad v3.
    let e = update::rollback(&p, true).unwrap_err();
    assert_eq!(hakube_firstboot::exit_code(&e), 2);
    assert!(format!("{e:#}").contains("its boot entry is bad"), "{e:#}");

    // v4 replaces the bad v3; blessed; then `rollback` goes back to v2 on
    // purpose, and stays there.
    let b4 = make_bundle(&bundles, &v4, 1 << 20);
    update::upgrade(&p, b4.to_str().unwrap(), true).unwrap();
    assert_eq!(node.boot().to_string(), "hakube_20261204.000000+2-1.conf");
    node.bless();
    let msg = update::rollback(&p, false).unwrap();
    assert!(msg.contains("20261202.000000 (root-b) boots next"), "{msg}");
    assert_eq!(node.boot().to_string(), "hakube_20261202.000000.conf");
    assert_eq!(
        node.boot().to_string(),
        "hakube_20261202.000000.conf",
        "and stays"
    );
    let s = slot_summary(&p);
    assert_eq!(s[0].1, some("20261204.000000"));
    assert_eq!(s[0].3, "bad");
    assert!(s[1].2 && s[1].5);
}
