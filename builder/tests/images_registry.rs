//! Container images against a real local registry (Debian's docker-registry
//! with TLS, started here): pull and pin through a mirror, an offline
//! rebuild from the cache with the registry stopped, a tampered blob, a
//! missing image and a moved tag refused with exit code 2 naming the node
//! and the image, an OCI layout as source, and the archives laid on a node,
//! imported by first boot's own code into a CRI-O image store with the real
//! skopeo.

mod images_support;

use hakube_build::artifacts::lock::Lock;
use hakube_build::errors::exit_code;
use hakube_build::images::source::{ImageSource, LayoutSource, Mirror, RegistrySource};
use hakube_build::images::{self, ImageRef, Origin};
use images_support::{make_layout, run, Registry};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const PAUSE: &str = "registry.k8s.io/pause:3.10.2";
const FLANNEL: &str = "ghcr.io/flannel-io/flannel:v0.28.10";

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

fn source(reg: &Registry) -> RegistrySource {
    let mirrors: Vec<Mirror> = ["registry.k8s.io", "ghcr.io"]
        .iter()
        .map(|h| reg.mirror_for(h).parse().unwrap())
        .collect();
    RegistrySource::new(mirrors, Some(&reg.ca)).unwrap()
}

fn wanted(extra: &[&str]) -> BTreeMap<String, Vec<(ImageRef, Origin)>> {
    let mut w = BTreeMap::new();
    w.insert(
        "master-1".to_string(),
        vec![(r(FLANNEL), Origin::Cni), (r(PAUSE), Origin::Sandbox)],
    );
    let mut worker = vec![(r(PAUSE), Origin::Sandbox)];
    worker.extend(extra.iter().map(|e| (r(e), Origin::Kubeadm)));
    w.insert("worker-1".to_string(), worker);
    w
}

/// Pushes the two test images; returns (pause index digest, pause amd64 digest, pause amd64 layer).
fn push_images(reg: &Registry, work: &Path) -> (String, String, String) {
    let layout = work.join("layout");
    let pause = make_layout(&layout, "pause", "pause");
    make_layout(&layout, "flannel", "flannel");
    reg.push(&layout, "pause", "registry.k8s.io/pause:3.10.2");
    reg.push(&layout, "flannel", "ghcr.io/flannel-io/flannel:v0.28.10");
    pause
}

fn cached_files(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.join("artifacts/sha256"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn pull_pin_lay_out_and_rebuild_offline() {
    let work = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&work.path().join("registry"));
    let (pause_index, pause_amd64, pause_layer) = push_images(&reg, work.path());
    let lock_path = work.path().join("hakube.lock");
    let cache = work.path().join("cache");

    let got = images::pull_all(&lock_path, &cache, &source(&reg), wanted(&[])).unwrap();

    // Pinned: the index the tag names, the amd64 manifest chosen from it, where from.
    let lock = Lock::load(&lock_path).unwrap();
    let pin = lock.image(PAUSE).expect("pause pinned");
    assert_eq!(pin.digest, pause_index);
    assert_eq!(pin.amd64_digest, pause_amd64);
    assert_eq!(
        pin.pinned_from,
        format!("https://{}/registry.k8s.io/pause", reg.host())
    );
    assert!(lock.image(FLANNEL).is_some());
    let lock_text = std::fs::read_to_string(&lock_path).unwrap();
    assert!(lock_text.contains("\"images\""), "{lock_text}");
    // Only linux/amd64 content was fetched: index + manifest + config + layer per image.
    let files = cached_files(&cache);
    assert_eq!(files.len(), 8, "{files:?}");
    assert!(files.contains(&pause_layer.trim_start_matches("sha256:").to_string()));
    // Per node, with the pins.
    let worker = &got.nodes["worker-1"];
    assert_eq!(worker.len(), 1);
    assert_eq!(worker[0].digest, pause_index);
    assert_eq!(worker[0].amd64_digest, pause_amd64);

    // Laid on a node's var partition: archives + images.json, complete.
    let stage = work.path().join("var-stage");
    images::NodeLayout {
        needed: &got.nodes["master-1"],
        pulled: got.for_node("master-1"),
        lock: &lock,
        store: None,
    }
    .lay(
        &hakube_build::image::tools::HostRunner,
        "master-1",
        &stage,
        1_700_000_000,
    )
    .unwrap();
    let dir = stage.join("lib/hakube/images");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("images.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    assert_eq!(names, [FLANNEL, PAUSE]);
    let archive = dir.join("registry.k8s.io_pause_3.10.2.tar");
    let listing = run(Command::new("tar").arg("-tf").arg(&archive));
    let mut entries: Vec<&str> = listing.lines().collect();
    entries.sort();
    assert_eq!(entries.len(), 7, "{entries:?}"); // 2 dirs, 3 blobs, index.json, oci-layout
    assert!(entries.contains(&"index.json") && entries.contains(&"oci-layout"));
    // A real OCI reader takes the archive and finds the amd64 manifest under the image's name.
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}:{PAUSE}", archive.display())));
    assert_eq!(images_support::sha256(raw.as_bytes()), pause_amd64);
    // Deterministic: laying it out again gives the same bytes.
    let again = work.path().join("var-stage-2");
    images::NodeLayout {
        needed: &got.nodes["master-1"],
        pulled: got.for_node("master-1"),
        lock: &lock,
        store: None,
    }
    .lay(
        &hakube_build::image::tools::HostRunner,
        "master-1",
        &again,
        1_700_000_000,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(again.join("lib/hakube/images/registry.k8s.io_pause_3.10.2.tar")).unwrap()
    );

    // Offline: with the registry gone, a warm rebuild needs no request.
    reg.stop();
    let warm = images::pull_all(&lock_path, &cache, &source(&reg), wanted(&[])).unwrap();
    assert_eq!(warm.nodes, got.nodes);
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), lock_text);
    // ... and a cold one cannot.
    let cold = images::pull_all(
        &lock_path,
        &work.path().join("cold"),
        &source(&reg),
        wanted(&[]),
    );
    assert!(cold.is_err());
}

