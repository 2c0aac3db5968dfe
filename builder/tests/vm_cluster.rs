//! The VM story: one small cluster, booted once, walks through what a user's
//! cluster lives through, each step asserted before the next starts:
//! 1. forms: the images of `fixtures/e2e/forms.yaml` (a master with stacked
//!    etcd behind the VIP, a worker), built from the test mirror (real
//!    binaries) and the test registry, are powered on all at once under
//!    QEMU/OVMF in a private network namespace and nothing is done to them:
//!    every node Ready, every system pod Running, `kubeadm init`/`join` once
//!    each, haproxy on every node, a Service between the nodes and CoreDNS;
//!    the worker reached multi-user.target while it still waited for the
//!    control plane (formation never holds up boot);
//! 2. installed nodes: on each node, the immutable OS (read-only erofs root,
//!    overlay /etc, the boot disk chosen among two hakube disks on the
//!    master), the uncounted first-install entry, slot A with the build's
//!    version and B empty, every image in containerd with its digest;
//! 3. reboot: the kubelet holds its graceful-shutdown inhibitor; the worker
//!    reboots; /etc and /var kept, the entry unchanged, the node Ready again;
//! 4. OS update: the worker takes a later build of itself (a bundle on a
//!    disk, no network) into slot B, boots it on trial, passes the health
//!    gate and is blessed; /var kept; Ready;
//! 5. bad update and rollback: a build whose kubelet cannot start goes into
//!    slot A; the gate marks it bad once the kubelet crash-loops (before the
//!    spec's deadline) and the node comes back on slot B by itself, /var
//!    kept, `status` naming the bad slot and the gate's result, Ready again;
//! 6. reimage: the worker loses power and gets a fresh disk at once, its
//!    Node still Ready; it rejoins under its name, Ready from its new boot.
//!
//! Everything is asserted from the host side of the namespace (kubectl with
//! the built admin.conf through the VIP) or from the guest agent. Needs root,
//! HAKUBE_TEST_MIRROR (tests/make-mirror), HAKUBE_TEST_REGISTRY(_CA) and
//! HAKUBE_SRCBUILD_BIN (kubectl for the host side): scripts/test-all runs
//! the story; "ha" (4 VMs) is ignored there and run by bench/e2e.sh.

mod support;

use std::time::{Duration, Instant};
use support::checks::{
    assert_kubeadm_once, assert_local_lb, assert_service_path, condition, fixture, form_with,
    formed, power_on, record, system_pods_running, Boot, FIRST_BOOT_LIMIT, POLL, SETTLE_LIMIT,
};
use support::cluster::{ClusterHarness, Plan};
use support::harness::{sleep, wait_for};
use support::os::{
    assert_installed_node, assert_persisted, boot_id, broken_kubelet_mirror, bundles_disk, guest,
    image_version, next_boot, other_hakube_disk, reboot, slot, status, wait_guest, wait_node_ready,
    BOOT_LIMIT, BUNDLES_LABEL,
};
use support::vm::Accel;

const MASTER: &str = "master-1";
const WORKER: &str = "worker-1";
/// From `hakube-firstboot upgrade` to the next boot answering: writing the
/// slot under TCG, then the reboot.
const UPGRADE_LIMIT: Duration = Duration::from_secs(600);

