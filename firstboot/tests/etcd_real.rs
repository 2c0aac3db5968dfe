//! The etcd steps of hakube-firstboot against a REAL etcd: the etcd the
//! catalogue pins, built from source (`HAKUBE_SRCBUILD_BIN`), as three processes on 127.0.0.11-13, with the TLS
//! certificates, etcd config templates and node profiles that
//! `hakube-build render` produces for a cluster with external etcd.
//!
//! Real here: etcd (server and its TLS, membership, learners, quorum), the
//! etcd client of firstboot, `etcdctl` for writing and reading keys, render's
//! certificates and templates. Doubles: the command runner (answers
//! `hostname` and `ip` as the node would; records that `kubeadm` is never
//! called), and, for the master, systemd and network probes.
//!
//! What this test changes in render's output, and why: every member gets
//! unique ports per scenario (so scenarios run in parallel and never meet
//! another etcd on this machine), and the 127.0.0.1 client and metrics
//! listeners are dropped, because three members on one host cannot all bind
//! 127.0.0.1:2379. Certificates are untouched (ports are not in them).

mod support;

use hakube_firstboot::fakes::{FakeProbe, FakeRunner, FakeServices};
use hakube_firstboot::steps::Env;
use hakube_firstboot::system::{Clock, SystemClock};
use std::fs;
use support::{node_identity, runtime_socket_on_start, waits, Scenario, MEMBERS};

fn member_ids(s: &Scenario, via: &str) -> Vec<(String, u64, bool)> {
    let root = s.root(via);
    let etcd = hakube_firstboot::etcd_client_for(&root).unwrap();
    let ip = MEMBERS.iter().find(|(n, _)| *n == via).unwrap().1;
    use hakube_firstboot::etcd::EtcdApi;
    let mut v: Vec<_> = etcd
        .member_list(&[s.endpoint(ip)])
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.id, m.is_learner))
        .collect();
    v.sort();
    v
}

