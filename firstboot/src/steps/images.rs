//! Container images baked into the disk, so the node needs no registry
//! (kubeadm's `IfNotPresent` pull policy then finds every image present and
//! pulls nothing).
//!
//! hakube-build writes `/var/lib/hakube/images/images.json` naming each image
//! the node runs and its linux/amd64 manifest digest.
//!
//! containerd: the images are in containerd's own store on the disk already
//! (`/var/lib/containerd`, namespace `k8s.io`, made at build by this node's
//! containerd; builder/src/images/store.rs). First boot imports nothing: it
//! checks that `ctr images ls` lists every image with its digest and the
//! `io.cri-containerd.pinned=pinned` label (the kubelet's image garbage
//! collector never removes a pinned image). An image missing cannot be
//! repaired here: the disk carries no archive and the node has no registry;
//! the step fails naming it.
//!
//! CRI-O: one OCI archive per image beside `images.json`, imported with
//! `skopeo copy --preserve-digests oci-archive:… containers-storage:[…]IMAGE`
//! into the store hakube's CRI-O drop-in names (`hakube_node_profile::crio_store`),
//! then `skopeo inspect` must report every image with its digest. (CRI-O's
//! store is not made at build: CRI-O cannot be built or booted where hakube
//! is tested, so a baked store could not be checked against it.)

use super::{under, Ctx};
use crate::system::{run_checked, Cmd, CommandRunner};
use anyhow::{bail, Context, Result};
use hakube_node_profile::{crio_store, Runtime};
use std::collections::BTreeMap;
use std::path::Path;

/// Written by hakube-build (builder/src/images/archive.rs).
pub const IMAGES_DIR: &str = "/var/lib/hakube/images";
pub const IMAGES_INDEX: &str = "/var/lib/hakube/images/images.json";

/// The label containerd's CRI reads as pinned (hakube-build sets it).
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned=pinned";

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    node: String,
    images: Vec<Entry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    image: String,
    amd64_digest: String,
    /// None on a containerd node: the image is in the store already.
    #[serde(default)]
    archive: Option<String>,
}

/// One image as `ctr images ls` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtrImage {
    pub digest: String,
    pub pinned: bool,
}

/// `ctr images ls` lines: `REF TYPE DIGEST SIZE PLATFORMS LABELS` (SIZE holds
/// a space, LABELS is `-` or `k=v,k=v`); ref -> digest and pinned.
pub fn parse_ctr_images(text: &str) -> BTreeMap<String, CtrImage> {
    text.lines()
        .skip_while(|l| l.starts_with("REF"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let digest = f.iter().find(|x| x.starts_with("sha256:"))?;
            let labels = f.last().copied().unwrap_or("-");
            let pinned = labels.split(',').any(|kv| kv == PINNED_LABEL);
            Some((
                f.first()?.to_string(),
                CtrImage {
                    digest: digest.to_string(),
                    pinned,
                },
            ))
        })
        .collect()
}

fn ctr(args: &[&str]) -> Cmd {
    Cmd::new("ctr")
        .args(["--namespace", "k8s.io"])
        .args(args.iter().copied())
}

pub fn container_images(ctx: &mut Ctx) -> Result<String> {
    ready_node_images(
        &ctx.env.root,
        ctx.env.cmd,
        &ctx.profile.node_name,
        ctx.profile.runtime,
    )
}

/// What the runtime holds of the disk's images, checked live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagesReport {
    pub store: &'static str,
    /// Images `images.json` lists.
    pub images: usize,
    /// One line per image that is missing, has another digest or is not pinned.
    pub problems: Vec<String>,
}

impl ImagesReport {
    pub fn summary(&self) -> String {
        if self.problems.is_empty() {
            format!("{} images present in {}", self.images, self.store)
        } else {
            format!(
                "{} of {} images not right in {}: {}",
                self.problems.len(),
                self.images,
                self.store,
                self.problems.join("; ")
            )
        }
    }
}

fn read_index(root: &Path, node: &str) -> Result<Option<Index>> {
    let path = under(root, IMAGES_INDEX);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let index: Index =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    if index.node != node {
        bail!(
            "{} lists the images of node {}, but this is node {node}: the disk was assembled wrongly; rebuild it",
            path.display(),
            index.node,
        );
    }
    Ok(Some(index))
}

