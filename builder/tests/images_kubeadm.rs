//! The images each node gets are the real kubeadm's list (by role) plus the
//! CNI manifest's images and the sandbox image; laid on a node, its
//! `images.json` holds exactly those, pinned. Needs the real kubeadm
//! (HAKUBE_SRCBUILD_BIN, srcbuild's binaries) and, for the pull, the test
//! registry holding the real images (HAKUBE_TEST_REGISTRY, HAKUBE_TEST_REGISTRY_CA).

#[path = "common/render.rs"]
mod render_support;
#[path = "common/srcbuild.rs"]
mod srcbuild;
use srcbuild::srcbuild_bin;

use hakube_build::artifacts::lock::Lock;
use hakube_build::images::Origin;
use hakube_build::images::{self, list::KubeadmBinary, source::RegistrySource};
use hakube_build::spec;
use hakube_node_profile::Role;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn kubeadm() -> PathBuf {
    srcbuild_bin("kubeadm")
}

/// The real kubeadm's plain-text list for the init node's config as `hakube-build render` writes it.
fn real_list(cluster_file: Option<&Path>, work: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = work.join("render");
    let (lock, cache) = (work.join("hakube.lock"), work.join("cache"));
    let cluster = spec::load(cluster_file).unwrap();
    if cluster.cni.as_str() == "calico" {
        render_support::pin_calico_fixture(&cluster, &lock, &cache);
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hakube-build"));
    cmd.arg("render")
        .arg("--out")
        .arg(&out)
        .arg("--state")
        .arg(work.join("state"))
        .arg("--lock")
        .arg(&lock)
        .arg("--cache-dir")
        .arg(&cache);
    if let Some(f) = cluster_file {
        cmd.arg("--cluster").arg(f);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "render: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let init = out.join(cluster.init_node().name.as_str());
    let o = Command::new(kubeadm())
        .args(["config", "images", "list", "--config"])
        .arg(init.join("etc/hakube/kubeadm/init.yaml"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "kubeadm: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let list = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    // The CNI manifest's images, read as text.
    let cni_file = std::fs::read_dir(init.join("etc/hakube/cni"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let cni = std::fs::read_to_string(cni_file.path())
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image:"))
        .map(|i| i.trim().trim_matches('"').to_string())
        .collect();
    (list, cni)
}

/// The images of every node of `cluster`, listed with the real kubeadm.
fn real_wanted(cluster: &spec::Cluster) -> BTreeMap<String, Vec<(images::ImageRef, Origin)>> {
    let k = kubeadm();
    images::wanted(
        cluster,
        &cluster.nodes,
        &KubeadmBinary { path: &k },
        &render_support::upstream(),
    )
    .unwrap()
}

/// The test registry holding the real images, as the mirror of `hosts`.
fn test_registry(hosts: &[&str]) -> RegistrySource {
    let reg = std::env::var("HAKUBE_TEST_REGISTRY").expect(
        "HAKUBE_TEST_REGISTRY=127.0.0.1:PORT must name the registry holding the real images",
    );
    let ca = std::env::var("HAKUBE_TEST_REGISTRY_CA")
        .expect("HAKUBE_TEST_REGISTRY_CA must name the test registry's CA (PEM)");
    let mirrors = hosts
        .iter()
        .map(|r| format!("{r}=https://{reg}/{r}").parse().unwrap())
        .collect();
    RegistrySource::new(mirrors, Some(Path::new(&ca))).unwrap()
}

fn normalise(i: &str) -> String {
    images::ImageRef::parse(i).unwrap().to_string()
}

fn check_roles(cluster_file: Option<&Path>) {
    let work = tempfile::tempdir().unwrap();
    let cluster = spec::load(cluster_file).unwrap();
    let (kubeadm_list, cni) = real_list(cluster_file, work.path());
    let wanted = real_wanted(&cluster);
    let pause = hakube_build::artifacts::catalog::pause_image(cluster.kubernetes_version);
    let control = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "etcd",
    ];
    for n in &cluster.nodes {
        let got: BTreeSet<String> = wanted[n.name.as_str()]
            .iter()
            .map(|(i, _)| i.to_string())
            .collect();
        let mut want: BTreeSet<String> = BTreeSet::new();
        match n.role {
            Role::Etcd => {}
            Role::Master => want.extend(kubeadm_list.iter().map(|i| normalise(i))),
            Role::Worker => want.extend(
                kubeadm_list
                    .iter()
                    .filter(|i| {
                        !control
                            .iter()
                            .any(|c| i.rsplit('/').next().unwrap().starts_with(&format!("{c}:")))
                    })
                    .map(|i| normalise(i)),
            ),
        }
        if n.role != Role::Etcd {
            want.extend(cni.iter().map(|i| normalise(i)));
            want.insert(normalise(&pause));
        }
        assert_eq!(got, want, "node {} ({:?})", n.name, n.role);
    }
}

#[test]
fn images_per_role_follow_the_real_kubeadm() {
    // Stacked etcd: the masters carry kubeadm's etcd image.
    check_roles(None);
}

#[test]
fn external_etcd_masters_carry_no_etcd_image() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/render/external-etcd.yaml");
    check_roles(Some(&f));
    let cluster = spec::load(Some(&f)).unwrap();
    let wanted = real_wanted(&cluster);
    for n in &cluster.nodes {
        let names: Vec<&str> = wanted[n.name.as_str()]
            .iter()
            .map(|(i, _)| i.basename())
            .collect();
        assert!(!names.contains(&"etcd"), "{}: {names:?}", n.name);
        if n.role == Role::Etcd {
            assert!(names.is_empty(), "{}: {names:?}", n.name);
        }
    }
}

/// Pulls the real images from the test registry and lays every node's out:
/// each node's images.json holds exactly what it runs, pinned.
#[test]
fn real_images_laid_on_each_node_match_the_list() {
    let work = tempfile::tempdir().unwrap();
    let cluster = spec::load(None).unwrap();
    let wanted = real_wanted(&cluster);
    let src = test_registry(&["registry.k8s.io", "ghcr.io", "docker.io", "quay.io"]);
    let lock_path = work.path().join("hakube.lock");
    let got =
        images::pull_all(&lock_path, &work.path().join("cache"), &src, wanted.clone()).unwrap();
    let lock = Lock::load(&lock_path).unwrap();
    for n in &cluster.nodes {
        let name = n.name.as_str();
        let stage = work.path().join(name);
        images::NodeLayout {
            needed: &got.nodes[name],
            pulled: got.for_node(name),
            lock: &lock,
            store: None,
        }
        .lay(&hakube_build::image::tools::HostRunner, name, &stage, 0)
        .unwrap();
        let want: BTreeSet<String> = wanted[name].iter().map(|(i, _)| i.to_string()).collect();
        let index = stage.join("lib/hakube/images/images.json");
        if want.is_empty() {
            assert!(!index.exists());
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
        let laid: BTreeSet<String> = v["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let image = i["image"].as_str().unwrap();
                assert_eq!(
                    i["amd64Digest"].as_str(),
                    lock.image(image).map(|p| p.amd64_digest.as_str()),
                    "{name}: {image}"
                );
                image.to_string()
            })
            .collect();
        assert_eq!(laid, want, "node {name}");
    }
}

/// calico's images are named in its manifest install, so every Kubernetes
/// node of a calico cluster needs them, and the pull refuses the build when
/// the registry lacks them, naming the node and the image (calico cannot be
/// built from source here, so the test registry has none of them).
#[test]
fn calico_images_are_needed_and_checked_like_any_other() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/render/external-etcd.yaml");
    let cluster = spec::load(Some(&f)).unwrap();
    let wanted = real_wanted(&cluster);
    let calico: BTreeSet<String> = ["cni", "kube-controllers", "node"]
        .iter()
        .map(|i| format!("quay.io/calico/{i}:v3.33.0"))
        .collect();
    for n in &cluster.nodes {
        let cni: BTreeSet<String> = wanted[n.name.as_str()]
            .iter()
            .filter(|(_, o)| *o == Origin::Cni)
            .map(|(i, _)| i.to_string())
            .collect();
        let want = if n.role == Role::Etcd {
            BTreeSet::new()
        } else {
            calico.clone()
        };
        assert_eq!(cni, want, "node {}", n.name);
    }
    let work = tempfile::tempdir().unwrap();
    let src = test_registry(&["registry.k8s.io", "quay.io"]);
    let err = images::pull_all(
        &work.path().join("hakube.lock"),
        &work.path().join("cache"),
        &src,
        wanted,
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert_eq!(hakube_build::errors::exit_code(&err), 2, "{msg}");
    assert!(
        msg.contains("needs image quay.io/calico/") && msg.contains("is missing"),
        "{msg}"
    );
}

/// `summary` lists each node's images once a build has pinned and cached
/// what lists them (the kubeadm of the artifact set and, for calico, its
/// manifest): the lists the build lays, digests still unknown. Before that
/// it says what is missing.
#[test]
fn summary_lists_each_nodes_images_once_their_sources_are_pinned() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/render/external-etcd.yaml");
    let cluster = spec::load(Some(&f)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let (lock, cache) = (work.path().join("hakube.lock"), work.path().join("cache"));
    let summary = || -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_hakube-build"))
            .args(["summary", "--json", "--cluster"])
            .arg(&f)
            .arg("--lock")
            .arg(&lock)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--state")
            .arg(work.path().join("state"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["containerImages"].clone()
    };
    let unknown = |v: serde_json::Value| v["unknown"].as_str().unwrap_or_default().to_string();
    assert!(
        unknown(summary()).contains("kubeadm v1.37.2"),
        "{}",
        summary()
    );
    let k = std::fs::read(kubeadm()).unwrap();
    render_support::pin_artifact(&cluster, "kubeadm", &k, "srcbuild", &lock, &cache);
    assert!(
        unknown(summary()).contains("calico's manifest"),
        "{}",
        summary()
    );
    render_support::pin_calico_fixture(&cluster, &lock, &cache);
    let listed = summary();
    for (node, want) in real_wanted(&cluster) {
        let got: Vec<(String, String)> = listed[node.as_str()]
            .as_array()
            .unwrap_or_else(|| panic!("{node}: {listed}"))
            .iter()
            .map(|i| {
                assert!(i["digest"].is_null(), "{i}");
                (
                    i["image"].as_str().unwrap().into(),
                    i["origin"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(i, o)| {
                (
                    i.to_string(),
                    serde_json::to_value(o).unwrap().as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(got, want, "node {node}");
    }
    assert!(!listed["master-1"].as_array().unwrap().is_empty());
}
