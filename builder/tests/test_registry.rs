//! The test registry (tests/registry, started by scripts/test-all) serves
//! every image the real kubeadm lists for the built Kubernetes version, plus
//! flannel's two, under `<registry>/<upstream-host>/<upstream-repo>:<tag>`,
//! over TLS from the test CA, each manifest and blob under its own digest.
//!
//! Needs HAKUBE_TEST_REGISTRY, HAKUBE_TEST_REGISTRY_CA and HAKUBE_SRCBUILD_BIN.

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::Command;

const FLANNEL_IMAGES: [&str; 2] = [
    "ghcr.io/flannel-io/flannel:v0.28.10",
    "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3",
];

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is unset: run scripts/test-all, or tests/registry start DIR and export what it prints")
    })
}

struct Registry {
    addr: String,
    ca: String,
}

impl Registry {
    /// GET https://addr/v2/PATH with ACCEPT; the body and the digest header.
    fn get(&self, path: &str, accept: &str) -> (Vec<u8>, String) {
        let headers = tempfile::NamedTempFile::new().unwrap();
        let out = Command::new("curl")
            .args(["-fsS", "--cacert", &self.ca, "-H"])
            .arg(format!("Accept: {accept}"))
            .arg("-D")
            .arg(headers.path())
            .arg(format!("https://{}/v2/{path}", self.addr))
            .output()
            .expect("running curl");
        assert!(out.status.success(), "GET /v2/{path}: {out:?}");
        let head = std::fs::read_to_string(headers.path()).unwrap();
        let digest = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("docker-content-digest")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        (out.stdout, digest)
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn kubeadm_images() -> Vec<String> {
    let bin = PathBuf::from(env("HAKUBE_SRCBUILD_BIN"));
    let versions = std::fs::read_to_string(bin.join("versions")).unwrap();
    let k8s = versions
        .lines()
        .find_map(|l| l.strip_prefix("kubernetes\t"))
        .and_then(|l| l.split('\t').next())
        .expect("versions lists kubernetes")
        .to_string();
    let out = Command::new(bin.join("kubeadm"))
        .args(["config", "images", "list", "--kubernetes-version", &k8s])
        .output()
        .expect("running kubeadm");
    assert!(out.status.success(), "kubeadm config images list: {out:?}");
    let list: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        list.iter().any(|i| i.contains("/kube-apiserver:")),
        "{list:?}"
    );
    list
}

#[test]
fn the_registry_serves_every_cluster_image_under_its_digest() {
    let reg = Registry {
        addr: env("HAKUBE_TEST_REGISTRY"),
        ca: env("HAKUBE_TEST_REGISTRY_CA"),
    };
    let mut images = kubeadm_images();
    images.extend(FLANNEL_IMAGES.iter().map(|s| s.to_string()));
    for image in &images {
        let (name, tag) = image.rsplit_once(':').unwrap();
        let (body, digest) = reg.get(
            &format!("{name}/manifests/{tag}"),
            "application/vnd.oci.image.manifest.v1+json",
        );
        assert_eq!(sha256(&body), digest, "{image}: manifest digest");
        let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let config = &manifest["config"];
        let (cfg, _) = reg.get(
            &format!("{name}/blobs/{}", config["digest"].as_str().unwrap()),
            "*/*",
        );
        assert_eq!(
            sha256(&cfg),
            config["digest"].as_str().unwrap(),
            "{image}: config"
        );
        let cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
        assert_eq!(cfg["os"], "linux", "{image}");
        assert_eq!(cfg["architecture"], "amd64", "{image}");
        let layers = manifest["layers"].as_array().unwrap();
        assert!(!layers.is_empty(), "{image}: no layers");
        assert_eq!(
            layers.len(),
            cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
            "{image}: layers vs diff_ids"
        );
        // The last layer holds the component: fetch it whole.
        let last = layers.last().unwrap()["digest"].as_str().unwrap();
        let (blob, _) = reg.get(&format!("{name}/blobs/{last}"), "*/*");
        assert_eq!(sha256(&blob), last, "{image}: layer");
    }
}
