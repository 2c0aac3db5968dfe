//! The rendered etcd configuration and PKI form a real, healthy etcd cluster
//! (etcd built from source, the version the catalogue pins): three members on 127.0.0.21-23 with peer and
//! client TLS and client-certificate authentication.
//!
//! Three members share this machine's loopback, so the test re-roots the
//! config's paths into the rendered tree and a temporary data dir, and drops
//! the 127.0.0.1 client listener and moves the metrics listener (both would
//! collide between members on one host). Everything else is used as rendered.

#[path = "common/render.rs"]
mod render_support;
#[path = "common/srcbuild.rs"]
mod srcbuild;

use hakube_build::pki::ClusterSecrets;
use hakube_build::render;
use hakube_build::spec::{self, SpecSource};
use srcbuild::srcbuild_bin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SPEC: &str = "\
name: etcdtest
kubernetesVersion: 1.37.2
etcd: {topology: external}
controlPlaneEndpoint: {mode: dns, host: api.etcdtest.example.test}
nodes:
  - {name: etcd-1, role: etcd, network: {address: 127.0.0.21/24}}
  - {name: etcd-2, role: etcd, network: {address: 127.0.0.22/24}}
  - {name: etcd-3, role: etcd, network: {address: 127.0.0.23/24}}
  - {name: master-1, role: master, network: {address: 127.0.0.11/24}}
";

struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn rendered_members_form_a_healthy_tls_cluster() {
    let (etcd, etcdctl) = (srcbuild_bin("etcd"), srcbuild_bin("etcdctl"));
    let cluster = spec::parse(SPEC, SpecSource::Embedded).unwrap();
    let work = tempfile::tempdir().unwrap();
    let secrets = ClusterSecrets::load_or_create(&cluster, &work.path().join("state")).unwrap();
    let mut members = Members(Vec::new());
    for node in cluster
        .nodes
        .iter()
        .filter(|n| n.name.as_str().starts_with("etcd"))
    {
        let root = work.path().join(node.name.as_str());
        render::node_tree(&cluster, &secrets, node, &render_support::upstream())
            .unwrap()
            .write_atomically(&root)
            .unwrap();
        let ip = node.address().unwrap();
        let conf = std::fs::read_to_string(root.join("etc/etcd/etcd.conf.yml"))
            .unwrap()
            .replace(
                "/etc/kubernetes/pki",
                &format!("{}/etc/kubernetes/pki", root.display()),
            )
            .replace("/var/lib/etcd", &format!("{}/data", root.display()))
            .replace(",https://127.0.0.1:2379", "")
            .replace("http://127.0.0.1:2381", &format!("http://{ip}:2381"));
        let conf_path = root.join("etcd.conf.yml");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(root.join("etcd.log")).unwrap();
        members.0.push(
            Command::new(&etcd)
                .arg("--config-file")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    let pki = work.path().join("etcd-1/etc/kubernetes/pki/etcd");
    let deadline = Instant::now() + Duration::from_secs(60);
    let healthy = loop {
        let out = Command::new(&etcdctl)
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                "https://127.0.0.21:2379,https://127.0.0.22:2379,https://127.0.0.23:2379",
            ])
            .arg("--cacert")
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("healthcheck-client.crt"))
            .arg("--key")
            .arg(pki.join("healthcheck-client.key"))
            .args(["endpoint", "health"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && text.matches("is healthy").count() == 3 {
            break Ok(text);
        }
        if Instant::now() > deadline {
            break Err(text);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if let Err(text) = healthy {
        let logs: String = ["etcd-1", "etcd-2", "etcd-3"]
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(work.path().join(n).join("etcd.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {n}\n{}\n",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect();
        panic!("cluster not healthy within 60 s:\n{text}\n{logs}");
    }
    // A client certificate is required: without one the member refuses.
    let out = Command::new(&etcdctl)
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            "https://127.0.0.21:2379",
            "--dial-timeout",
            "3s",
        ])
        .arg("--cacert")
        .arg(pki.join("ca.crt"))
        .args(["endpoint", "health"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "etcd accepted a client without a certificate"
    );
}
