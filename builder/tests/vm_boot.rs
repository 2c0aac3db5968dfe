//! Boot test: builds worker-1 of the default cluster from a local test mirror
//! (tests/make-mirror), boots it under QEMU with OVMF (KVM when a short smoke
//! boot works, TCG otherwise) in a private network namespace, and checks from
//! inside the VM through the qemu-guest-agent channel. Needs root.

mod support;

#[path = "common/registry.rs"]
mod registry;
use registry::registry_args;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::firstboot::firstboot_bin;
use support::vm::{run, Accel, Netns, Vm};

const BOOT_LIMIT: Duration = Duration::from_secs(240);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(agent: &mut support::vm::Agent, what: &str, cmd: &str, vm: &Vm) -> String {
    match agent.sh(cmd) {
        Ok((0, out)) => out,
        Ok((code, out)) => panic!(
            "{what}: `{cmd}` exited {code}: {out}\n--- serial log tail ---\n{}",
            vm.serial_tail(60)
        ),
        Err(e) => panic!(
            "{what}: {e}\n--- serial log tail ---\n{}",
            vm.serial_tail(60)
        ),
    }
}

#[test]
fn worker_image_boots_with_readonly_root_and_persistent_etc_and_var() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the boot test needs root (mmdebstrap, network namespaces)"
    );
    let dir = tempfile::Builder::new()
        .prefix("hakube-vm-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    // scripts/test-all builds the mirror once for every test that needs one.
    let mirror = std::env::var_os("HAKUBE_TEST_MIRROR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| d.join("mirror"));
    run(Command::new(repo().join("tests/make-mirror")).arg(&mirror));
    let out = Command::new(env!("CARGO_BIN_EXE_hakube-build"))
        .args(["--profile", "worker", "--node", "worker-1", "--json"])
        .arg("--artifacts")
        .arg(&mirror)
        .arg("--cache-dir")
        .arg(d.join("cache"))
        .arg("--state")
        .arg(d.join("state"))
        .arg("--out")
        .arg(d.join("out"))
        .arg("--lock")
        .arg(d.join("hakube.lock"))
        .arg("--firstboot-bin")
        .arg(firstboot_bin())
        .args(registry_args())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hakube-build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let qcow2 = PathBuf::from(result["images"][0]["qcow2"].as_str().unwrap());
    let cluster = hakube_build::spec::load(None).unwrap();
    let mac = cluster.node("worker-1").unwrap().mac.to_string();

    let ns = Netns::new();
    // Smoke boot under KVM on a throwaway overlay; fall back to TCG.
    let overlay = d.join("smoke.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&qcow2)
        .arg(&overlay));
    let accel = if Path::new("/dev/kvm").exists() {
        let mut smoke = Vm::start(&ns, Accel::Kvm, &overlay, &mac, d, "smoke");
        let ok = smoke.wait_agent(Duration::from_secs(90)).is_ok();
        drop(smoke);
        if ok {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    } else {
        Accel::Tcg
    };
    eprintln!("vm_boot: using {accel:?}");

    // A second hakube disk is attached (read-only): the same partition names
    // with other partition UUIDs, like another node's disk or an old one
    // kept beside a reimage, so /dev/disk/by-partlabel/var and esp name
    // either disk. /var and /efi must come from the disk the root came from.
    let copy = d.join("second-disk.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "qcow2", "-O", "raw"])
        .arg(&qcow2)
        .arg(&copy));
    for n in 1..=4 {
        run(Command::new("sfdisk")
            .args(["-q", "--part-uuid"])
            .arg(&copy)
            .arg(n.to_string())
            .arg(format!("5ec0d000-0000-4000-8000-00000000000{n}")));
    }
    let started = Instant::now();
    let mut vm = Vm::start_with(&ns, accel, &qcow2, &mac, d, "boot", &[&copy]);
    let mut agent = vm
        .wait_agent(BOOT_LIMIT)
        .unwrap_or_else(|e| panic!("first boot: {e}\n{}", vm.serial_tail(80)));
    // multi-user.target is reached even though hakube-firstboot waits for
    // masters that do not exist here: cluster formation must not hold up boot.
    let deadline = Instant::now() + BOOT_LIMIT;
    loop {
        let (_, s) = agent
            .sh("systemctl is-active multi-user.target; systemctl list-jobs --no-legend")
            .unwrap();
        if s.starts_with("active") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "multi-user.target not reached: {s}\n{}",
            vm.serial_tail(80)
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    eprintln!(
        "vm_boot: first boot to multi-user in {:?}",
        started.elapsed()
    );

    let root = check(&mut agent, "root", "findmnt -n -o FSTYPE,OPTIONS /", &vm);
    assert!(root.starts_with("erofs ") && root.contains("ro"), "{root}");
    check(
        &mut agent,
        "root is read-only",
        "! touch /usr/hakube-probe 2>/dev/null",
        &vm,
    );
    let vars = check(
        &mut agent,
        "var partitions",
        "lsblk -rno PARTLABEL | grep -cx var",
        &vm,
    );
    assert_eq!(vars.trim(), "2", "both disks have a var partition");
    let disks = check(
        &mut agent,
        "disks of /, /var and /efi",
        "for m in / /var /efi; do lsblk -no PKNAME \"$(findmnt -nro SOURCE --mountpoint $m)\"; done",
        &vm,
    );
    let disks: Vec<&str> = disks.lines().collect();
    assert_eq!(disks.len(), 3, "{disks:?}");
    assert!(
        disks.iter().all(|x| *x == disks[0]),
        "/, /var and /efi are not all on the boot disk: {disks:?}"
    );
    let etc = check(&mut agent, "/etc", "findmnt -n -o FSTYPE /etc", &vm);
    assert_eq!(etc.trim(), "overlay");
    check(
        &mut agent,
        "write /etc",
        "echo persist-etc > /etc/hakube-probe && sync",
        &vm,
    );
    check(
        &mut agent,
        "write /var",
        "echo persist-var > /var/hakube-probe && sync",
        &vm,
    );
    let host = check(&mut agent, "hostname", "hostname", &vm);
    assert_eq!(host.trim(), "worker-1");
    let addr = check(&mut agent, "address", "ip -4 -o addr show dev lan0", &vm);
    assert!(addr.contains("192.168.122.21/24"), "{addr}");
    let containerd = check(
        &mut agent,
        "containerd",
        "systemctl is-active containerd",
        &vm,
    );
    assert_eq!(containerd.trim(), "active");
    check(
        &mut agent,
        "firstboot unit",
        "systemctl cat hakube-firstboot.service >/dev/null && systemctl is-enabled hakube-firstboot.service",
        &vm,
    );
    // hakube-firstboot read the baked profile and is waiting for the API
    // endpoint (no master runs in this test); its status says so.
    let status = check(
        &mut agent,
        "firstboot status",
        "hakube-firstboot status --json",
        &vm,
    );
    let status: serde_json::Value =
        serde_json::from_str(&status).unwrap_or_else(|e| panic!("status --json: {e}: {status}"));
    assert_eq!(status["role"], "worker", "{status}");
    // The local steps ran for real (systemctl, the CRI socket, haproxy) before
    // the wait for the API; they are done within the boot.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (_, text) = agent.sh("hakube-firstboot status --json").unwrap();
        let st: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let state = |name: &str| {
            st["steps"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == name))
                .map(|x| x["state"].as_str().unwrap_or("").to_string())
                .unwrap_or_default()
        };
        let local = [
            "identity",
            "container-runtime",
            "container-images",
            "load-balancer",
        ];
        if local.iter().all(|n| state(n) == "done") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "firstboot's local steps did not finish: {text}\n{}",
            vm.serial_tail(60)
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    // Every image the build put on the disk is in containerd, with its digest,
    // before kubeadm runs (the node has no route to any registry).
    let listing = check(
        &mut agent,
        "containerd images",
        "ctr --namespace k8s.io images ls",
        &vm,
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(result["manifest"].as_str().unwrap()).unwrap())
            .unwrap();
    let baked = manifest["images"]["worker-1"]["containerImages"]
        .as_array()
        .unwrap();
    assert!(!baked.is_empty(), "{manifest}");
    for i in baked {
        let (name, digest) = (
            i["image"].as_str().unwrap(),
            i["amd64Digest"].as_str().unwrap(),
        );
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains(digest)),
            "{name} {digest} not in containerd:\n{listing}"
        );
    }
    // The first install's entry is the one systemd-boot started, and it is
    // not counted: there is no older slot to fall back to.
    let version = result["version"].as_str().unwrap().to_string();
    let entry = check(
        &mut agent,
        "boot entry",
        "cat /sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f | tail -c +5 | tr -d '\\000'",
        &vm,
    );
    assert_eq!(entry.trim(), format!("hakube_{version}.conf"), "{entry:?}");
    let counting = check(
        &mut agent,
        "boot counting",
        "test -e /sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f && echo counted || echo uncounted",
        &vm,
    );
    assert_eq!(counting.trim(), "uncounted");
    // Nothing is on trial: systemd-bless-boot's generator pulls in
    // boot-complete.target (and with it the health gate) only on a counted
    // boot, so neither runs here; vm_update covers the counted boots.
    let trial = check(
        &mut agent,
        "boot-complete.target",
        "systemctl is-active boot-complete.target systemd-bless-boot.service hakube-boot-assess.service || true",
        &vm,
    );
    assert!(
        trial.lines().all(|l| l.trim() == "inactive") && trial.lines().count() == 3,
        "an uncounted boot put something on trial: {trial}"
    );
    // status shows both slots: A booted with this build's version, B empty.
    let st: serde_json::Value = serde_json::from_str(&check(
        &mut agent,
        "status",
        "hakube-firstboot status --json",
        &vm,
    ))
    .unwrap();
    let slots = st["os"]["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("{st}"));
    assert_eq!(slots.len(), 2, "{st}");
    assert_eq!(slots[0]["version"].as_str(), Some(version.as_str()), "{st}");
    assert_eq!(slots[0]["booted"], true, "{st}");
    assert_eq!(slots[0]["assessment"], "good", "{st}");
    assert!(slots[1]["version"].is_null(), "{st}");
    let os_release = check(
        &mut agent,
        "os-release",
        ". /usr/lib/os-release; echo $VERSION_CODENAME $IMAGE_VERSION",
        &vm,
    );
    assert_eq!(os_release.trim(), format!("trixie {version}"));
    let boot_id = check(
        &mut agent,
        "boot id",
        "cat /proc/sys/kernel/random/boot_id",
        &vm,
    );

    // Reboot, then the files written to /etc and /var are still there.
    let _ = agent.spawn("sleep 1; systemctl reboot");
    drop(agent);
    std::thread::sleep(Duration::from_secs(10));
    let deadline = Instant::now() + BOOT_LIMIT;
    let mut agent = loop {
        let mut a = vm
            .wait_agent(BOOT_LIMIT)
            .unwrap_or_else(|e| panic!("second boot: {e}\n{}", vm.serial_tail(80)));
        let id = a
            .sh("cat /proc/sys/kernel/random/boot_id")
            .map(|r| r.1)
            .unwrap_or_default();
        if !id.is_empty() && id != boot_id {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "the VM did not reboot\n{}",
            vm.serial_tail(60)
        );
        std::thread::sleep(Duration::from_secs(5));
    };
    assert_eq!(
        check(&mut agent, "etc after reboot", "cat /etc/hakube-probe", &vm),
        "persist-etc\n"
    );
    assert_eq!(
        check(&mut agent, "var after reboot", "cat /var/hakube-probe", &vm),
        "persist-var\n"
    );
    // The entry is unchanged (an uncounted entry is never renamed).
    let esp = check(&mut agent, "entries", "ls /efi/loader/entries", &vm);
    assert_eq!(esp.trim(), format!("hakube_{version}.conf"), "{esp}");
    drop(vm);
    drop(ns);
}
