//! The node-level checks of the VM story, made through the guest agent on a
//! node of a running cluster: the immutable OS (read-only erofs root,
//! persistent /etc and /var, the boot disk among other hakube disks), the
//! boot entry and A/B slots, the images in containerd, reboots, and the OS
//! updates with their health gate and automatic fallback.

#![allow(dead_code)]

use super::cluster::ClusterHarness;
use super::harness::wait_for;
use super::vm::run;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A guest boot (power-on or reboot) to its agent answering, under TCG.
pub const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// The filesystem label of the disk that carries the update bundles.
pub const BUNDLES_LABEL: &str = "hk-bundles";

/// `sh -c cmd` on `node`; its stdout, or the scenario fails naming `what`.
pub fn guest(h: &mut ClusterHarness, node: &str, what: &str, cmd: &str) -> String {
    match h.node(node).guest_sh(cmd) {
        Ok((0, out)) => out,
        Ok((code, out)) => h.fail(&format!("{node}: {what}: `{cmd}` exited {code}: {out}")),
        Err(e) => h.fail(&format!("{node}: {what}: {e}")),
    }
}

pub fn status(h: &mut ClusterHarness, node: &str) -> serde_json::Value {
    let text = guest(h, node, "status", "hakube-firstboot status --json");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| h.fail(&format!("{node}: status --json: {e}: {text}")))
}

pub fn slot<'a>(st: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    st["os"]["slots"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["partition"] == name))
        .unwrap_or_else(|| panic!("status has no slot {name}: {st}"))
}

pub fn image_version(h: &mut ClusterHarness, node: &str) -> String {
    guest(
        h,
        node,
        "os-release",
        ". /usr/lib/os-release; echo $IMAGE_VERSION",
    )
    .trim()
    .to_string()
}

pub fn boot_id(h: &mut ClusterHarness, node: &str) -> String {
    guest(h, node, "boot id", "cat /proc/sys/kernel/random/boot_id")
        .trim()
        .to_string()
}

/// Waits for a boot of `node` other than `previous`; returns its boot id.
pub fn next_boot(h: &mut ClusterHarness, node: &str, previous: &str, limit: Duration) -> String {
    let r = wait_for(
        &format!("{node} booted again"),
        limit,
        Duration::from_secs(5),
        || {
            let (_, id) = h
                .node(node)
                .guest_sh("cat /proc/sys/kernel/random/boot_id")?;
            let id = id.trim().to_string();
            if !id.is_empty() && id != previous {
                Ok(id)
            } else {
                Err("still the same boot".into())
            }
        },
    );
    h.must(&format!("{node} rebooting"), r).0
}

/// Polls `cmd` on `node` until it exits 0.
pub fn wait_guest(h: &mut ClusterHarness, node: &str, what: &str, cmd: &str, limit: Duration) {
    let r = wait_for(what, limit, Duration::from_secs(5), || {
        match h.node(node).guest_sh(cmd)? {
            (0, _) => Ok(()),
            (code, out) => Err(format!("`{cmd}` exited {code}: {out}")),
        }
    });
    h.must(&format!("{node}: {what}"), r);
}

/// Asks `node` to reboot (the agent's answer is not awaited).
pub fn reboot(h: &mut ClusterHarness, node: &str) {
    let _ = h
        .node(node)
        .guest_sh("systemd-run --no-block sh -c 'sleep 1; systemctl reboot'");
}

/// The Node object of `node` reads Ready again.
pub fn wait_node_ready(h: &ClusterHarness, node: &str, limit: Duration) -> Duration {
    let r = wait_for(
        &format!("{node} Ready"),
        limit,
        Duration::from_secs(5),
        || {
            let v = h.kubectl_json(&["get", "node", node])?;
            match super::checks::condition(&v, "Ready") {
                Some(c) if c["status"] == "True" => Ok(()),
                c => Err(format!("Ready: {c:?}")),
            }
        },
    );
    h.must(&format!("{node} Ready"), r).1
}

