//! containerd's image store made at build (`images::store`) by the real
//! containerd built from source (the test mirror's release, HAKUBE_TEST_MIRROR)
//! for a worker's real images (the test registry, HAKUBE_TEST_REGISTRY): the
//! store is cached and reused, laid on the var stage with `images.json`
//! naming no archive, and a real containerd WITH its CRI plugin started on a
//! copy of the laid tree lists every image (crictl, HAKUBE_SRCBUILD_BIN) with
//! its image ID and `pinned: true`, its overlayfs snapshot chain committed.
//! Needs root (containerd's overlay and bind mounts).

#[path = "common/render.rs"]
mod render_support;
#[path = "common/srcbuild.rs"]
mod srcbuild;
use srcbuild::srcbuild_bin;

use hakube_build::artifacts::{self, lock::Lock, ResolvedArtifact, Source};
use hakube_build::image::tools::HostRunner;
use hakube_build::images::containerd::{self as ctrd, Daemon, Paths};
use hakube_build::images::{self, list::KubeadmBinary, source::RegistrySource, store};
use hakube_build::spec;
use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const NODE: &str = "worker-1";

fn test_registry() -> RegistrySource {
    let reg = std::env::var("HAKUBE_TEST_REGISTRY").expect(
        "HAKUBE_TEST_REGISTRY=127.0.0.1:PORT must name the registry holding the real images (source tests/test-env)",
    );
    let ca = std::env::var("HAKUBE_TEST_REGISTRY_CA")
        .expect("HAKUBE_TEST_REGISTRY_CA must name the test registry's CA (PEM)");
    let mirrors = ["registry.k8s.io", "ghcr.io", "docker.io", "quay.io"]
        .iter()
        .map(|r| format!("{r}=https://{reg}/{r}").parse().unwrap())
        .collect();
    RegistrySource::new(mirrors, Some(Path::new(&ca))).unwrap()
}