/// Checks the runtime holds every image of the disk's `images.json` (for
/// `status` and `health`, and the containerd step); `None` without an index.
pub fn check_node_images(
    root: &Path,
    cmd: &dyn CommandRunner,
    node: &str,
    runtime: Runtime,
) -> Result<Option<ImagesReport>> {
    let Some(index) = read_index(root, node)? else {
        return Ok(None);
    };
    Ok(Some(match runtime {
        Runtime::Containerd => containerd_report(cmd, &index)?,
        Runtime::CriO => {
            let store = CrioStorage { cmd, root };
            let names: Vec<&str> = index.images.iter().map(|e| e.image.as_str()).collect();
            let have = store.digests(&names)?;
            let problems = index
                .images
                .iter()
                .filter_map(|e| match have.get(&e.image) {
                    Some(d) if *d == e.amd64_digest => None,
                    Some(d) => Some(format!(
                        "{} has digest {d}, not {}",
                        e.image, e.amd64_digest
                    )),
                    None => Some(format!("{} is missing", e.image)),
                })
                .collect();
            ImagesReport {
                store: store.name(),
                images: index.images.len(),
                problems,
            }
        }
    }))
}

fn containerd_report(cmd: &dyn CommandRunner, index: &Index) -> Result<ImagesReport> {
    let listing = run_checked(cmd, &ctr(&["images", "ls"]))?.stdout;
    let have = parse_ctr_images(&listing);
    let problems = index
        .images
        .iter()
        .filter_map(|e| match have.get(&e.image) {
            None => Some(format!("{} is missing", e.image)),
            Some(i) if i.digest != e.amd64_digest => Some(format!(
                "{} has digest {}, not {}",
                e.image, i.digest, e.amd64_digest
            )),
            Some(i) if !i.pinned => Some(format!("{} is not labelled {PINNED_LABEL}", e.image)),
            Some(_) => None,
        })
        .collect();
    Ok(ImagesReport {
        store: "containerd",
        images: index.images.len(),
        problems,
    })
}

/// Makes sure `runtime` holds every image the disk carries for `node`:
/// containerd's store was made at build and is only checked; CRI-O's is
/// filled from the archives, then checked. Paths are the node's, resolved
/// under `root`.
pub fn ready_node_images(
    root: &Path,
    cmd: &dyn CommandRunner,
    node: &str,
    runtime: Runtime,
) -> Result<String> {
    // hakube-build refuses to build a node without the images it runs, so
    // no index means a disk assembled by other means: say so, pull later.
    let Some(index) = read_index(root, node)? else {
        return Ok(format!(
            "skipped: no {IMAGES_INDEX}; the runtime will pull images from registries"
        ));
    };
    match runtime {
        Runtime::Containerd => {
            let report = containerd_report(cmd, &index)?;
            if !report.problems.is_empty() {
                bail!(
                    "containerd's image store on this disk does not hold what {IMAGES_INDEX} lists: {}. \
                     The disk carries no archive to import them from and the node has no registry: \
                     rebuild the node's image with hakube-build",
                    report.problems.join("; ")
                );
            }
            Ok(format!(
                "{} images present in containerd, pinned (made at build; none imported)",
                report.images
            ))
        }
        Runtime::CriO => import_crio(root, cmd, &index),
    }
}

