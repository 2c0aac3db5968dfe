//! The real kubeadm (`HAKUBE_SRCBUILD_BIN`) accepts every kubeadm
//! configuration render writes: `kubeadm config validate --config` (strict
//! decoding: unknown fields, API versions, version skew, every field's
//! validation) on every node of the default cluster, of every example and of
//! every golden-test spec.
//!
//! kubeadm deploys its own minor and the one before (kubeadm 1.37: control
//! planes >= 1.36). The init configuration of an older spec (1.35) is then
//! validated with its `kubernetesVersion` set to kubeadm's own, so every
//! other field still meets the real validation; the test says which.

mod realtools_support;

use realtools_support::{every_spec, in_skew, kubeadm_version, render, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `cfg`, or a copy whose control plane version this kubeadm deploys.
fn within_skew(cfg: &Path, kubeadm_version: &str, notes: &mut Vec<String>) -> PathBuf {
    let text = std::fs::read_to_string(cfg).unwrap();
    match in_skew(&text, kubeadm_version) {
        (_, None) => cfg.to_path_buf(),
        (copy, Some(note)) => {
            notes.push(format!("{}: {note}", cfg.display()));
            let path = cfg.with_extension("in-skew.yaml");
            std::fs::write(&path, copy).unwrap();
            path
        }
    }
}

#[test]
fn kubeadm_config_validate_accepts_every_rendered_config() {
    let kubeadm = tool("kubeadm");
    let version = kubeadm_version();
    let mut notes = Vec::new();
    let mut refused = Vec::new();
    let mut validated = 0;
    for spec in every_spec() {
        let work = tempfile::tempdir().unwrap();
        let nodes = render(&spec, work.path());
        let mut per_spec = 0;
        for node in &nodes {
            let wants = match node.role.as_str() {
                "master" | "worker" => vec![node.join_config()],
                _ => vec![],
            };
            let mut configs = wants.clone();
            if node.init_config().exists() {
                configs.push(node.init_config());
            }
            if node.kube_proxy_config().exists() {
                configs.push(node.kube_proxy_config());
            }
            for cfg in &wants {
                assert!(
                    cfg.is_file(),
                    "{}: {} has no {}",
                    spec.label,
                    node.name,
                    cfg.display()
                );
            }
            for cfg in configs {
                let cfg = within_skew(&cfg, &version, &mut notes);
                let out = Command::new(&kubeadm)
                    .args(["config", "validate", "--config"])
                    .arg(&cfg)
                    .output()
                    .expect("running kubeadm config validate");
                per_spec += 1;
                if !out.status.success() {
                    refused.push(format!(
                        "{} / {} / {}: exit {:?}\n{}{}",
                        spec.label,
                        node.name,
                        cfg.file_name().unwrap().to_string_lossy(),
                        out.status.code(),
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
        // Exactly one init configuration per cluster, on a master.
        let inits: Vec<_> = nodes.iter().filter(|n| n.init_config().exists()).collect();
        assert_eq!(inits.len(), 1, "{}: init nodes {inits:?}", spec.label);
        assert_eq!(inits[0].role, "master", "{}", spec.label);
        assert!(per_spec >= 2, "{}: only {per_spec} configs", spec.label);
        validated += per_spec;
    }
    assert!(
        refused.is_empty(),
        "kubeadm refused {} of {validated} rendered configs:\n\n{}",
        refused.len(),
        refused.join("\n")
    );
    for n in &notes {
        eprintln!("note: {n}");
    }
    eprintln!("kubeadm {version} config validate accepted {validated} rendered configs");
}