/// The containerd release of the default cluster's artifact set, from the test mirror.
fn containerd_release(cluster: &spec::Cluster, work: &Path) -> ResolvedArtifact {
    let mirror = std::env::var("HAKUBE_TEST_MIRROR").expect(
        "HAKUBE_TEST_MIRROR must name the mirror of the binaries built from source (source tests/test-env)",
    );
    let resolved = artifacts::resolve(&artifacts::Request {
        cluster,
        source: Source::Mirror(mirror),
        lock_path: work.join("hakube.lock"),
        cache_dir: work.join("cache"),
    })
    .unwrap();
    resolved.get("containerd").unwrap().clone()
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

fn char_devices(root: &Path) -> usize {
    walk(root)
        .iter()
        .filter(|r| {
            std::fs::symlink_metadata(root.join(r))
                .unwrap()
                .file_type()
                .is_char_device()
        })
        .count()
}

/// The node's containerd as the node runs it: CRI on, its own sockets and
/// CNI directories, nothing on the host's paths.
fn cri_config(p: &Paths, dir: &Path, sandbox: &str) -> String {
    format!(
        "version = 3\n\
         root = '{root}'\n\
         state = '{state}'\n\
         disabled_plugins = ['io.containerd.nri.v1.nri']\n\
         [grpc]\n  address = '{grpc}'\n\
         [ttrpc]\n  address = '{ttrpc}'\n\
         [plugins.'io.containerd.internal.v1.opt']\n  path = '{dir}/opt'\n\
         [plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = '{sandbox}'\n\
         [plugins.'io.containerd.cri.v1.runtime'.cni]\n  bin_dirs = ['{dir}/cni-bin']\n  conf_dir = '{dir}/cni-conf'\n",
        root = p.root.display(),
        state = p.state.display(),
        grpc = p.grpc.display(),
        ttrpc = p.ttrpc.display(),
        dir = dir.display(),
    )
}

#[test]
fn the_store_is_made_cached_laid_and_served_by_the_cri_as_pinned() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (containerd mounts snapshots to unpack layers)"
    );
    let work = tempfile::Builder::new()
        .prefix("hakube-store-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let w = work.path();
    let cluster = spec::load(None).unwrap();
    let containerd = containerd_release(&cluster, w);

    // The worker's real images: the real kubeadm's list, pulled and pinned.
    let worker = cluster.node(NODE).unwrap().clone();
    let kubeadm = srcbuild_bin("kubeadm");
    let wanted = images::wanted(
        &cluster,
        std::slice::from_ref(&worker),
        &KubeadmBinary { path: &kubeadm },
        &render_support::upstream(),
    )
    .unwrap();
    let lock_path = w.join("hakube.lock");
    let cache = w.join("cache");
    let got = images::pull_all(&lock_path, &cache, &test_registry(), wanted).unwrap();
    let lock = Lock::load(&lock_path).unwrap();
    let pulled = got.for_node(NODE);
    assert!(pulled.len() >= 2, "{pulled:?}");
    images::check_pulled(NODE, &got.nodes[NODE], &pulled, &lock).unwrap();

    // Cold: made by the real containerd; warm: the cache entry, untouched.
    let t = Instant::now();
    let made = store::ensure(&cache, &containerd, &pulled).unwrap();
    let cold = t.elapsed();
    assert!(!made.cache_hit);
    let t = Instant::now();
    let again = store::ensure(&cache, &containerd, &pulled).unwrap();
    let warm = t.elapsed();
    assert!(again.cache_hit);
    assert_eq!(again.root, made.root);
    assert_eq!(again.meta, made.meta);
    eprintln!(
        "images_store: {} images, {} snapshots, {} MiB; cold {:.1}s, warm {:.3}s",
        made.meta.images.len(),
        made.meta.snapshots,
        made.size().unwrap() >> 20,
        cold.as_secs_f64(),
        warm.as_secs_f64()
    );
    let entries: Vec<String> = std::fs::read_dir(cache.join("containerd-store"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries,
        std::slice::from_ref(&made.meta.key),
        "only the complete entry"
    );
    for gone in ["tmpmounts", "io.containerd.grpc.v1.introspection/uuid"] {
        assert!(!made.root.join(gone).exists(), "{gone} left in the store");
    }
    for (i, p) in made.meta.images.iter().zip(&pulled) {
        assert_eq!(i.image, p.image.to_string());
        assert_eq!(i.amd64_digest, p.amd64_digest());
    }

    // Laid on the var stage: images.json without archives, the store copied whole.
    let stage = w.join("var-stage");
    images::NodeLayout {
        needed: &got.nodes[NODE],
        pulled: pulled.clone(),
        lock: &lock,
        store: Some(&made),
    }
    .lay(&HostRunner, NODE, &stage, 1_700_000_000)
    .unwrap();
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(stage.join("lib/hakube/images/images.json")).unwrap(),
    )
    .unwrap();
    for i in index["images"].as_array().unwrap() {
        assert!(i.get("archive").is_none(), "{i}");
    }
    let laid_files: Vec<_> = std::fs::read_dir(stage.join("lib/hakube/images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(laid_files, ["images.json"]);
    let laid = stage.join(store::VAR_DIR);
    assert_eq!(walk(&laid), walk(&made.root));
    assert_eq!(char_devices(&laid), char_devices(&made.root));

    // The node's containerd, CRI on, on a copy of the laid tree.
    let node = w.join("node");
    std::fs::create_dir_all(&node).unwrap();
    let paths = Paths {
        root: node.join("root"),
        ..Paths::under(&node)
    };
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&laid)
        .arg(&paths.root)
        .status()
        .unwrap();
    assert!(cp.success());
    for d in ["cni-bin", "cni-conf", "opt"] {
        std::fs::create_dir_all(node.join(d)).unwrap();
    }
    let bins = ctrd::extract(&containerd, &w.join("bin")).unwrap();
    let sandbox = artifacts::catalog::pause_image(cluster.kubernetes_version);
    let daemon = Daemon::start_with(&bins, paths.clone(), &cri_config(&paths, &node, &sandbox))
        .unwrap_or_else(|e| panic!("containerd with its CRI plugin did not start: {e:#}"));
    let crictl = srcbuild_bin("crictl");
    let out = Command::new(&crictl)
        .arg("--runtime-endpoint")
        .arg(format!("unix://{}", paths.grpc.display()))
        .args(["images", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "crictl images: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log_tail()
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("images_store: crictl images: {listed}");
    let by_tag: BTreeMap<String, &serde_json::Value> = listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            i["repoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (t.as_str().unwrap().to_string(), i))
        })
        .collect();
    for p in &pulled {
        let name = p.image.to_string();
        let i = by_tag
            .get(&name)
            .unwrap_or_else(|| panic!("the CRI does not list {name}: {listed}"));
        assert_eq!(
            i["id"].as_str(),
            Some(p.config.digest.as_str()),
            "{name}: {i}"
        );
        assert_eq!(i["pinned"], true, "{name} is not pinned: {i}");
        let digests: Vec<&str> = i["repoDigests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str())
            .collect();
        for d in &digests {
            assert!(d.ends_with(p.amd64_digest()), "{name}: {d}");
        }
    }
    // Every image's snapshot chain is there, committed, for overlayfs.
    let snaps = daemon.snapshots().unwrap();
    for s in &made.meta.images {
        let mut key = Some(s.chain_id.clone());
        let mut depth = 0;
        while let Some(k) = key {
            let snap = snaps
                .iter()
                .find(|x| x.key == k)
                .unwrap_or_else(|| panic!("{}: snapshot {k} missing: {snaps:?}", s.image));
            assert_eq!(snap.kind, "Committed", "{}: {snap:?}", s.image);
            key = snap.parent.clone();
            depth += 1;
        }
        assert!(depth >= 1);
    }
    daemon.stop().unwrap();
}