/// Unmounts what containers/storage's overlay driver leaves mounted (it
/// bind-mounts its `overlay` directory onto itself) when the test ends.
struct StoreMounts(std::path::PathBuf);

impl Drop for StoreMounts {
    fn drop(&mut self) {
        let overlay = self.0.join("overlay");
        let _ = Command::new("umount").arg(&overlay).status();
    }
}

#[test]
fn first_boot_imports_the_laid_archives_into_a_cri_o_store() {
    use hakube_firstboot::steps::ready_node_images;
    use hakube_firstboot::system::ProcessRunner;
    use hakube_node_profile::{crio_store, Runtime};

    let work = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&work.path().join("registry"));
    let (_, pause_amd64, _) = push_images(&reg, work.path());
    let lock_path = work.path().join("hakube.lock");
    let got = images::pull_all(
        &lock_path,
        &work.path().join("cache"),
        &source(&reg),
        wanted(&[]),
    )
    .unwrap();
    reg.stop();
    let lock = Lock::load(&lock_path).unwrap();
    // The node's root: its var partition at var/, the store under it.
    let root = work.path().join("node");
    images::NodeLayout {
        needed: &got.nodes["master-1"],
        pulled: got.for_node("master-1"),
        lock: &lock,
        store: None,
    }
    .lay(
        &hakube_build::image::tools::HostRunner,
        "master-1",
        &root.join("var"),
        1_700_000_000,
    )
    .unwrap();
    let store = root.join(crio_store::ROOT.trim_start_matches('/'));
    let _mounts = StoreMounts(store.clone());

    let first = ready_node_images(&root, &ProcessRunner, "master-1", Runtime::CriO).unwrap();
    assert_eq!(
        first,
        "2 images present in CRI-O's image store (2 imported)"
    );
    // What CRI-O would find: the image under its name, the pinned digest.
    let reference = format!(
        "containers-storage:[{}@{}+{}]{PAUSE}",
        crio_store::DRIVER,
        store.display(),
        root.join(crio_store::RUNROOT.trim_start_matches('/'))
            .display()
    );
    let inspect = run(Command::new("skopeo").arg("inspect").arg(&reference));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], pause_amd64.as_str(), "{inspect}");
    assert_eq!(v["Name"], "registry.k8s.io/pause", "{inspect}");
    // A resumed first boot imports nothing twice.
    let again = ready_node_images(&root, &ProcessRunner, "master-1", Runtime::CriO).unwrap();
    assert_eq!(
        again,
        "2 images present in CRI-O's image store (0 imported)"
    );

    // An index whose digest the archive does not have: imported, then refused.
    let index_path = root.join("var/lib/hakube/images/images.json");
    let text = std::fs::read_to_string(&index_path).unwrap();
    let wrong = format!("sha256:{}", "0".repeat(64));
    std::fs::write(&index_path, text.replace(&pause_amd64, &wrong)).unwrap();
    let err = ready_node_images(&root, &ProcessRunner, "master-1", Runtime::CriO).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "CRI-O's image store has image {PAUSE} with digest {pause_amd64}, the disk's archive has {wrong}"
        )),
        "{msg}"
    );
}

