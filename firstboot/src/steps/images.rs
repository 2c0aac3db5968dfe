//! Container images baked into the disk, imported into the runtime before
//! kubeadm runs, so the node needs no registry (kubeadm's `IfNotPresent`
//! pull policy then finds every image present and pulls nothing).
//!
//! hakube-build lays one OCI archive per image in `/var/lib/hakube/images/`
//! with `images.json` naming each image, its linux/amd64 manifest digest and
//! its archive. containerd: `ctr -n k8s.io images import --local` (the CRI
//! plugin serves images of the `k8s.io` namespace), then `ctr images ls` must
//! show every image with its digest.

use super::Ctx;
use crate::system::{run_checked, Cmd};
use anyhow::{bail, Context, Result};
use hakube_node_profile::Runtime;
use std::collections::BTreeMap;

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
    let path = ctx.path(IMAGES_INDEX);
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
    if index.node != ctx.profile.node_name {
        bail!(
            "{} lists the images of node {}, but this is node {}: the disk was assembled wrongly; rebuild it",
            path.display(),
            index.node,
            ctx.profile.node_name
        );
    }
    match ctx.profile.runtime {
        Runtime::Containerd => import_containerd(ctx, &index),
        Runtime::CriO => Ok(format!(
            "skipped: importing into CRI-O is not implemented; {} images are left in {IMAGES_DIR}",
            index.images.len()
        )),
    }
}

fn import_containerd(ctx: &mut Ctx, index: &Index) -> Result<String> {
    let cmd = ctx.env.cmd;
    let present = parse_ctr_images(&run_checked(cmd, &ctr(&["images", "ls"]))?.stdout);
    let mut imported = 0;
    for e in &index.images {
        if present.get(&e.image) == Some(&e.amd64_digest) {
            continue;
        }
        let archive = ctx.path(&format!("{IMAGES_DIR}/{}", e.archive));
        let archive = archive.to_string_lossy();
        run_checked(
            cmd,
            &ctr(&[
                "images",
                "import",
                "--local",
                "--platform",
                "linux/amd64",
                &archive,
            ]),
        )
        .with_context(|| format!("importing image {} from {archive}", e.image))?;
        imported += 1;
    }
    let now = parse_ctr_images(&run_checked(cmd, &ctr(&["images", "ls"]))?.stdout);
    for e in &index.images {
        match now.get(&e.image) {
            Some(d) if *d == e.amd64_digest => {}
            Some(d) => bail!(
                "containerd has image {} with digest {d}, the disk's archive has {}",
                e.image,
                e.amd64_digest
            ),
            None => bail!(
                "containerd does not list image {} after importing it",
                e.image
            ),
        }
    }
    Ok(format!(
        "{} images present in containerd ({imported} imported)",
        index.images.len()
    ))
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
