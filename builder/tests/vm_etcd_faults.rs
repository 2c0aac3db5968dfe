//! Scenario "etcd faults": one etcd VM loses power in the middle of its first
//! boot and is started again, and etcd still forms; then one etcd VM is
//! reimaged (a fresh disk from the same image) and rejoins as the same
//! member, etcd stays healthy and a key written before is read after. etcd is
//! observed from the host side of the namespace with etcdctl and the master's
//! etcd client certificate.
//!
//! Two shapes of the same scenario (`builder/tests/fixtures/e2e/etcd-faults.yaml`):
//! - the etcd VMs alone (3 VMs), run by scripts/test-all;
//! - the whole external-etcd cluster (3 etcd VMs, a master, a worker): the
//!   Kubernetes cluster must form over the faulted etcd and answer after the
//!   reimage. Five VMs under TCG exceed CI's budget: bench/e2e.sh runs it.

mod support;

use hakube_node_profile::Role;
use std::time::{Duration, Instant};
use support::checks::{fixture, record, system_pods_running, POLL, SETTLE_LIMIT};
use support::cluster::{ClusterHarness, Plan};
use support::harness::{run_bounded, wait_for};
use support::srcbuild::srcbuild_bin;

/// `etcdctl` in the namespace with the master's etcd client certificate.
fn etcdctl(h: &ClusterHarness, endpoints: &str, args: &[&str]) -> Result<String, String> {
    let pki = h.init_tree().join("etc/kubernetes/pki");
    let mut c = h.ns.exec(srcbuild_bin("etcdctl"));
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--cacert={}", pki.join("etcd/ca.crt").display()))
        .arg(format!(
            "--cert={}",
            pki.join("apiserver-etcd-client.crt").display()
        ))
        .arg(format!(
            "--key={}",
            pki.join("apiserver-etcd-client.key").display()
        ))
        .arg("--command-timeout=15s")
        .args(args);
    run_bounded(&mut c, Duration::from_secs(60), h.work.path())
}

fn etcd_nodes(h: &ClusterHarness) -> Vec<(String, String)> {
    h.cluster
        .nodes_with_role(Role::Etcd)
        .map(|n| {
            let ip = n.address().map(|a| a.to_string()).unwrap_or_default();
            (n.name.to_string(), format!("https://{ip}:2379"))
        })
        .collect()
}

