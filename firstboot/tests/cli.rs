//! The `hakube-firstboot` binary itself: exit codes, bad input, status.

use std::fs;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hakube-firstboot"))
}

const PROFILE: &str = r#"{
  "profileVersion": 1, "clusterName": "t", "kubernetesVersion": "1.37.2",
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

/// The real HTTPS probe against a real TLS server (openssl s_server with a
/// throwaway self-signed certificate): any TLS+HTTP answer counts.
#[test]
fn net_probe_against_a_real_tls_server() {
    use hakube_firstboot::system::{NetProbe, Probe};
    let dir = tempfile::tempdir().unwrap();
    let (key, crt) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=probe-test", "-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let port = 24000 + (std::process::id() % 1000) as u16;
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&crt)
        .arg("-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let probe = NetProbe {
        timeout: std::time::Duration::from_secs(3),
    };
    let addr = format!("127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..50 {
        if probe.tcp_open(&addr) {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let answered = up && probe.https_answers(&format!("https://{addr}/readyz"));
    let _ = server.kill();
    let _ = server.wait();
    assert!(up, "openssl s_server did not listen on {addr}");
    assert!(
        answered,
        "a TLS server with a self-signed certificate answers"
    );
    assert!(!probe.tcp_open(&addr), "closed after kill");
    assert!(!probe.https_answers(&format!("https://{addr}/readyz")));
}