fn import_crio(root: &Path, cmd: &dyn CommandRunner, index: &Index) -> Result<String> {
    let store = CrioStorage { cmd, root };
    let names: Vec<&str> = index.images.iter().map(|e| e.image.as_str()).collect();
    let present = store.digests(&names)?;
    let mut imported = 0;
    for e in &index.images {
        if present.get(&e.image) == Some(&e.amd64_digest) {
            continue;
        }
        let Some(name) = &e.archive else {
            bail!(
                "{IMAGES_INDEX} names no archive for image {}, which {} lacks: the disk was built for containerd; rebuild it",
                e.image,
                store.name()
            );
        };
        let archive = under(root, &format!("{IMAGES_DIR}/{name}"));
        store
            .import(&archive, &e.image)
            .with_context(|| format!("importing image {} from {}", e.image, archive.display()))?;
        imported += 1;
    }
    let now = store.digests(&names)?;
    for e in &index.images {
        match now.get(&e.image) {
            Some(d) if *d == e.amd64_digest => {}
            Some(d) => bail!(
                "{} has image {} with digest {d}, the disk's archive has {}",
                store.name(),
                e.image,
                e.amd64_digest
            ),
            None => bail!(
                "{} does not list image {} after importing it",
                store.name(),
                e.image
            ),
        }
    }
    Ok(format!(
        "{} images present in {} ({imported} imported)",
        index.images.len(),
        store.name()
    ))
}

/// CRI-O's containers/storage, named in full so that skopeo and CRI-O agree
/// whatever `/etc/containers/storage.conf` says.
struct CrioStorage<'a> {
    cmd: &'a dyn CommandRunner,
    root: &'a Path,
}

