//! Container images baked into the disk, imported into the runtime before
//! kubeadm runs, so the node needs no registry (kubeadm's `IfNotPresent`
//! pull policy then finds every image present and pulls nothing).
//!
//! hakube-build lays one OCI archive per image in `/var/lib/hakube/images/`
//! with `images.json` naming each image, its linux/amd64 manifest digest and
//! its archive. containerd: `ctr -n k8s.io images import --local` (the CRI
//! plugin serves images of the `k8s.io` namespace), then `ctr images ls` must
//! show every image with its digest. CRI-O: `skopeo copy --preserve-digests
//! oci-archive:… containers-storage:[…]IMAGE` into the store hakube's CRI-O
//! drop-in names (`hakube_node_profile::crio_store`), then `skopeo inspect`
//! must report every image with its digest.

use super::{under, Ctx};
use crate::system::{run_checked, Cmd, CommandRunner};
use anyhow::{bail, Context, Result};
use hakube_node_profile::{crio_store, Runtime};
use std::collections::BTreeMap;
use std::path::Path;

/// Written by hakube-build (builder/src/images/archive.rs).
pub const IMAGES_DIR: &str = "/var/lib/hakube/images";
pub const IMAGES_INDEX: &str = "/var/lib/hakube/images/images.json";

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
    archive: String,
}

/// `ctr images ls` lines: `REF TYPE DIGEST SIZE PLATFORMS LABELS`; ref -> digest.
pub fn parse_ctr_images(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .skip_while(|l| l.starts_with("REF"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let digest = f.iter().find(|x| x.starts_with("sha256:"))?;
            Some((f.first()?.to_string(), digest.to_string()))
        })
        .collect()
}

fn ctr(args: &[&str]) -> Cmd {
    Cmd::new("ctr")
        .args(["--namespace", "k8s.io"])
        .args(args.iter().copied())
}

pub fn container_images(ctx: &mut Ctx) -> Result<String> {
    import_node_images(
        &ctx.env.root,
        ctx.env.cmd,
        &ctx.profile.node_name,
        ctx.profile.runtime,
    )
}

/// Imports the images the disk carries for `node` into `runtime`'s store and
/// checks every digest; paths are the node's, resolved under `root`.
pub fn import_node_images(
    root: &Path,
    cmd: &dyn CommandRunner,
    node: &str,
    runtime: Runtime,
) -> Result<String> {
    let path = under(root, IMAGES_INDEX);
    // hakube-build refuses to build a node without the images it runs, so
    // no index means a disk assembled by other means: say so, pull later.
    if !path.exists() {
        return Ok(format!(
            "skipped: no {IMAGES_INDEX}; the runtime will pull images from registries"
        ));
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
    let store: Box<dyn ImageStore> = match runtime {
        Runtime::Containerd => Box::new(Containerd { cmd }),
        Runtime::CriO => Box::new(CrioStorage { cmd, root }),
    };
    let names: Vec<&str> = index.images.iter().map(|e| e.image.as_str()).collect();
    let present = store.digests(&names)?;
    let mut imported = 0;
    for e in &index.images {
        if present.get(&e.image) == Some(&e.amd64_digest) {
            continue;
        }
        let archive = under(root, &format!("{IMAGES_DIR}/{}", e.archive));
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

/// A runtime's image store as the import sees it.
trait ImageStore {
    fn name(&self) -> &'static str;
    /// The manifest digest the store holds under each of `images` it has.
    fn digests(&self, images: &[&str]) -> Result<BTreeMap<String, String>>;
    fn import(&self, archive: &Path, image: &str) -> Result<()>;
}

struct Containerd<'a> {
    cmd: &'a dyn CommandRunner,
}

impl ImageStore for Containerd<'_> {
    fn name(&self) -> &'static str {
        "containerd"
    }
    fn digests(&self, _images: &[&str]) -> Result<BTreeMap<String, String>> {
        let listing = run_checked(self.cmd, &ctr(&["images", "ls"]))?.stdout;
        Ok(parse_ctr_images(&listing))
    }
    fn import(&self, archive: &Path, _image: &str) -> Result<()> {
        let archive = archive.to_string_lossy();
        let args = ["images", "import", "--local", "--platform", "linux/amd64"];
        run_checked(self.cmd, &ctr(&args).arg(archive.as_ref()))?;
        Ok(())
    }
}

/// CRI-O's containers/storage, named in full so that skopeo and CRI-O agree
/// whatever `/etc/containers/storage.conf` says.
struct CrioStorage<'a> {
    cmd: &'a dyn CommandRunner,
    root: &'a Path,
}

impl CrioStorage<'_> {
    fn reference(&self, image: &str) -> String {
        format!(
            "containers-storage:[{}@{}+{}]{image}",
            crio_store::DRIVER,
            under(self.root, crio_store::ROOT).display(),
            under(self.root, crio_store::RUNROOT).display()
        )
    }
}

impl ImageStore for CrioStorage<'_> {
    fn name(&self) -> &'static str {
        "CRI-O's image store"
    }
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

    fn listing(entries: &[(&str, &str)]) -> Output {
        let mut s = "REF TYPE DIGEST SIZE PLATFORMS LABELS\n".to_string();
        for (r, d) in entries {
            s += &format!(
                "{r} application/vnd.oci.image.manifest.v1+json {d} 1.0 MiB linux/amd64 -\n"
            );
        }
        Output::ok(&s)
    }

    #[test]
    fn imports_what_is_missing_then_checks_digests() {
        let root = tempfile::tempdir().unwrap();
        lay(root.path());
        let r = FakeRunner::new();
        r.once(
            "ctr --namespace k8s.io images ls",
            listing(&[("registry.k8s.io/pause:3.10.2", D1)]),
        );
        r.on(
            "ctr --namespace k8s.io images ls",
            listing(&[
                ("registry.k8s.io/pause:3.10.2", D1),
                ("registry.k8s.io/kube-proxy:v1.37.2", D2),
            ]),
        );
        let out = run(root.path(), &r).unwrap();
        assert_eq!(out, "2 images present in containerd (1 imported)");
        let imports: Vec<String> = r
            .calls()
            .into_iter()
            .filter(|c| c.contains(" import "))
            .collect();
        assert_eq!(imports.len(), 1, "{imports:?}");
        assert!(
            imports[0].ends_with("var/lib/hakube/images/registry.k8s.io_kube-proxy_v1.37.2.tar")
        );
        assert!(imports[0].contains("--local --platform linux/amd64"));
    }

    #[test]
    fn refuses_a_runtime_image_with_another_digest() {
        let root = tempfile::tempdir().unwrap();
        lay(root.path());
        let r = FakeRunner::new();
        r.on(
            "ctr --namespace k8s.io images ls",
            listing(&[
                ("registry.k8s.io/pause:3.10.2", D1),
                ("registry.k8s.io/kube-proxy:v1.37.2", D1),
            ]),
        );
        let err = run(root.path(), &r).unwrap_err();
        assert!(
            format!("{err:#}").contains("kube-proxy:v1.37.2 with digest"),
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
        let out = import_node_images(root.path(), &runner, "worker-1", Runtime::CriO).unwrap();
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
        let err = import_node_images(root.path(), &runner, "worker-1", Runtime::CriO).unwrap_err();
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
        let err = import_node_images(root.path(), &runner, "worker-2", Runtime::CriO).unwrap_err();
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
            m.get("registry.k8s.io/pause:3.10.2").map(String::as_str),
            Some("sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        );
        assert_eq!(m.len(), 1);
    }
}