/// Every member started under its node's name and every endpoint healthy.
fn etcd_healthy(h: &ClusterHarness) -> Result<(), String> {
    let members = etcd_nodes(h);
    let all: Vec<&str> = members.iter().map(|(_, e)| e.as_str()).collect();
    let eps = all.join(",");
    let list = etcdctl(h, &eps, &["member", "list", "-w", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&list).map_err(|e| format!("{e}: {list}"))?;
    let names: Vec<String> = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["name"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut want: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
    let mut got = names.clone();
    want.sort();
    got.sort();
    if got != want {
        return Err(format!(
            "members {names:?}, want {want:?} (each started, no learner left)"
        ));
    }
    etcdctl(h, &eps, &["endpoint", "health"]).map(|_| ())
}

#[test]
fn etcd_alone_survives_a_power_cut_in_first_boot_and_a_reimaged_member() {
    etcd_faults("etcd-faults-alone", Some(Role::Etcd));
}

#[test]
#[ignore = "5 VMs under TCG exceed CI's budget: bench/e2e.sh etcd runs it (--ignored); scripts/test-all runs the etcd VMs alone"]
fn etcd_survives_a_power_cut_in_first_boot_and_a_reimaged_member() {
    etcd_faults("etcd-faults", None);
}

/// The scenario; with `only` = etcd, the Kubernetes nodes are neither built
/// nor booted and the checks are etcd's alone.
fn etcd_faults(scenario: &'static str, only: Option<Role>) {
    let mut h = ClusterHarness::build(Plan {
        scenario,
        spec: Some(&fixture("etcd-faults.yaml")),
        only,
    });
    let kubernetes = only.is_none();
    let victim = "etcd-2";
    // Fault 1: cut etcd-2's power while its etcd-member step runs (it waits
    // for its peers, which boot at the same time), then power it on again.
    let started = Instant::now();
    h.boot_all();
    let r = wait_for(
        &format!("{victim}'s etcd-member step running"),
        Duration::from_secs(900),
        Duration::from_secs(1),
        || {
            let s = h.node(victim).firstboot_status()?;
            let step = s["steps"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == "etcd-member").cloned())
                .unwrap_or_default();
            match step["state"].as_str() {
                Some("running") => Ok("running".to_string()),
                Some("done") => Ok("done already".to_string()),
                other => Err(format!("etcd-member {other:?}")),
            }
        },
    );
    let (when, _) = h.must("catching etcd-2 in its first boot", r);
    eprintln!(
        "e2e {scenario}: power cut on {victim} ({} s after power-on, etcd-member {when})",
        started.elapsed().as_secs()
    );
    if when != "running" {
        h.fail(&format!(
            "{victim} finished etcd-member before the power cut could hit it"
        ));
    }
    h.power_cycle(victim);
    // The rest of formation: first boot everywhere (and, with the
    // Kubernetes nodes, every node Ready).
    h.wait_first_boot(support::checks::FIRST_BOOT_LIMIT);
    if kubernetes {
        let r = wait_for("every node Ready", SETTLE_LIMIT, POLL, || {
            support::checks::nodes_ready(&h)
        });
        h.must("nodes Ready", r);
    }
    record(scenario, "cluster-formed", started.elapsed());
    let r = wait_for("etcd healthy", Duration::from_secs(300), POLL, || {
        etcd_healthy(&h)
    });
    h.must("etcd after the power cut", r);
    if kubernetes {
        let r = wait_for("every system pod Running", SETTLE_LIMIT, POLL, || {
            system_pods_running(&h)
        });
        h.must("system pods", r);
    }

    // Fault 2: reimage etcd-3; it must come back as the same member with the data.
    let all: Vec<String> = etcd_nodes(&h).into_iter().map(|(_, e)| e).collect();
    let eps = all.join(",");
    let key = "/hakube-e2e/written-before-reimage";
    let value = format!("{}", std::process::id());
    h.must(
        "writing the probe key",
        etcdctl(&h, &eps, &["put", key, &value]),
    );
    let reimaged = "etcd-3";
    let t = Instant::now();
    h.reimage(reimaged);
    eprintln!("e2e {scenario}: {reimaged} reimaged (fresh disk), powered on");
    h.wait_first_boot(support::checks::FIRST_BOOT_LIMIT);
    let r = wait_for(
        "etcd healthy after the reimage",
        Duration::from_secs(600),
        POLL,
        || etcd_healthy(&h),
    );
    h.must("etcd after the reimage", r);
    record(scenario, "reimaged-member-back", t.elapsed());
    let own = etcd_nodes(&h)
        .into_iter()
        .find(|(n, _)| n == reimaged)
        .map(|(_, e)| e)
        .unwrap_or_default();
    // A serializable read is answered by that member from its own copy.
    let got = h.must(
        "reading the probe key from the reimaged member",
        etcdctl(
            &h,
            &own,
            &["get", key, "--print-value-only", "--consistency=s"],
        ),
    );
    if got.trim() != value {
        h.fail(&format!(
            "{key} on {reimaged} after the reimage: {:?}, want {value:?}",
            got.trim()
        ));
    }
    if kubernetes {
        let r = wait_for(
            "the API through the VIP",
            Duration::from_secs(120),
            POLL,
            || h.kubectl(&["get", "--raw", "/readyz"]),
        );
        h.must("the API after the reimage", r);
    }
    eprintln!("e2e {scenario}: passed");
}
