//! The rendered kubeadm configuration read by the real kubeadm (built from
//! source, `HAKUBE_SRCBUILD_BIN`): `kubeadm config validate` accepts every
//! document, and `kubeadm config images list` names exactly the images the
//! catalogue pins (CoreDNS, pause and etcd at kubeadm's own versions).
//!
//! kubeadm deploys only its own minor and the one before it, so each golden
//! fixture is checked by the kubeadm of its minor; the default's minor is
//! always built.

#[path = "common/render.rs"]
mod render_support;
#[path = "common/srcbuild.rs"]
mod srcbuild;
use render_support::fixed_creds;
use srcbuild::srcbuild_bin;

use hakube_build::artifacts::catalog;
use hakube_build::render::{self, paths};
use hakube_build::spec::{self, Cluster};
use hakube_build::tree::FileEntry;
use std::path::{Path, PathBuf};
use std::process::Command;

fn kubeadm() -> PathBuf {
    srcbuild_bin("kubeadm")
}

fn load(name: &str) -> Cluster {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/render")
        .join(name);
    spec::load(Some(&p)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn rendered(c: &Cluster, node: &str, path: &str) -> String {
    let creds = fixed_creds();
    let tree = render::config_tree(
        c,
        c.node(node).unwrap(),
        &creds,
        &render_support::upstream(),
    )
    .unwrap();
    match tree.get(path) {
        Some(FileEntry::File { contents, .. }) => String::from_utf8(contents.clone()).unwrap(),
        other => panic!("{node}:{path}: {other:?}"),
    }
}

fn run(kubeadm: &Path, args: &[&str], file: &Path) -> (bool, String, String) {
    let out = Command::new(kubeadm)
        .args(args)
        .arg("--config")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", kubeadm.display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn real_kubeadm_validates_the_configs_and_lists_the_catalogue_images() {
    let kubeadm = kubeadm();
    let version = Command::new(&kubeadm)
        .args(["version", "-o", "short"])
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for fixture in [
        "k8s-1.35.yaml",
        "k8s-1.37.yaml",
        "external-etcd.yaml",
        "dns-nolb.yaml",
    ] {
        let c = load(fixture);
        if !version.starts_with(&format!("v1.{}.", c.kubernetes_version.minor)) {
            continue;
        }
        let init_node = c.init_node().name.to_string();
        let init = dir.path().join("init.yaml");
        std::fs::write(&init, rendered(&c, &init_node, paths::KUBEADM_INIT)).unwrap();
        let (ok, out, err) = run(&kubeadm, &["config", "validate"], &init);
        assert!(
            ok,
            "{fixture}: kubeadm {version} config validate:\n{out}{err}"
        );
        assert!(
            !err.to_ascii_lowercase().contains("deprecated"),
            "{fixture}: {err}"
        );
        let (ok, out, err) = run(&kubeadm, &["config", "images", "list"], &init);
        assert!(ok, "{fixture}: kubeadm config images list:\n{out}{err}");
        let listed: Vec<&str> = out.lines().collect();
        assert_eq!(
            listed,
            catalog::kubeadm_images(c.kubernetes_version, c.etcd_topology),
            "{fixture}: kubeadm {version} lists other images than the catalogue pins"
        );
        for node in c
            .nodes
            .iter()
            .filter(|n| n.role != hakube_node_profile::Role::Etcd)
        {
            let join = dir.path().join("join.yaml");
            std::fs::write(&join, rendered(&c, node.name.as_str(), paths::KUBEADM_JOIN)).unwrap();
            let (ok, out, err) = run(&kubeadm, &["config", "validate"], &join);
            assert!(ok, "{fixture}:{}: join config:\n{out}{err}", node.name);
        }
        checked += 1;
    }
    assert!(
        checked >= 2,
        "kubeadm {version} checked only {checked} fixtures: the default minor's fixtures must be among them"
    );
}