/// What an installed hakube node is, checked inside it: the first install's
/// uncounted entry booted, slot A holding the build's version and slot B
/// empty, a read-only erofs root, an overlay /etc, /, /var and /efi all on
/// the boot disk even with another hakube disk attached (`other_disks`: how
/// many are), the spec's hostname and address, containerd holding every
/// image the build listed for the node with its digest, and nothing on
/// trial. Leaves a file in /etc and in /var for [`assert_persisted`].
pub fn assert_installed_node(h: &mut ClusterHarness, node: &str, other_disks: usize) {
    let version = h.versions[node].clone();
    let address = h
        .cluster
        .node(node)
        .and_then(|n| n.address())
        .map(|a| a.to_string())
        .unwrap_or_default();
    let root = guest(h, node, "root", "findmnt -n -o FSTYPE,OPTIONS /");
    if !(root.starts_with("erofs ") && root.contains("ro")) {
        h.fail(&format!("{node}: / is {root}, not a read-only erofs"));
    }
    guest(
        h,
        node,
        "the root is read-only",
        "! touch /usr/hakube-probe 2>/dev/null",
    );
    let vars = guest(
        h,
        node,
        "var partitions",
        "lsblk -rno PARTLABEL | grep -cx var",
    );
    if vars.trim() != (1 + other_disks).to_string() {
        h.fail(&format!(
            "{node}: {} var partitions, want {} (its own and the other disks')",
            vars.trim(),
            1 + other_disks
        ));
    }
    let disks = guest(
        h,
        node,
        "disks of /, /var and /efi",
        "for m in / /var /efi; do lsblk -no PKNAME \"$(findmnt -nro SOURCE --mountpoint $m)\"; done",
    );
    let disks: Vec<&str> = disks.lines().collect();
    if disks.len() != 3 || disks.iter().any(|d| *d != disks[0]) {
        h.fail(&format!(
            "{node}: /, /var and /efi are not all on the boot disk: {disks:?}"
        ));
    }
    let etc = guest(h, node, "/etc", "findmnt -n -o FSTYPE /etc");
    if etc.trim() != "overlay" {
        h.fail(&format!("{node}: /etc is {etc}, not the overlay"));
    }
    let name = guest(h, node, "hostname", "hostname");
    let addr = guest(h, node, "address", "ip -4 -o addr show dev lan0");
    if name.trim() != node || !addr.contains(&format!(" {address}/")) {
        h.fail(&format!("{node}: hostname {name:?}, lan0 {addr:?}"));
    }
    guest(
        h,
        node,
        "containerd and the firstboot unit",
        "systemctl is-active -q containerd && systemctl is-enabled -q hakube-firstboot.service",
    );
    assert_images_in_containerd(h, node);
    let entry = guest(
        h,
        node,
        "boot entry",
        "cat /sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f | tail -c +5 | tr -d '\\000'",
    );
    let counting = guest(
        h,
        node,
        "boot counting",
        "test -e /sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f && echo counted || echo uncounted",
    );
    if entry.trim() != format!("hakube_{version}.conf") || counting.trim() != "uncounted" {
        h.fail(&format!(
            "{node}: booted entry {entry:?} ({}), want the uncounted hakube_{version}.conf",
            counting.trim()
        ));
    }
    // systemd-bless-boot's generator pulls in boot-complete.target (and with
    // it the health gate) only on a counted boot: nothing is on trial here.
    let trial = guest(
        h,
        node,
        "boot-complete.target",
        "systemctl is-active boot-complete.target systemd-bless-boot.service hakube-boot-assess.service || true",
    );
    if trial.lines().count() != 3 || trial.lines().any(|l| l.trim() != "inactive") {
        h.fail(&format!(
            "{node}: an uncounted boot put something on trial: {trial}"
        ));
    }
    let st = status(h, node);
    let (a, b) = (slot(&st, "root-a"), slot(&st, "root-b"));
    if a["version"].as_str() != Some(version.as_str())
        || a["booted"] != true
        || a["assessment"] != "good"
        || !b["version"].is_null()
    {
        h.fail(&format!(
            "{node}: slots: want A booted with {version} and good, B empty: {st}"
        ));
    }
    // Every certificate the node holds is read, with its expiry: on a master
    // the API server's leaf and admin.conf's client, on every Kubernetes
    // node the kubelet's rotated client certificate.
    let certs = st["certificates"].as_array().cloned().unwrap_or_default();
    let readable = |name: &str| {
        certs
            .iter()
            .any(|c| c["name"] == name && c["error"].is_null() && c["daysLeft"].as_i64() > Some(0))
    };
    let role = h.cluster.node(node).map(|n| n.role);
    let want: &[&str] = match role {
        Some(hakube_node_profile::Role::Master) => {
            &["ca", "apiserver", "admin.conf", "kubelet-client"]
        }
        _ => &["ca", "kubelet-client"],
    };
    if let Some(missing) = want.iter().find(|w| !readable(w)) {
        h.fail(&format!(
            "{node}: status lists no readable, unexpired {missing} certificate: {certs:?}"
        ));
    }
    // A master's daily renewal is scheduled, and with year-long leaves
    // fresh from the build nothing is due (every leaf read, none renewed).
    if role == Some(hakube_node_profile::Role::Master) {
        let renew = guest(
            h,
            node,
            "the certificate renewal",
            "systemctl is-active hakube-certs.timer && hakube-firstboot certs --renew",
        );
        if !renew.contains("active\nno certificate due for renewal; next due: ") {
            h.fail(&format!(
                "{node}: hakube-certs.timer and `certs --renew`: {renew}"
            ));
        }
    }
    let os = guest(
        h,
        node,
        "os-release",
        ". /usr/lib/os-release; echo $VERSION_CODENAME $IMAGE_VERSION",
    );
    if os.trim() != format!("trixie {version}") {
        h.fail(&format!("{node}: os-release says {os:?}"));
    }
    guest(
        h,
        node,
        "writing /etc and /var",
        "echo persist-etc > /etc/hakube-probe && echo persist-var > /var/hakube-probe && sync",
    );
}