#[test]
fn story_forms_then_reboots_updates_and_rolls_back() {
    let mut h = ClusterHarness::build(Plan {
        scenario: "story",
        spec: Some(&fixture("forms.yaml")),
        only: None,
    });

    // Before power-on, what later steps need: two later builds of the
    // worker as update bundles (a good one, and one whose kubelet cannot
    // start) on a disk of their own, and a second hakube disk for the master.
    h.step("prepare: update bundles and disks");
    let t = Instant::now();
    let mirror = h.mirror.clone();
    let good = h.build_again("good", WORKER, &mirror, h.build_epoch + 3600);
    let bad_mirror = broken_kubelet_mirror(&mirror, &h.work.path().join("mirror-bad"));
    let bad = h.build_again("bad", WORKER, &bad_mirror, h.build_epoch + 7200);
    let ver = |b: &serde_json::Value| b["version"].as_str().unwrap_or_default().to_string();
    let (v1, v2, v3) = (h.versions[WORKER].clone(), ver(&good), ver(&bad));
    if !(v1 < v2 && v2 < v3) {
        h.fail(&format!("versions do not order: {v1} {v2} {v3}"));
    }
    let dir = h.work.path().to_path_buf();
    let bundles = bundles_disk(
        &[
            ("good", good["update"].as_str().unwrap_or_default().as_ref()),
            ("bad", bad["update"].as_str().unwrap_or_default().as_ref()),
        ],
        &dir,
    );
    let other = other_hakube_disk(&h.images[WORKER], &dir.join("other-disk.raw"));
    h.extra_disks.insert(MASTER.into(), vec![other]);
    h.extra_disks.insert(WORKER.into(), vec![bundles]);
    record("story", "prepare", t.elapsed());

    h.step("forms");
    let started = Instant::now();
    power_on(&mut h, Boot::AllAtOnce);
    // Cluster formation must not hold up boot: the worker reaches
    // multi-user.target while its first boot still waits for the control plane.
    let r = wait_for(
        "the worker at multi-user.target, its first boot under way",
        BOOT_LIMIT,
        Duration::from_secs(3),
        || {
            let n = h.node(WORKER);
            let (_, s) = n.guest_sh("systemctl is-active multi-user.target")?;
            let st = n.firstboot_status()?;
            if s.trim() != "active" {
                return Err(format!("multi-user.target {}", s.trim()));
            }
            Ok(st["overall"].as_str().unwrap_or_default().to_string())
        },
    );
    let (overall, _) = h.must("booting the worker", r);
    if overall == "done" {
        h.fail("the worker's first boot was done before it could be seen waiting");
    }
    h.wait_first_boot(FIRST_BOOT_LIMIT);
    formed(&mut h, started);
    let r = wait_for("every system pod Running", SETTLE_LIMIT, POLL, || {
        system_pods_running(&h)
    });
    h.must("system pods", r);
    assert_kubeadm_once(&mut h);
    assert_local_lb(&mut h);
    assert_service_path(&h);

    h.step("installed nodes");
    assert_installed_node(&mut h, MASTER, 1);
    assert_installed_node(&mut h, WORKER, 0);

    h.step("reboot");
    // Graceful node shutdown: the kubelet holds logind's delay inhibitor, so
    // a reboot hakube does not drain itself still ends the pods first.
    let locks = guest(
        &mut h,
        WORKER,
        "the kubelet's shutdown inhibitor",
        "systemd-inhibit --list --no-pager --no-legend; \
         busctl get-property org.freedesktop.login1 /org/freedesktop/login1 \
         org.freedesktop.login1.Manager InhibitDelayMaxUSec",
    );
    if !locks
        .lines()
        .any(|l| l.contains("kubelet") && l.contains("delay"))
        || !locks.contains("t 90000000")
    {
        h.fail(&format!(
            "want the kubelet's shutdown delay inhibitor and logind's InhibitDelayMaxSec 90: {locks}"
        ));
    }
    let t = Instant::now();
    let id = boot_id(&mut h, WORKER);
    reboot(&mut h, WORKER);
    let id = next_boot(&mut h, WORKER, &id, BOOT_LIMIT);
    assert_persisted(&mut h, WORKER);
    wait_node_ready(&h, WORKER, Duration::from_secs(300));
    record("story", "reboot-to-ready", t.elapsed());

    h.step("OS update");
    let t = Instant::now();
    let mount = format!("mkdir -p /run/bundles && mount -o ro LABEL={BUNDLES_LABEL} /run/bundles");
    guest(
        &mut h,
        WORKER,
        "marker in /var",
        "echo kept-across-slots > /var/lib/hakube-update-marker && sync",
    );
    guest(&mut h, WORKER, "mounting the bundles", &mount);
    upgrade(&mut h, "/run/bundles/good", "root-b");
    let id = next_boot(&mut h, WORKER, &id, UPGRADE_LIMIT);
    if image_version(&mut h, WORKER) != v2 {
        h.fail("the good update did not boot");
    }
    wait_guest(
        &mut h,
        WORKER,
        "the good update blessed",
        "systemctl is-active -q hakube-boot-assess.service && systemctl is-active -q systemd-bless-boot.service",
        Duration::from_secs(600),
    );
    let st = status(&mut h, WORKER);
    let b = slot(&st, "root-b");
    let last = &st["os"]["lastResult"];
    if b["version"].as_str() != Some(v2.as_str())
        || b["booted"] != true
        || b["assessment"] != "good"
        || last["action"] != "health"
        || !last["result"]
            .as_str()
            .unwrap_or_default()
            .starts_with("healthy")
    {
        h.fail(&format!(
            "after the good update, want B booted with {v2}, blessed by the gate: {st}"
        ));
    }
    assert_marker(&mut h);
    wait_node_ready(&h, WORKER, Duration::from_secs(300));
    record("story", "update-to-blessed", t.elapsed());

    h.step("bad update and rollback");
    let t = Instant::now();
    guest(&mut h, WORKER, "mounting the bundles", &mount);
    upgrade(&mut h, "/run/bundles/bad", "root-a");
    let mut id = next_boot(&mut h, WORKER, &id, UPGRADE_LIMIT);
    // The agent usually answers during the bad boot (the gate waits for its
    // deadline); if the node is back on v2 already, this boot is the fallback.
    if image_version(&mut h, WORKER) == v3 {
        let st = status(&mut h, WORKER);
        if st["os"]["bootCounted"] != true || slot(&st, "root-a")["assessment"] != "indeterminate" {
            h.fail(&format!("the bad update's boot is not on trial: {st}"));
        }
        let deadline = Duration::from_secs(h.cluster.os_update.health_deadline_seconds.worker);
        id = next_boot(&mut h, WORKER, &id, deadline + 2 * BOOT_LIMIT);
    }
    let _ = id;
    if image_version(&mut h, WORKER) != v2 {
        h.fail("not back on the previous slot by itself");
    }
    let st = status(&mut h, WORKER);
    let (a, b, last) = (
        slot(&st, "root-a"),
        slot(&st, "root-b"),
        &st["os"]["lastResult"],
    );
    if a["version"].as_str() != Some(v3.as_str())
        || a["assessment"] != "bad"
        || a["triesLeft"] != 0
        || b["booted"] != true
        || b["assessment"] != "good"
        || last["action"] != "health"
        || last["version"].as_str() != Some(v3.as_str())
        || !last["result"].as_str().is_some_and(|r| {
            r.contains("marked bad")
                && r.contains("which waiting cannot mend")
                && r.contains("kubelet.service is not active and systemd restarted it")
        })
    {
        h.fail(&format!(
            "after the fallback, want A bad with {v3}, B booted and good, the gate's verdict \
             (a crash-looping kubelet, judged before the deadline): {st}"
        ));
    }
    assert_marker(&mut h);
    wait_guest(
        &mut h,
        WORKER,
        "healthy again on the previous slot",
        "hakube-firstboot health",
        BOOT_LIMIT,
    );
    wait_node_ready(&h, WORKER, Duration::from_secs(300));
    record("story", "bad-update-to-fallback", t.elapsed());

    // The worker replaced at once: power cut, a fresh disk from its image,
    // powered on within seconds while its Node still reads Ready. It must
    // rejoin under its name (waiting out the old Node's Ready if its join
    // comes before the node controller notices) and be Ready from its new
    // boot, on the image's first slot.
    h.step("reimage");
    let old = h.must(
        "the worker's Node",
        h.kubectl_json(&["get", "node", WORKER]),
    );
    let old_boot = old["status"]["nodeInfo"]["bootID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if condition(&old, "Ready").is_none_or(|c| c["status"] != "True") {
        h.fail(&format!(
            "the worker is not Ready before its reimage: {old}"
        ));
    }
    h.reimage(WORKER);
    h.wait_first_boot(FIRST_BOOT_LIMIT);
    let st = status(&mut h, WORKER);
    let join = st["steps"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "kubeadm-join"))
        .map(|s| s["outcome"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    if !join.contains("joined as a worker") {
        h.fail(&format!("the reimaged worker's join: {st}"));
    }
    eprintln!("e2e story: the reimaged worker's join: {join}");
    let new_boot = guest(
        &mut h,
        WORKER,
        "boot id",
        "cat /proc/sys/kernel/random/boot_id",
    );
    let r = wait_for(
        "the worker Ready, reported from its new disk",
        Duration::from_secs(300),
        Duration::from_secs(5),
        || {
            let v = h.kubectl_json(&["get", "node", WORKER])?;
            let boot = v["status"]["nodeInfo"]["bootID"]
                .as_str()
                .unwrap_or_default();
            match condition(&v, "Ready") {
                Some(c) if c["status"] == "True" && boot == new_boot.trim() => Ok(()),
                c => Err(format!("bootID {boot} (old {old_boot}), Ready: {c:?}")),
            }
        },
    );
    h.must("the reimaged worker", r);
    let st = status(&mut h, WORKER);
    let a = slot(&st, "root-a");
    if a["version"].as_str() != Some(v1.as_str()) || a["booted"] != true {
        h.fail(&format!(
            "the reimaged worker boots its image's slot A with {v1}: {st}"
        ));
    }
    h.end_step();
    eprintln!("e2e story: passed");
}

/// `hakube-firstboot upgrade BUNDLE` on the worker: the bundle is written
/// into `slot`, then the node reboots, often before the agent's answer gets
/// out (the call then fails or times out: the next boot is what tells).
fn upgrade(h: &mut ClusterHarness, bundle: &str, slot: &str) {
    let cmd = format!("hakube-firstboot upgrade {bundle}");
    if let Ok((code, out)) = h.node(WORKER).guest_sh(&cmd) {
        if code != 0 || !out.contains(&format!("installed in {slot}")) {
            h.fail(&format!("`{cmd}` exited {code}: {out}"));
        }
    }
}

fn assert_marker(h: &mut ClusterHarness) {
    let m = guest(
        h,
        WORKER,
        "marker in /var",
        "cat /var/lib/hakube-update-marker",
    );
    if m != "kept-across-slots\n" {
        h.fail(&format!(
            "/var/lib/hakube-update-marker across slots: {m:?}"
        ));
    }
}

/// The default cluster shape: 3 masters with stacked etcd behind the VIP and
/// a worker. The VIP holder is powered off: the API stays reachable through
/// the VIP and the worker stays Ready (its kubelet talks to the node-local
/// haproxy, which drops the dead master).
///
/// Under TCG the nodes boot one at a time (the init master first, each next
/// one once the one before it completed its first boot): all four at once on
/// 2 host cores gave each master about 0.6 of a core of emulated CPU (a
/// sixteenth of kubeadm's minimum) and master-1's lone API server answered
/// too slowly for the others' joins (HA runs 1-5); the init master first and
/// the other three together still left the two joining masters' own API
/// servers unable to come up within 50 minutes, at a guest load of 21 on
/// master-1 (HA runs 6 and 7). One at a time did not pass either (run 8:
/// master-2's API server restarted 11 times beside master-1 alone), but it
/// pins a failure on one join. Booting everything at once is the "forms"
/// scenario's claim; this one's is surviving the VIP holder's loss.
#[test]
#[ignore = "4 VMs under TCG exceed CI's budget: bench/e2e.sh runs it (--ignored)"]
fn ha_survives_losing_the_vip_holder() {
    let mut h = ClusterHarness::build(Plan {
        scenario: "ha",
        spec: None,
        only: None,
    });
    let boot = match h.accel {
        Accel::Kvm => Boot::AllAtOnce,
        Accel::Tcg => Boot::OneAtATime,
    };
    eprintln!("e2e ha: powering on {boot:?}");
    form_with(&mut h, boot);
    let r = wait_for("every system pod Running", SETTLE_LIMIT, POLL, || {
        system_pods_running(&h)
    });
    h.must("system pods", r);
    assert_kubeadm_once(&mut h);
    assert_local_lb(&mut h);

    let vip = h.cluster.endpoint.host.clone();
    let masters: Vec<String> = h.cluster.masters().map(|m| m.name.to_string()).collect();
    let mut holder = None;
    for m in &masters {
        let read = h.node(m).guest_sh("ip -4 -o addr show dev lan0");
        let (_, out) = h.must("reading the masters' addresses", read);
        if out.contains(&format!(" {vip}/")) {
            holder = Some(m.clone());
        }
    }
    let holder = holder.unwrap_or_else(|| h.fail(&format!("no master holds the VIP {vip}")));
    eprintln!("e2e ha: {holder} holds the VIP; powering it off");
    let cut = Instant::now();
    h.node(&holder).vm.power_off();
    let (_, t) = h.must(
        "the API through the VIP after the holder died",
        wait_for(
            "API answers through the VIP",
            Duration::from_secs(180),
            Duration::from_secs(2),
            || {
                h.kubectl(&["get", "--raw", "/readyz"]).and_then(|o| {
                    if o.trim() == "ok" {
                        Ok(())
                    } else {
                        Err(o)
                    }
                })
            },
        ),
    );
    record("ha", "vip-failover", t);
    eprintln!(
        "e2e ha: API back through the VIP {} s after the power cut",
        t.as_secs()
    );
    // The worker's kubelet must keep renewing its heartbeat well past the node
    // monitor grace period (40 s) through its local haproxy.
    let worker = h
        .cluster
        .nodes_with_role(hakube_node_profile::Role::Worker)
        .next()
        .map(|n| n.name.to_string())
        .unwrap_or_else(|| h.fail("the HA scenario needs a worker"));
    let lease = |h: &ClusterHarness| -> Result<String, String> {
        let v = h.kubectl_json(&["-n", "kube-node-lease", "get", "lease", &worker])?;
        Ok(v["spec"]["renewTime"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    };
    let before = h.must("the worker's lease", lease(&h));
    while cut.elapsed() < Duration::from_secs(120) {
        let v = h.must("the worker", h.kubectl_json(&["get", "node", &worker]));
        let ready = condition(&v, "Ready").cloned().unwrap_or_default();
        if ready["status"] != "True" {
            h.fail(&format!("{worker} left Ready after {holder} died: {ready}"));
        }
        sleep(POLL);
    }
    let after = h.must("the worker's lease", lease(&h));
    if after == before {
        h.fail(&format!(
            "{worker}'s lease was not renewed after {holder} died ({after})"
        ));
    }
    eprintln!("e2e ha: passed ({worker} Ready 120 s after the power cut, lease renewed)");
}
