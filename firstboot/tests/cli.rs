//! The `hakube-firstboot` binary itself: exit codes, bad input, status.

use std::fs;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hakube-firstboot"))
}

const PROFILE: &str = r#"{
  "profileVersion": 1, "clusterName": "t", "kubernetesVersion": "1.31.4",
  "nodeName": "e1", "role": "etcd", "address": "127.0.0.11", "initNode": false,
  "runtime": "containerd", "etcdTopology": "external",
  "endpoint": {"mode": "vip", "host": "127.0.0.30", "port": 8443},
  "localLb": {"enabled": false, "port": 7443},
  "masters": [{"name": "m1", "address": "127.0.0.21"}],
  "etcdMembers": [{"name": "e1", "address": "127.0.0.11",
    "peerUrl": "https://127.0.0.11:2380", "clientUrl": "https://127.0.0.11:2379"}],
  "labels": {}, "taints": [],
  "paths": {"etcdConfig": "/etc/etcd/etcd.conf.yml", "etcdDataDir": "/var/lib/etcd",
    "kubeletKubeconfig": "/etc/kubernetes/kubelet.conf"}
}"#;

#[test]
fn missing_profile_exits_2_and_runs_nothing() {
    let root = tempfile::tempdir().unwrap();
    for sub in [&["run"][..], &["status"], &["health"]] {
        let out = bin()
            .args(sub)
            .arg("--root")
            .arg(root.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{sub:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot read the node profile"), "{err}");
        assert!(err.contains("etc/hakube/node.json"), "{err}");
    }
    assert!(!root.path().join("var").exists(), "nothing was written");
}

#[test]
fn invalid_profile_exits_2_naming_the_problem() {
    let root = tempfile::tempdir().unwrap();
    let p = root.path().join("etc/hakube/node.json");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(
        &p,
        PROFILE.replace("\"etcdConfig\": \"/etc/etcd/etcd.conf.yml\", ", ""),
    )
    .unwrap();
    let out = bin()
        .arg("run")
        .arg("--root")
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("paths.etcdConfig"), "{err}");
    assert!(!root.path().join("var").exists());
}

#[test]
fn status_before_the_first_run_lists_pending_steps() {
    let root = tempfile::tempdir().unwrap();
    let p = root.path().join("etc/hakube/node.json");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, PROFILE).unwrap();
    let out = bin()
        .arg("status")
        .arg("--root")
        .arg(root.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("node e1 (etcd): pending"), "{text}");
    assert!(text.contains("etcd-member          pending"), "{text}");
    let out = bin()
        .args(["status", "--json", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["steps"][1]["name"], "etcd-member");
    assert_eq!(v["steps"][1]["attempts"], 0);
}

#[test]
fn help_names_every_flag() {
    let out = bin().args(["run", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--root", "--wait-timeout", "--retry"] {
        assert!(text.contains(flag), "{text}");
    }
}