/// The files [`assert_installed_node`] wrote are still there, and the boot
/// entry is unchanged (an uncounted entry is never renamed).
pub fn assert_persisted(h: &mut ClusterHarness, node: &str) {
    let version = h.versions[node].clone();
    let files = guest(
        h,
        node,
        "files after the reboot",
        "cat /etc/hakube-probe /var/hakube-probe",
    );
    if files != "persist-etc\npersist-var\n" {
        h.fail(&format!(
            "{node}: /etc and /var after the reboot: {files:?}"
        ));
    }
    let esp = guest(h, node, "boot entries", "ls /efi/loader/entries");
    if esp.trim() != format!("hakube_{version}.conf") {
        h.fail(&format!("{node}: boot entries after the reboot: {esp}"));
    }
}

/// Every image the build put on the node's disk is in containerd's k8s.io
/// namespace with its linux/amd64 digest (the node has no registry).
pub fn assert_images_in_containerd(h: &mut ClusterHarness, node: &str) {
    let listing = guest(
        h,
        node,
        "containerd images",
        "ctr --namespace k8s.io images ls",
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(&h.manifest).unwrap_or_else(|e| panic!("{}: {e}", h.manifest.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", h.manifest.display()));
    let baked = manifest["images"][node]["containerImages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if baked.is_empty() {
        h.fail(&format!(
            "the manifest lists no images for {node}: {manifest}"
        ));
    }
    for i in baked {
        let (name, digest) = (
            i["image"].as_str().unwrap_or_default(),
            i["amd64Digest"].as_str().unwrap_or_default(),
        );
        if !listing
            .lines()
            .any(|l| l.starts_with(&format!("{name} ")) && l.contains(digest))
        {
            h.fail(&format!(
                "{node}: {name} {digest} not in containerd:\n{listing}"
            ));
        }
    }
}

/// A raw copy of `image` with other partition UUIDs: another hakube disk
/// (the same partition names), like an old disk kept beside a reimage.
pub fn other_hakube_disk(image: &Path, dest: &Path) -> PathBuf {
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "qcow2", "-O", "raw"])
        .arg(image)
        .arg(dest));
    for n in 1..=4 {
        run(Command::new("sfdisk")
            .args(["-q", "--part-uuid"])
            .arg(dest)
            .arg(n.to_string())
            .arg(format!("5ec0d000-0000-4000-8000-00000000000{n}")));
    }
    dest.to_path_buf()
}

/// An ext4 image labelled [`BUNDLES_LABEL`] holding each update bundle
/// directory under its name: the bundles reach the node on a disk, with no
/// network.
pub fn bundles_disk(bundles: &[(&str, &Path)], dir: &Path) -> PathBuf {
    let tree = dir.join("bundles");
    fs::create_dir_all(&tree).expect("creating the bundles tree");
    for (name, b) in bundles {
        run(Command::new("cp").arg("-al").arg(b).arg(tree.join(name)));
    }
    let size = run(Command::new("du").args(["-sb"]).arg(&tree));
    let size: u64 = size
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("du -sb prints a size");
    let disk = dir.join("bundles.ext4");
    fs::File::create(&disk)
        .and_then(|f| f.set_len(size + size / 4 + (64 << 20)))
        .expect("creating the bundles disk");
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", BUNDLES_LABEL, "-d"])
        .arg(&tree)
        .arg(&disk));
    disk
}

/// A copy of the mirror (hard links) whose kubelet exits 1 at once, with its
/// checksum file updated: what a bad Kubernetes build looks like to
/// hakube-build. A node updated to it never gets its kubelet running.
pub fn broken_kubelet_mirror(mirror: &Path, dest: &Path) -> PathBuf {
    let _ = fs::remove_dir_all(dest);
    run(Command::new("cp").arg("-al").arg(mirror).arg(dest));
    let found = run(Command::new("find")
        .arg(dest)
        .args(["-path", "*dl.k8s.io/release/*/bin/linux/amd64/kubelet"]));
    let kubelet = PathBuf::from(found.lines().next().unwrap_or_else(|| {
        panic!(
            "no kubelet in {} (tests/make-mirror layout)",
            mirror.display()
        )
    }));
    // Replaced, not written through: the hard link into the mirror stays.
    fs::remove_file(&kubelet).expect("unlinking the mirror's kubelet");
    fs::write(
        &kubelet,
        "#!/bin/sh\necho 'kubelet: broken build (VM story)' >&2\nexit 1\n",
    )
    .expect("writing the broken kubelet");
    let hex = run(Command::new("sha256sum").arg(&kubelet));
    let hex = hex.split_whitespace().next().expect("sha256sum output");
    let sums = kubelet.with_file_name("kubelet.sha256");
    let _ = fs::remove_file(&sums);
    fs::write(&sums, format!("{hex}\n")).expect("writing kubelet.sha256");
    dest.to_path_buf()
}
