//! The real kubeadm (from `HAKUBE_SRCBUILD_BIN`) turns the rendered init
//! config into a kube-controller-manager static pod that can start on the
//! read-only root: the flexvolume directory is on /var, and every hostPath
//! outside the writable places is an existing directory mounted read-only.
//! (kubeadm before 1.36 mounted /usr/libexec/kubernetes/kubelet-plugins/volume/exec
//! as a DirectoryOrCreate hostPath unless flex-volume-plugin-dir was set;
//! kubernetes/kubeadm#2031.)

use hakube_build::render::{self, paths, JoinCredentials};
use hakube_build::spec;
use hakube_build::tree::FileEntry;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

fn kubeadm() -> PathBuf {
    let dir = std::env::var_os("HAKUBE_SRCBUILD_BIN").unwrap_or_else(|| {
        panic!(
            "HAKUBE_SRCBUILD_BIN is not set: it must name the directory holding the real kubeadm \
             (srcbuild/build prints it; /tmp/k8sbin has the lead's v1.37.2 build)"
        )
    });
    let k = Path::new(&dir).join("kubeadm");
    assert!(k.is_file(), "{} does not exist", k.display());
    k
}

/// Writable at runtime on a node: see the README's table of runtime paths.
const WRITABLE: [&str; 4] = ["/etc/", "/var/", "/run/", "/opt/cni/bin"];

#[test]
fn controller_manager_pod_needs_nothing_writable_on_the_read_only_root() {
    let kubeadm = kubeadm();
    let version = Command::new(&kubeadm)
        .args(["version", "-o", "short"])
        .output()
        .unwrap();
    assert!(version.status.success());
    let version = String::from_utf8(version.stdout)
        .unwrap()
        .trim()
        .to_string();

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/render/k8s-1.37.yaml");
    let cluster = spec::load(Some(&fixture)).unwrap();
    let creds = JoinCredentials {
        token: "abcdef.0123456789abcdef".into(),
        ca_cert_hash: format!("sha256:{}", "0f".repeat(32)),
        cluster_initialised: false,
    };
    let tree = render::config_tree(&cluster, cluster.init_node(), &creds).unwrap();
    let Some(FileEntry::File { contents, .. }) = tree.get(paths::KUBEADM_INIT) else {
        panic!("no init config");
    };
    // This kubeadm deploys only its own minor and the one before; the
    // manifest's volumes do not depend on the version rendered.
    let mut text = String::from_utf8(contents.clone()).unwrap();
    let rendered = format!("\"{}\"", cluster.kubernetes_version.tag());
    assert!(
        text.contains(&rendered),
        "{rendered} not in the init config"
    );
    text = text.replace(&rendered, &format!("\"{version}\""));

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("init.yaml");
    std::fs::write(&cfg, &text).unwrap();
    let out_dir = dir.path().join("dryrun");
    std::fs::create_dir(&out_dir).unwrap();
    let out = Command::new(&kubeadm)
        .args([
            "init",
            "phase",
            "control-plane",
            "controller-manager",
            "--dry-run",
            "--config",
        ])
        .arg(&cfg)
        .env("KUBEADM_INIT_DRYRUN_DIR", &out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubeadm {version} refused the rendered config:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = std::fs::read_to_string(out_dir.join("kube-controller-manager.yaml")).unwrap();
    let pod = serde_yaml_ng::Value::deserialize(serde_yaml_ng::Deserializer::from_str(&manifest))
        .unwrap();
    let container = &pod["spec"]["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        command.contains(&"--flex-volume-plugin-dir=/var/lib/kubelet/volumeplugins"),
        "{command:?}"
    );
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    for vol in pod["spec"]["volumes"].as_sequence().unwrap() {
        let name = vol["name"].as_str().unwrap();
        let path = vol["hostPath"]["path"].as_str().unwrap();
        if WRITABLE.iter().any(|w| path.starts_with(w)) {
            continue;
        }
        let mount = mounts
            .iter()
            .find(|m| m["name"].as_str() == Some(name))
            .unwrap();
        assert_eq!(
            mount["readOnly"].as_bool(),
            Some(true),
            "hostPath {path} ({name}) is on the read-only root but mounted writable:\n{manifest}"
        );
        // kubeadm mounts these only when they exist (isExtraVolumeMountNeeded);
        // the node's Debian root has them.
        assert!(
            [
                "/usr/share/ca-certificates",
                "/usr/local/share/ca-certificates"
            ]
            .contains(&path),
            "unexpected hostPath {path} on the read-only root:\n{manifest}"
        );
    }
}
