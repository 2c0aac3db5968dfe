//! OS update VM test: builds etcd-1 of tests/fixtures/update/etcd-single.yaml
//! (the only member of an external etcd cluster: its role health is the real
//! etcd's, with no other VM), plus two more builds of the same cluster as
//! update bundles: a good one (a later build) and a bad one (built from a
//! copy of the test mirror whose etcd exits at once). Boots the node under
//! QEMU/OVMF in its own network namespace and, through the guest agent:
//! 1. first boot: slot A, uncounted, etcd formed, health passes;
//! 2. `hakube-firstboot upgrade <good>`: slot B written by systemd-sysupdate,
//!    reboot, the counted entry passes the health gate and is blessed: new
//!    version reported, the /var marker intact;
//! 3. `hakube-firstboot upgrade <bad>`: into slot A, reboot; etcd cannot
//!    start, the gate marks the boot bad after the profile's deadline and
//!    reboots; systemd-boot comes back on slot B by itself, /var intact,
//!    `status` reporting the bad slot and the health result.
//!
//! Needs root.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::firstboot::firstboot_bin;
use support::vm::{run, Accel, Agent, Netns, Vm};

const BOOT_LIMIT: Duration = Duration::from_secs(300);
const EPOCH: i64 = 1_764_000_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/update/etcd-single.yaml")
}

/// One `hakube-build` of etcd-1 at `epoch` (the build time names the version).
fn build(d: &Path, mirror: &Path, tag: &str, epoch: i64) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hakube-build"))
        .args(["--profile", "etcd", "--node", "etcd-1", "--json"])
        .arg("--cluster")
        .arg(spec())
        .arg("--artifacts")
        .arg(mirror)
        .arg("--cache-dir")
        .arg(d.join("cache"))
        .arg("--state")
        .arg(d.join("state"))
        .arg("--out")
        .arg(d.join(format!("out-{tag}")))
        .arg("--lock")
        .arg(d.join(format!("{tag}.lock")))
        .arg("--firstboot-bin")
        .arg(firstboot_bin())
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hakube-build ({tag}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A copy of the mirror (hard links) whose etcd release tarball holds an
/// etcd that exits 1 at once, with its SHA256SUMS updated: what a bad etcd
/// build would look like to hakube-build.
fn broken_etcd_mirror(mirror: &Path, dest: &Path) -> PathBuf {
    let _ = fs::remove_dir_all(dest);
    run(Command::new("cp").arg("-al").arg(mirror).arg(dest));
    let found = run(Command::new("find").arg(dest).args([
        "-path",
        "*etcd-io/etcd/releases/download/*",
        "-name",
        "etcd-v*-linux-amd64.tar.gz",
    ]));
    let tarball = PathBuf::from(found.lines().next().unwrap_or_else(|| {
        panic!(
            "no etcd release tarball in {} (tests/make-mirror layout)",
            mirror.display()
        )
    }));
    let name = tarball.file_name().unwrap().to_string_lossy().into_owned();
    let top = name.trim_end_matches(".tar.gz").to_string();
    let work = dest.join(".broken-etcd");
    fs::create_dir_all(&work).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&work));
    let etcd = work.join(&top).join("etcd");
    fs::remove_file(&etcd).unwrap();
    fs::write(
        &etcd,
        "#!/bin/sh\necho 'etcd: broken build (vm_update test)' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&etcd, fs::Permissions::from_mode(0o755)).unwrap();
    let new = work.join(&name);
    run(Command::new("tar")
        .args(["--sort=name", "--owner=0", "--group=0", "-czf"])
        .arg(&new)
        .arg("-C")
        .arg(&work)
        .arg(&top));
    // Replace by rename: the hard link into the real mirror is left alone.
    fs::rename(&new, &tarball).unwrap();
    let hex = run(Command::new("sha256sum").arg(&tarball));
    let hex = hex.split_whitespace().next().unwrap();
    let dir = tarball.parent().unwrap();
    for sums in ["SHA256SUMS".to_string(), format!("{name}.sha256")] {
        let p = dir.join(&sums);
        if let Ok(text) = fs::read_to_string(&p) {
            let text: String = text
                .lines()
                .map(|l| {
                    if l.ends_with(&name) {
                        format!("{hex}  {name}\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            fs::remove_file(&p).unwrap();
            fs::write(&p, text).unwrap();
        }
    }
    fs::remove_dir_all(&work).unwrap();
    dest.to_path_buf()
}

fn sh(agent: &mut Agent, vm: &Vm, what: &str, cmd: &str) -> String {
    match agent.sh(cmd) {
        Ok((0, out)) => out,
        Ok((code, out)) => panic!(
            "{what}: `{cmd}` exited {code}: {out}\n{}",
            vm.serial_tail(80)
        ),
        Err(e) => panic!("{what}: {e}\n{}", vm.serial_tail(80)),
    }
}

fn status(agent: &mut Agent, vm: &Vm) -> serde_json::Value {
    let text = sh(agent, vm, "status", "hakube-firstboot status --json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status --json: {e}: {text}"))
}

fn boot_id(agent: &mut Agent) -> String {
    agent
        .sh("cat /proc/sys/kernel/random/boot_id")
        .map(|r| r.1.trim().to_string())
        .unwrap_or_default()
}

/// Waits for a boot other than `previous`; returns its agent and boot id.
fn next_boot(vm: &mut Vm, previous: &str, limit: Duration) -> (Agent, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(mut a) = vm.wait_agent(Duration::from_secs(30)) {
            let id = boot_id(&mut a);
            if !id.is_empty() && id != previous {
                return (a, id);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new boot within {limit:?}\n{}",
            vm.serial_tail(80)
        );
        std::thread::sleep(Duration::from_secs(5));
    }
}

fn wait_for(agent: &mut Agent, vm: &Vm, what: &str, cmd: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let (code, out) = agent.sh(cmd).unwrap_or((-1, String::new()));
        if code == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: `{cmd}` did not succeed within {limit:?}: {out}\n{}",
            vm.serial_tail(80)
        );
        std::thread::sleep(Duration::from_secs(5));
    }
}

fn image_version(agent: &mut Agent, vm: &Vm) -> String {
    sh(
        agent,
        vm,
        "os-release",
        ". /usr/lib/os-release; echo $IMAGE_VERSION",
    )
    .trim()
    .to_string()
}

fn slot<'a>(st: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    st["os"]["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("status has no os.slots: {st}"))
        .iter()
        .find(|s| s["partition"] == name)
        .unwrap_or_else(|| panic!("no slot {name}: {st}"))
}

