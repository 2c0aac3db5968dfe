//! The real kubeadm (from `HAKUBE_SRCBUILD_BIN`) turns the rendered init
//! config, with the rendered patches, into the control plane's static pods
//! (`kubeadm init phase control-plane|etcd --dry-run`), and those pods are
//! checked:
//! - the kube-controller-manager can start on the read-only root: the
//!   flexvolume directory is on /var, and every hostPath outside the writable
//!   places is an existing directory mounted read-only (kubeadm before 1.36
//!   mounted /usr/libexec/kubernetes/kubelet-plugins/volume/exec as a
//!   DirectoryOrCreate hostPath unless flex-volume-plugin-dir was set;
//!   kubernetes/kubeadm#2031);
//! - every component's liveness probe carries hakube's threshold, its startup
//!   probe the length of the rendered health-check timeout, and everything
//!   else of kubeadm's probes is kept; the API server waits 10 s for etcd's
//!   health check.

#[path = "common/render.rs"]
mod render_support;
#[path = "common/srcbuild.rs"]
mod srcbuild;

use hakube_build::render::{self, paths, ETCD_CPU_REQUEST, LIVENESS_FAILURES};
use hakube_build::spec;
use hakube_build::tree::FileEntry;
use render_support::fixed_creds;
use serde::Deserialize;
use serde_yaml_ng::Value;
use srcbuild::srcbuild_bin;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writable at runtime on a node: see the README's table of runtime paths.
const WRITABLE: [&str; 4] = ["/etc/", "/var/", "/run/", "/opt/cni/bin"];

/// The rendered init config and patches of the init node of
/// `fixtures/render/k8s-1.37.yaml`, written into a temporary directory (the
/// patches directory pointed there, the version set to this kubeadm's own,
/// as it deploys only its own minor and the one before; the pods do not
/// depend on the version rendered), then kubeadm's dry run of `phase`
/// (e.g. `control-plane all`). Returns the directory holding the manifests.
struct DryRun {
    _dir: tempfile::TempDir,
    out: PathBuf,
}

fn dry_run(phase: &[&str]) -> DryRun {
    let kubeadm = srcbuild_bin("kubeadm");
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
    let creds = fixed_creds();
    let tree = render::config_tree(
        &cluster,
        cluster.init_node(),
        &creds,
        &render_support::upstream(),
    )
    .unwrap();
    let file = |path: &str| match tree.get(path) {
        Some(FileEntry::File { contents, .. }) => String::from_utf8(contents.clone()).unwrap(),
        _ => panic!("{path} is not in the init node's tree"),
    };
    let dir = tempfile::tempdir().unwrap();
    let patches = dir.path().join("patches");
    std::fs::create_dir(&patches).unwrap();
    for (name, _) in render::static_pod_patches(&cluster) {
        std::fs::write(patches.join(&name), file(&paths::kubeadm_patch(&name))).unwrap();
    }
    let mut text = file(paths::KUBEADM_INIT);
    let rendered = format!("\"{}\"", cluster.kubernetes_version.tag());
    assert!(
        text.contains(&rendered),
        "{rendered} not in the init config"
    );
    text = text.replace(&rendered, &format!("\"{version}\""));
    let dir_line = format!("directory: \"{}\"", render::PATCHES_DIR);
    assert!(
        text.contains(&dir_line),
        "{dir_line} not in the init config"
    );
    text = text.replace(&dir_line, &format!("directory: \"{}\"", patches.display()));

    let cfg = dir.path().join("init.yaml");
    std::fs::write(&cfg, &text).unwrap();
    let out = dir.path().join("dryrun");
    std::fs::create_dir(&out).unwrap();
    let run = Command::new(&kubeadm)
        .args(["init", "phase"])
        .args(phase)
        .args(["--dry-run", "--config"])
        .arg(&cfg)
        .env("KUBEADM_INIT_DRYRUN_DIR", &out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "kubeadm {version} refused the rendered config:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    DryRun { _dir: dir, out }
}

/// A container's command line, one flag per item.
fn command(container: &Value) -> Vec<&str> {
    container["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect()
}

fn pod(run: &DryRun, component: &str) -> (Value, String) {
    let path = run.out.join(format!("{component}.yaml"));
    let manifest = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("kubeadm wrote no {}: {e}", path.display()));
    let pod = Value::deserialize(serde_yaml_ng::Deserializer::from_str(&manifest)).unwrap();
    (pod, manifest)
}

#[test]
fn controller_manager_pod_needs_nothing_writable_on_the_read_only_root() {
    let run = dry_run(&["control-plane", "controller-manager"]);
    let (pod, manifest) = pod(&run, "kube-controller-manager");
    let container = &pod["spec"]["containers"][0];
    let command = command(container);
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

/// kubeadm's probes, with hakube's patches applied by kubeadm itself: the
/// thresholds are hakube's, and the rest (endpoint, port, scheme, period,
/// timeout) is still kubeadm's own, so a kubeadm release that changes its
/// probes is seen here, not at a node's first boot.
#[test]
fn control_plane_probes_carry_the_patched_thresholds() {
    let control_plane = dry_run(&["control-plane", "all"]);
    let etcd = dry_run(&["etcd", "local"]);
    // (pod, liveness endpoint, startup endpoint), as kubeadm writes them.
    let checks = [
        (&control_plane, "kube-apiserver", "/livez", "/livez"),
        (
            &control_plane,
            "kube-controller-manager",
            "/healthz",
            "/healthz",
        ),
        (&control_plane, "kube-scheduler", "/livez", "/livez"),
        (&etcd, "etcd", "/livez", "/readyz"),
    ];
    for (run, component, live, start) in checks {
        let (pod, manifest) = pod(run, component);
        let containers = pod["spec"]["containers"].as_sequence().unwrap();
        assert_eq!(containers.len(), 1, "{component}:\n{manifest}");
        let c = &containers[0];
        assert_eq!(c["name"].as_str(), Some(component), "{manifest}");
        // Startup: kubeadm sizes it from the rendered 10-minute
        // controlPlaneComponentHealthCheck (60 checks 10 s apart).
        for (probe, failures, path) in [
            ("livenessProbe", LIVENESS_FAILURES, live),
            ("startupProbe", 60, start),
        ] {
            let p = &c[probe];
            assert_eq!(
                p["failureThreshold"].as_u64(),
                Some(u64::from(failures)),
                "{component} {probe}:\n{manifest}"
            );
            assert!(
                p["httpGet"]["path"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(path)),
                "{component} {probe} lost kubeadm's endpoint {path}:\n{manifest}"
            );
            assert!(!p["httpGet"]["port"].is_null(), "{manifest}");
            assert!(p["periodSeconds"].as_u64().is_some(), "{manifest}");
            assert!(p["timeoutSeconds"].as_u64().is_some(), "{manifest}");
        }
        if component == "etcd" {
            // The CPU request is hakube's; the memory request kubeadm's.
            let req = &c["resources"]["requests"];
            assert_eq!(req["cpu"].as_str(), Some(ETCD_CPU_REQUEST), "{manifest}");
            assert!(req["memory"].as_str().is_some(), "{manifest}");
        }
        if component == "kube-apiserver" {
            let command = command(c);
            assert!(
                command.contains(&"--etcd-healthcheck-timeout=10s"),
                "{command:?}"
            );
            // Readiness is kubeadm's: haproxy's /readyz check and the
            // kubelet's readiness still react within seconds.
            let r = &c["readinessProbe"];
            assert!(r["failureThreshold"].as_u64().unwrap() < 10, "{manifest}");
        }
    }
}