#[test]
fn tampered_blob_is_refused_and_not_cached() {
    let work = tempfile::tempdir().unwrap();
    let reg = Registry::start(&work.path().join("registry"));
    let (_, _, layer) = push_images(&reg, work.path());
    // Same length, other bytes: only the digest can tell.
    let f = reg.blob_file(&layer);
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&f, &bytes).unwrap();

    let cache = work.path().join("cache");
    let err = images::pull_all(
        &work.path().join("hakube.lock"),
        &cache,
        &source(&reg),
        wanted(&[]),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert_eq!(exit_code(&err), 2, "{msg}");
    assert!(
        msg.contains("nodes master-1, worker-1 needs image registry.k8s.io/pause:3.10.2"),
        "{msg}"
    );
    assert!(msg.contains(&layer), "{msg}");
    let hex = layer.trim_start_matches("sha256:");
    assert!(!cached_files(&cache)
        .iter()
        .any(|f| f == hex || f.starts_with(".partial")));
}

#[test]
fn missing_image_is_refused_naming_node_and_image() {
    let work = tempfile::tempdir().unwrap();
    let reg = Registry::start(&work.path().join("registry"));
    push_images(&reg, work.path());
    let err = images::pull_all(
        &work.path().join("hakube.lock"),
        &work.path().join("cache"),
        &source(&reg),
        wanted(&["registry.k8s.io/kube-proxy:v1.37.2"]),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert_eq!(exit_code(&err), 2, "{msg}");
    assert!(
        msg.contains("node worker-1 needs image registry.k8s.io/kube-proxy:v1.37.2")
            && msg.contains("is missing"),
        "{msg}"
    );
}

#[test]
fn a_tag_that_moved_from_its_pin_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let reg = Registry::start(&work.path().join("registry"));
    push_images(&reg, work.path());
    let lock = work.path().join("hakube.lock");
    images::pull_all(
        &lock,
        &work.path().join("cache"),
        &source(&reg),
        wanted(&[]),
    )
    .unwrap();
    // Someone re-publishes the tag with other content.
    let other = work.path().join("other");
    make_layout(&other, "pause", "another pause");
    reg.push(&other, "pause", "registry.k8s.io/pause:3.10.2");
    let err = images::pull_all(
        &lock,
        &work.path().join("cache-2"),
        &source(&reg),
        wanted(&[]),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert_eq!(exit_code(&err), 2, "{msg}");
    assert!(
        msg.contains("refusing image registry.k8s.io/pause:3.10.2") && msg.contains("pins"),
        "{msg}"
    );
}

#[test]
fn an_oci_layout_directory_is_a_source() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let (index, amd64, _) = make_layout(&layout, PAUSE, "pause");
    make_layout(&layout, FLANNEL, "flannel");
    let src = LayoutSource::new(&layout).unwrap();
    assert_eq!(
        src.origin(&r(PAUSE)),
        format!("oci-layout:{}", layout.display())
    );
    let lock = work.path().join("hakube.lock");
    let got = images::pull_all(&lock, &work.path().join("cache"), &src, wanted(&[])).unwrap();
    assert_eq!(got.nodes["worker-1"][0].digest, index);
    assert_eq!(
        Lock::load(&lock)
            .unwrap()
            .image(PAUSE)
            .unwrap()
            .amd64_digest,
        amd64
    );
    let err = images::pull_all(
        &lock,
        &work.path().join("cache"),
        &src,
        wanted(&["registry.k8s.io/etcd:3.7.0-0"]),
    )
    .unwrap_err();
    assert_eq!(exit_code(&err), 2);
}