impl CrioStorage<'_> {
    fn name(&self) -> &'static str {
        "CRI-O's image store"
    }

    fn reference(&self, image: &str) -> String {
        format!(
            "containers-storage:[{}@{}+{}]{image}",
            crio_store::DRIVER,
            under(self.root, crio_store::ROOT).display(),
            under(self.root, crio_store::RUNROOT).display()
        )
    }

    /// The manifest digest the store holds under each of `images` it has.
    fn digests(&self, images: &[&str]) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for image in images {
            let inspect = Cmd::new("skopeo").arg("inspect").arg(self.reference(image));
            let answer = self.cmd.run(&inspect)?;
            if !answer.success() {
                // "identifier is not an image": not there yet. Anything else
                // shows again, in skopeo's words, when the import fails.
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&answer.stdout)
                .with_context(|| format!("reading `{}`'s answer", inspect.line()))?;
            if let Some(d) = v["Digest"].as_str() {
                out.insert(image.to_string(), d.to_string());
            }
        }
        Ok(out)
    }

    fn import(&self, archive: &Path, image: &str) -> Result<()> {
        // --preserve-digests: the stored manifest is the archive's, byte for
        // byte, so the store reports the digest hakube-build pinned.
        let copy = Cmd::new("skopeo")
            .args(["copy", "--quiet", "--preserve-digests"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(self.reference(image));
        run_checked(self.cmd, &copy)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{FakeClock, FakeEtcd, FakeProbe, FakeRunner, FakeServices};
    use crate::journal::Journal;
    use crate::steps::{Env, Waits};
    use crate::system::Output;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn profile() -> hakube_node_profile::NodeProfile {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/images/worker-profile.json"
        ))
        .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn run(root: &std::path::Path, runner: &FakeRunner) -> Result<String> {
        let p = profile();
        let svc = FakeServices::default();
        let etcd = FakeEtcd::new(crate::fakes::FakeCluster::new(&[], false));
        let probe = FakeProbe::default();
        let clock = FakeClock::default();
        let env = Env {
            root: root.to_path_buf(),
            cmd: runner,
            svc: &svc,
            etcd: &etcd,
            probe: &probe,
            clock: &clock,
            waits: Waits::default(),
        };
        let mut journal = Journal::open(root, &p.node_name, p.role, &["container-images"]).unwrap();
        let mut ctx = Ctx {
            env: &env,
            profile: &p,
            journal: &mut journal,
            prior: crate::journal::StepState::Pending,
        };
        container_images(&mut ctx)
    }

    fn lay(root: &std::path::Path) {
        let dir = root.join("var/lib/hakube/images");
        std::fs::create_dir_all(&dir).unwrap();
        let index = serde_json::json!({"node": "worker-1", "images": [
            {"image": "registry.k8s.io/pause:3.10.2", "digest": D1, "amd64Digest": D1,
             "archive": "registry.k8s.io_pause_3.10.2.tar", "size": 10},
            {"image": "registry.k8s.io/kube-proxy:v1.37.2", "digest": D2, "amd64Digest": D2,
             "archive": "registry.k8s.io_kube-proxy_v1.37.2.tar", "size": 10},
        ]});
        std::fs::write(dir.join("images.json"), index.to_string()).unwrap();
    }

    #[test]
    fn containerd_store_is_checked_and_nothing_imported() {
        let root = tempfile::tempdir().unwrap();
        lay(root.path());
        let r = FakeRunner::new();
        r.on(
            "ctr --namespace k8s.io images ls",
            crate::fakes::ctr_images_ls(&[
                ("registry.k8s.io/pause:3.10.2", D1),
                ("registry.k8s.io/kube-proxy:v1.37.2", D2),
                ("docker.io/library/other:1", D1),
            ]),
        );
        let out = run(root.path(), &r).unwrap();
        assert_eq!(
            out,
            "2 images present in containerd, pinned (made at build; none imported)"
        );
        assert_eq!(r.calls(), ["ctr --namespace k8s.io images ls"]);
    }

    #[test]
    fn containerd_store_missing_an_image_fails_naming_it() {
        let root = tempfile::tempdir().unwrap();
        lay(root.path());
        let r = FakeRunner::new();
        r.on(
            "ctr --namespace k8s.io images ls",
            crate::fakes::ctr_images_ls(&[("registry.k8s.io/pause:3.10.2", D1)]),
        );
        let err = format!("{:#}", run(root.path(), &r).unwrap_err());
        assert!(
            err.contains("registry.k8s.io/kube-proxy:v1.37.2 is missing"),
            "{err}"
        );
        assert!(err.contains("no archive to import"), "{err}");
        assert!(!err.contains("pause"), "{err}");
        assert_eq!(r.count("ctr --namespace k8s.io images import"), 0);
        // The same, as status and health see it.
        let report = check_node_images(root.path(), &r, "worker-1", Runtime::Containerd)
            .unwrap()
            .unwrap();
        assert_eq!(
            report.problems,
            ["registry.k8s.io/kube-proxy:v1.37.2 is missing"]
        );
        assert_eq!(
            report.summary(),
            "1 of 2 images not right in containerd: registry.k8s.io/kube-proxy:v1.37.2 is missing"
        );
    }

    #[test]
    fn containerd_image_not_pinned_is_reported() {
        let root = tempfile::tempdir().unwrap();
        lay(root.path());
        let r = FakeRunner::new();
        let text = format!(
            "REF TYPE DIGEST SIZE PLATFORMS LABELS\n\
             registry.k8s.io/pause:3.10.2 application/vnd.oci.image.manifest.v1+json {D1} 1.0 MiB linux/amd64 io.cri-containerd.image=managed\n\
             registry.k8s.io/kube-proxy:v1.37.2 application/vnd.oci.image.manifest.v1+json {D2} 1.0 MiB linux/amd64 io.cri-containerd.image=managed,io.cri-containerd.pinned=pinned\n"
        );
        r.on("ctr --namespace k8s.io images ls", Output::ok(&text));
        let err = format!("{:#}", run(root.path(), &r).unwrap_err());
        assert!(
            err.contains(
                "registry.k8s.io/pause:3.10.2 is not labelled io.cri-containerd.pinned=pinned"
            ),
            "{err}"
        );
        assert!(!err.contains("kube-proxy"), "{err}");
    }

    #[test]
    fn refuses_a_runtime_image_with_another_digest() {
        let root = tempfile::tempdir().unwrap();
        lay(root.path());
        let r = FakeRunner::new();
        r.on(
            "ctr --namespace k8s.io images ls",
            crate::fakes::ctr_images_ls(&[
                ("registry.k8s.io/pause:3.10.2", D1),
                ("registry.k8s.io/kube-proxy:v1.37.2", D1),
            ]),
        );
        let err = run(root.path(), &r).unwrap_err();
        assert!(
            format!("{err:#}").contains(&format!(
                "registry.k8s.io/kube-proxy:v1.37.2 has digest {D1}, not {D2}"
            )),
            "{err:#}"
        );
    }

    #[test]
    fn no_index_is_reported_not_fatal() {
        let root = tempfile::tempdir().unwrap();
        let r = FakeRunner::new();
        let out = run(root.path(), &r).unwrap();
        assert!(out.starts_with("skipped: no /var/lib/hakube/images/images.json"));
        assert!(r.calls().is_empty());
    }

    fn inspected(digest: &str) -> Output {
        Output::ok(&format!(
            r#"{{"Name": "registry.k8s.io/x", "Digest": "{digest}", "Layers": []}}"#
        ))
    }

    #[test]
    fn cri_o_imports_with_skopeo_into_the_store_its_drop_in_names() {
        let root = tempfile::tempdir().unwrap();
        lay(root.path());
        let r = root.path().display();
        let store = format!(
            "containers-storage:[overlay@{r}/var/lib/containers/storage+{r}/run/containers/storage]"
        );
        let pause = format!("skopeo inspect {store}registry.k8s.io/pause:3.10.2");
        let proxy = format!("skopeo inspect {store}registry.k8s.io/kube-proxy:v1.37.2");
        let runner = FakeRunner::new();
        runner.once(&proxy, Output::fail(1, "identifier is not an image"));
        runner.on(&pause, inspected(D1));
        runner.on(&proxy, inspected(D2));
        let out = ready_node_images(root.path(), &runner, "worker-1", Runtime::CriO).unwrap();
        assert_eq!(out, "2 images present in CRI-O's image store (1 imported)");
        let copies: Vec<String> = runner
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("skopeo copy"))
            .collect();
        assert_eq!(
            copies,
            [format!(
                "skopeo copy --quiet --preserve-digests \
                 oci-archive:{r}/var/lib/hakube/images/registry.k8s.io_kube-proxy_v1.37.2.tar \
                 {store}registry.k8s.io/kube-proxy:v1.37.2"
            )]
        );
        assert_eq!(runner.count("ctr"), 0);
    }

    #[test]
    fn cri_o_store_with_another_digest_is_refused() {
        let root = tempfile::tempdir().unwrap();
        lay(root.path());
        let runner = FakeRunner::new();
        runner.on("skopeo inspect", inspected(D1));
        let err = ready_node_images(root.path(), &runner, "worker-1", Runtime::CriO).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!(
                "CRI-O's image store has image registry.k8s.io/kube-proxy:v1.37.2 with digest {D1}, the disk's archive has {D2}"
            )),
            "{msg}"
        );
        // The differing image was copied again first (a half-imported store
        // from a power cut is repaired the same way).
        assert_eq!(runner.count("skopeo copy"), 1);
    }

    #[test]
    fn another_nodes_index_is_refused() {
        let root = tempfile::tempdir().unwrap();
        lay(root.path());
        let runner = FakeRunner::new();
        let err = ready_node_images(root.path(), &runner, "worker-2", Runtime::CriO).unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("lists the images of node worker-1, but this is node worker-2"),
            "{err:#}"
        );
        assert!(runner.calls().is_empty());
    }

    #[test]
    fn parses_ctr_listing() {
        let text = "REF                                     TYPE                                    DIGEST                                                                  SIZE     PLATFORMS   LABELS\n\
registry.k8s.io/pause:3.10.2            application/vnd.oci.image.manifest.v1+json sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 312.0 KiB linux/amd64 -\n";
        let m = parse_ctr_images(text);
        assert_eq!(
            m.get("registry.k8s.io/pause:3.10.2"),
            Some(&CtrImage {
                digest: "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    .into(),
                pinned: false
            })
        );
        assert_eq!(m.len(), 1);
    }

    /// The real listing: containerd v2.3.7's `ctr -n k8s.io images ls` after
    /// two imports as hakube-build's store stage makes them, one without the
    /// pinned label.
    #[test]
    fn parses_a_real_ctr_listing() {
        let m = parse_ctr_images(include_str!(
            "../../tests/fixtures/images/ctr-images-ls.txt"
        ));
        assert!(m.len() >= 2, "{m:?}");
        assert!(m.values().all(|i| i.digest.len() == 71), "{m:?}");
        assert!(m.values().any(|i| i.pinned), "{m:?}");
        assert!(m.values().any(|i| !i.pinned), "{m:?}");
    }
}