#[test]
fn forms_a_three_member_cluster() {
    let s = Scenario::new(0);
    let t = SystemClock.now();
    s.form();
    eprintln!(
        "formation took {}s",
        (SystemClock.now() - t).as_seconds_f32()
    );
    let members = member_ids(&s, "etcd-1");
    let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(names, ["etcd-1", "etcd-2", "etcd-3"]);
    assert!(members.iter().all(|m| !m.2));
    for (n, _) in MEMBERS {
        let st = support::status(&s.root(n), true);
        let v: serde_json::Value = serde_json::from_str(&st).unwrap();
        assert_eq!(v["overall"], "done", "{st}");
        let out = s.etcdctl(n, &["endpoint", "health"]);
        assert!(out.success(), "{}", out.combined());
        let cfg = fs::read_to_string(s.root(n).join("var/lib/hakube/etcd/etcd.conf.yml")).unwrap();
        assert!(cfg.contains(r#""initial-cluster-state": "new""#), "{cfg}");
    }
    // health of the etcd role through the real client
    let root = s.root("etcd-2");
    let runner = FakeRunner::new();
    let (svc, probe) = (FakeServices::default(), FakeProbe::default());
    let etcd = hakube_firstboot::etcd_client_for(&root).unwrap();
    let env = Env {
        root,
        cmd: &runner,
        svc: &svc,
        etcd: &etcd,
        probe: &probe,
        clock: &SystemClock,
        waits: waits(),
    };
    let h = hakube_firstboot::health(&env).unwrap();
    assert!(h.contains("3 of 3 voting members healthy"), "{h}");
    // running again changes nothing: every step is done
    s.run_member("etcd-1").unwrap();
}

#[test]
fn replaces_a_wiped_member_while_the_others_hold_quorum() {
    let s = Scenario::new(1);
    s.form();
    for i in 0..20 {
        let out = s.etcdctl(
            "etcd-2",
            &["put", &format!("/before/{i}"), &format!("v{i}")],
        );
        assert!(out.success(), "{}", out.combined());
    }
    let old = member_ids(&s, "etcd-2");
    s.wipe("etcd-1");
    let t = SystemClock.now();
    s.run_member("etcd-1")
        .unwrap_or_else(|e| panic!("{e:#}\n{}", s.etcd_log("etcd-1")));
    eprintln!(
        "replacement took {}s",
        (SystemClock.now() - t).as_seconds_f32()
    );
    let new = member_ids(&s, "etcd-2");
    assert_eq!(new.len(), 3);
    assert!(
        new.iter().all(|m| !m.2),
        "all voting after promotion: {new:?}"
    );
    assert_ne!(old[0].1, new[0].1, "etcd-1 has a new member id");
    let cfg =
        fs::read_to_string(s.root("etcd-1").join("var/lib/hakube/etcd/etcd.conf.yml")).unwrap();
    assert!(
        cfg.contains(r#""initial-cluster-state": "existing""#),
        "{cfg}"
    );
    // the keys written before are served by the new member
    let out = s.etcdctl("etcd-1", &["get", "--prefix", "/before/", "--keys-only"]);
    assert!(out.success(), "{}", out.combined());
    assert_eq!(
        out.stdout.lines().filter(|l| !l.is_empty()).count(),
        20,
        "{}",
        out.stdout
    );
    let out = s.etcdctl("etcd-1", &["get", "/before/7", "--print-value-only"]);
    assert_eq!(out.stdout.trim(), "v7");
    let st = support::status(&s.root("etcd-1"), false);
    assert!(st.contains("removed stale member etcd-1"), "{st}");
    assert!(st.contains("promoted"), "{st}");
}

#[test]
fn refuses_to_replace_when_quorum_would_be_lost() {
    let s = Scenario::new(2);
    s.form();
    let before = member_ids(&s, "etcd-3");
    s.procs.stop("etcd-2");
    s.wipe("etcd-1");
    let err = s.run_member("etcd-1").unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("refusing to replace etcd member etcd-1"),
        "{msg}"
    );
    assert!(msg.contains("below the quorum of 2"), "{msg}");
    assert!(msg.contains("Nothing was changed"), "{msg}");
    assert_eq!(hakube_firstboot::exit_code(&err), 1);
    assert!(
        !s.root("etcd-1").join("var/lib/etcd/member").exists(),
        "etcd-1 was not started"
    );
    // membership untouched, as seen by the surviving member
    assert_eq!(member_ids(&s, "etcd-3"), before);
    let st = support::status(&s.root("etcd-1"), true);
    assert!(st.contains("\"state\": \"failed\""), "{st}");
}

#[test]
fn refuses_to_init_a_first_master_over_a_registry_keyspace() {
    let s = Scenario::new(3);
    s.form();
    for k in ["/registry/pods/default/old", "/registry/namespaces/default"] {
        let out = s.etcdctl("etcd-1", &["put", k, "stale"]);
        assert!(out.success(), "{}", out.combined());
    }
    let root = s.root("master-1");
    let p = s.profile("master-1");
    assert!(p.init_node);
    // kubeadm and the rest of the node's tools: the recording runner.
    let runner = FakeRunner::new();
    node_identity(&runner, &p);
    let svc = FakeServices::default();
    runtime_socket_on_start(&svc, &root, &p);
    let probe = FakeProbe::default();
    probe
        .tcp
        .borrow_mut()
        .insert(format!("127.0.0.1:{}", p.local_lb.port));
    let etcd = hakube_firstboot::etcd_client_for(&root).unwrap();
    let env = Env {
        root: root.clone(),
        cmd: &runner,
        svc: &svc,
        etcd: &etcd,
        probe: &probe,
        clock: &SystemClock,
        waits: waits(),
    };
    let err = hakube_firstboot::run(&env, None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("already holds 2 keys under /registry/"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("https://127.0.0.11:{}", s.client_port)),
        "{msg}"
    );
    assert!(msg.contains("etcdctl del --prefix /registry/"), "{msg}");
    assert_eq!(runner.count("kubeadm"), 0, "{:?}", runner.calls());
    // and the keys are still there
    let out = s.etcdctl("etcd-2", &["get", "--prefix", "/registry/", "--keys-only"]);
    assert_eq!(
        out.stdout.lines().filter(|l| !l.is_empty()).count(),
        2,
        "{}",
        out.combined()
    );
    let st = support::status(&root, false);
    assert!(st.contains("wait-etcd            done"), "{st}");
    assert!(st.contains("etcd-keyspace        failed"), "{st}");
}
