//! The cluster forms itself in VMs: the images of a cluster spec, built from
//! the test mirror (real binaries), are booted all at once under QEMU/OVMF in
//! a private network namespace and nothing is done to them after power-on.
//! Everything is asserted from the host side of the namespace (kubectl with
//! the built admin.conf through the VIP) or read from the guest agent
//! (`hakube-firstboot status --json`, haproxy's local port).
//!
//! Needs root, HAKUBE_TEST_MIRROR (tests/make-mirror) and HAKUBE_SRCBUILD_BIN
//! (kubectl for the host side). "forms" runs in scripts/test-all (about 11
//! minutes under TCG on 2 cores); "ha" (4 VMs) is ignored there and run by
//! bench/e2e.sh.

mod support;

use std::time::{Duration, Instant};
use support::checks::{
    assert_kubeadm_once, assert_local_lb, assert_service_path, condition, fixture, form, form_with,
    record, system_pods_running, Boot, POLL, SETTLE_LIMIT,
};
use support::cluster::{ClusterHarness, Plan};
use support::harness::{sleep, wait_for};
use support::vm::Accel;

#[test]
fn forms_a_working_cluster_with_nothing_done_after_power_on() {
    let mut h = ClusterHarness::build(Plan {
        scenario: "forms",
        spec: Some(&fixture("forms.yaml")),
        only: None,
    });
    form(&mut h);
    let r = wait_for("every system pod Running", SETTLE_LIMIT, POLL, || {
        system_pods_running(&h)
    });
    h.must("system pods", r);
    assert_kubeadm_once(&mut h);
    assert_local_lb(&mut h);
    assert_service_path(&h);
    eprintln!("e2e forms: passed");
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