#[test]
fn upgrade_to_a_good_update_then_a_bad_one_falls_back_by_itself() {
    assert!(nix::unistd::geteuid().is_root(), "the VM test needs root");
    let dir = tempfile::Builder::new()
        .prefix("hakube-vmupd-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    let mirror = std::env::var_os("HAKUBE_TEST_MIRROR")
        .map(PathBuf::from)
        .unwrap_or_else(|| d.join("mirror"));
    run(Command::new(repo().join("tests/make-mirror")).arg(&mirror));

    let t = Instant::now();
    let first = build(d, &mirror, "v1", EPOCH);
    let good = build(d, &mirror, "v2", EPOCH + 3600);
    let bad_mirror = broken_etcd_mirror(&mirror, &d.join("mirror-broken-etcd"));
    let bad = build(d, &bad_mirror, "v3", EPOCH + 7200);
    eprintln!("vm_update: three builds in {:?}", t.elapsed());
    let ver = |b: &serde_json::Value| b["version"].as_str().unwrap().to_string();
    let (v1, v2, v3) = (ver(&first), ver(&good), ver(&bad));
    assert!(v1 < v2 && v2 < v3, "{v1} {v2} {v3}");

    // The bundles reach the node on a read-only disk (no network needed).
    let bundles = d.join("bundles");
    fs::create_dir_all(&bundles).unwrap();
    for (b, name) in [(&good, "good"), (&bad, "bad")] {
        run(Command::new("cp")
            .arg("-al")
            .arg(b["update"].as_str().unwrap())
            .arg(bundles.join(name)));
    }
    let size = run(Command::new("du").args(["-sb"]).arg(&bundles));
    let size: u64 = size.split_whitespace().next().unwrap().parse().unwrap();
    let bundle_disk = d.join("bundles.ext4");
    fs::File::create(&bundle_disk)
        .unwrap()
        .set_len(size + size / 4 + (64 << 20))
        .unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&bundles)
        .arg(&bundle_disk));

    let qcow2 = PathBuf::from(first["images"][0]["qcow2"].as_str().unwrap());
    let cluster = hakube_build::spec::load(Some(&spec())).unwrap();
    let mac = cluster.node("etcd-1").unwrap().mac.to_string();
    let ns = Netns::create(
        &format!("hk-pos-upd-{}", std::process::id()),
        &["tap0"],
        None,
    );
    let mut vm = Vm::start_with(&ns, Accel::Tcg, &qcow2, &mac, d, "upd", &[&bundle_disk]);

    // 1. First boot: slot A, not counted; etcd formed; healthy.
    let mut agent = vm
        .wait_agent(BOOT_LIMIT)
        .unwrap_or_else(|e| panic!("first boot: {e}\n{}", vm.serial_tail(80)));
    let mut id = boot_id(&mut agent);
    wait_for(
        &mut agent,
        &vm,
        "etcd formed",
        "hakube-firstboot health",
        BOOT_LIMIT,
    );
    assert_eq!(image_version(&mut agent, &vm), v1);
    let st = status(&mut agent, &vm);
    let a = slot(&st, "root-a");
    assert_eq!(
        (a["version"].as_str(), a["booted"].as_bool()),
        (Some(v1.as_str()), Some(true)),
        "{st}"
    );
    assert_eq!(a["assessment"], "good", "first install: no counter\n{st}");
    assert!(slot(&st, "root-b")["version"].is_null(), "{st}");
    assert_eq!(st["os"]["bootCounted"], false, "{st}");
    sh(
        &mut agent,
        &vm,
        "marker",
        "echo kept-across-slots > /var/lib/hakube-update-marker && sync",
    );

    // 2. The good update: written to slot B, boots counted, blessed.
    sh(
        &mut agent,
        &vm,
        "mount bundles",
        "mkdir -p /run/bundles && mount -o ro /dev/vdb /run/bundles",
    );
    let out = agent.sh("hakube-firstboot upgrade /run/bundles/good");
    if let Ok((code, text)) = &out {
        assert_eq!(*code, 0, "upgrade good: {text}\n{}", vm.serial_tail(40));
        assert!(text.contains("installed in root-b"), "{text}");
    }
    drop(agent);
    let (mut agent, id2) = next_boot(&mut vm, &id, BOOT_LIMIT);
    id = id2;
    assert_eq!(image_version(&mut agent, &vm), v2, "the good update boots");
    wait_for(
        &mut agent,
        &vm,
        "good update blessed",
        "systemctl is-active -q hakube-boot-assess.service && systemctl is-active -q systemd-bless-boot.service",
        BOOT_LIMIT,
    );
    let st = status(&mut agent, &vm);
    let b = slot(&st, "root-b");
    assert_eq!(b["version"].as_str(), Some(v2.as_str()), "{st}");
    assert_eq!(b["booted"], true, "{st}");
    assert_eq!(
        b["assessment"], "good",
        "blessed after the health gate\n{st}"
    );
    assert_eq!(st["os"]["lastResult"]["action"], "health", "{st}");
    assert!(
        st["os"]["lastResult"]["result"]
            .as_str()
            .unwrap()
            .starts_with("healthy"),
        "{st}"
    );
    assert_eq!(
        sh(
            &mut agent,
            &vm,
            "marker",
            "cat /var/lib/hakube-update-marker"
        ),
        "kept-across-slots\n"
    );

    // 3. The bad update: into slot A; etcd cannot start; falls back to B.
    sh(
        &mut agent,
        &vm,
        "mount bundles",
        "mkdir -p /run/bundles && mount -o ro /dev/vdb /run/bundles",
    );
    let out = agent.sh("hakube-firstboot upgrade /run/bundles/bad");
    if let Ok((code, text)) = &out {
        assert_eq!(*code, 0, "upgrade bad: {text}\n{}", vm.serial_tail(40));
        assert!(text.contains("installed in root-a"), "{text}");
    }
    drop(agent);
    let (mut agent, id3) = next_boot(&mut vm, &id, BOOT_LIMIT);
    // Usually the agent answers during the bad boot (the gate waits for the
    // deadline); if it came back on v2 already, that boot is the fallback.
    let mut seen_bad = false;
    let mut fallback_id = id3.clone();
    if image_version(&mut agent, &vm) == v3 {
        seen_bad = true;
        let st = status(&mut agent, &vm);
        assert_eq!(st["os"]["bootCounted"], true, "{st}");
        assert_eq!(slot(&st, "root-a")["assessment"], "indeterminate", "{st}");
        drop(agent);
        let (a, idf) = next_boot(&mut vm, &id3, Duration::from_secs(180 + 2 * 300));
        agent = a;
        fallback_id = idf;
    }
    let _ = fallback_id;
    assert_eq!(
        image_version(&mut agent, &vm),
        v2,
        "back on the previous slot by itself"
    );
    let st = status(&mut agent, &vm);
    let a = slot(&st, "root-a");
    assert_eq!(a["version"].as_str(), Some(v3.as_str()), "{st}");
    assert_eq!(a["assessment"], "bad", "{st}");
    assert_eq!(a["triesLeft"], 0, "{st}");
    let b = slot(&st, "root-b");
    assert_eq!(
        (b["booted"].as_bool(), b["assessment"].as_str()),
        (Some(true), Some("good")),
        "{st}"
    );
    let last = &st["os"]["lastResult"];
    assert_eq!(
        (last["action"].as_str(), last["version"].as_str()),
        (Some("health"), Some(v3.as_str())),
        "{st}"
    );
    assert!(
        last["result"].as_str().unwrap().contains("marked bad"),
        "{st}"
    );
    assert_eq!(
        sh(
            &mut agent,
            &vm,
            "marker",
            "cat /var/lib/hakube-update-marker"
        ),
        "kept-across-slots\n"
    );
    wait_for(
        &mut agent,
        &vm,
        "etcd healthy again on v2",
        "hakube-firstboot health",
        BOOT_LIMIT,
    );
    eprintln!(
        "vm_update: bad boot observed by the agent: {seen_bad}; total {:?}",
        t.elapsed()
    );
    drop(vm);
    drop(ns);
}

/// The VM test is ignored in scripts/test-all; its cluster spec is checked
/// there all the same, so it cannot go stale unseen (it once lacked the
/// required `kubernetesVersion`).
#[test]
fn its_cluster_spec_is_valid_and_has_the_node_under_test() {
    let cluster = hakube_build::spec::load(Some(&spec())).unwrap();
    let n = cluster.node("etcd-1").unwrap();
    assert_eq!(n.role, hakube_node_profile::Role::Etcd);
    assert_eq!(cluster.etcd_member_nodes().count(), 1);
}
