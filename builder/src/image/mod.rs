//! Image assembly: the `hakube-build --profile ROLE` pipeline.
//!
//! resolve spec -> select nodes -> check host tools -> load secrets ->
//! resolve artifacts (before anything slow, so an unreachable upstream fails
//! fast and nothing is written under --out) -> container images (listed,
//! pulled, pinned; see [`crate::images`]) -> base rootfs (cached) -> OS root
//! erofs (cached, shared by every node and role) -> per node: render tree ->
//! containerd image store (made by the node's own containerd, cached; see
//! [`crate::images::store`]) -> var partition -> ESP -> GPT disk -> qcow2 ->
//! libvirt XML -> manifest.json -> prune the caches (see [`crate::cache`]).
//!
//! Reproducibility: every timestamp is SOURCE_DATE_EPOCH when set, else the
//! creation time of the cached base root filesystem, so rebuilding with a warm
//! cache gives bit-identical images; identifiers are uuid v5 of
//! cluster/node/partition.

pub mod base;
pub mod content;
pub mod disk;
pub mod fsutil;
pub mod gpt;
pub mod libvirt;
pub mod manifest;
pub mod osroot;
pub mod partitions;
pub mod tools;
pub mod update;

use crate::artifacts::{self, Resolved, Source};
use crate::cache;
use crate::cli::BuildArgs;
use crate::errors::bad_input;
use crate::images;
use crate::pki::{self, ClusterSecrets};
use crate::private::{ImageAccess, WorkDir};
use crate::render;
use crate::spec::{self, Cluster, Node, SpecSource};
use crate::tree::FileTree;
use crate::ui::{StepTiming, Steps};
use anyhow::{Context, Result};
use hakube_node_profile::Role;
use osroot::OsRoot;
use std::fs;
use std::path::{Path, PathBuf};
use tools::{HostRunner, Runner};

/// `hakube-build --profile ROLE ...`
pub fn run(args: &BuildArgs) -> Result<()> {
    let runner = HostRunner;
    let mut steps = Steps::new(false);
    let result = build(&runner, args, &mut steps);
    steps.print_summary();
    let result = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        for img in &result.images {
            eprintln!(
                "{}: {} ({} MiB, sha256 {})",
                img.node,
                img.qcow2.display(),
                img.size >> 20,
                img.sha256
            );
        }
    }
    Ok(())
}

/// What `--json` prints.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildResult {
    pub cluster: String,
    pub role: String,
    pub images: Vec<BuiltImage>,
    pub manifest: PathBuf,
    pub source_date_epoch: i64,
    /// The OS image version and the update bundle directory of this build.
    pub version: String,
    pub update: PathBuf,
    pub cache: CacheHits,
    pub timings: Vec<StepTiming>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheHits {
    pub base_rootfs: bool,
    pub os_root: bool,
    pub base_key: String,
    pub os_root_key: String,
    /// What the build deleted from each keyed cache afterwards.
    pub pruned: Vec<cache::Pruned>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuiltImage {
    pub node: String,
    pub qcow2: PathBuf,
    pub xml: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Validated inputs of a build.
struct Plan {
    cluster: Cluster,
    role: Role,
    nodes: Vec<Node>,
    state: PathBuf,
    lock: PathBuf,
    cache: PathBuf,
    firstboot: PathBuf,
    out: PathBuf,
    access: ImageAccess,
    source: Source,
    images: images::SourceConfig,
    env_epoch: Option<i64>,
    /// `--cache-keep`: unused entries each keyed cache keeps.
    cache_keep: usize,
}

fn build(runner: &dyn Runner, args: &BuildArgs, steps: &mut Steps) -> Result<BuildResult> {
    // Cache entries used since this instant may belong to a concurrent build.
    let started = std::time::SystemTime::now();
    let plan = steps.run("resolve spec and inputs", || plan(args))?;
    steps.run("check host tools", || runner.require(tools::ASSEMBLY_TOOLS))?;
    let secrets = steps.run("load cluster secrets", || {
        let mut s = ClusterSecrets::load_or_create(&plan.cluster, &plan.state)?;
        s.record_initialised(args.cluster.cluster_initialised)?;
        Ok(s)
    })?;
    if plan
        .nodes
        .iter()
        .any(|n| n.name == plan.cluster.init_node().name)
    {
        if let Some(w) = secrets.init_node_warning(&plan.cluster) {
            eprintln!("warning: {w}");
        }
    }
    let resolved = steps.run("resolve artifacts", || {
        artifacts::resolve(&artifacts::Request {
            cluster: &plan.cluster,
            source: plan.source.clone(),
            lock_path: plan.lock.clone(),
            cache_dir: plan.cache.clone(),
        })
    })?;
    // Read once: the image list and every node's tree are made from them.
    let upstream = render::UpstreamTexts::load(
        &plan.cluster,
        |name| Ok(resolved.get(name).map(|a| a.path.clone())),
        |name| anyhow::anyhow!("the artifact set has no {name}"),
    )?;
    let container_images = steps.run("container images (pulled, pinned, cached)", || {
        images::resolve(
            &images::Request {
                cluster: &plan.cluster,
                nodes: &plan.nodes,
                artifacts: &resolved,
                upstream: upstream.get(),
                lock_path: &plan.lock,
                cache_dir: &plan.cache,
            },
            &plan.images,
        )
    })?;
    let image_pins = artifacts::lock::Lock::load(&plan.lock)?;
    let base = steps.run("base rootfs (mmdebstrap, cached)", || {
        base::ensure(runner, &plan.cache, plan.cluster.runtime, plan.env_epoch)
    })?;
    let epoch = plan.env_epoch.unwrap_or(base.created_epoch);
    let os = steps.run("OS root erofs (cached)", || {
        build_os_root(runner, &plan, &base, &resolved, epoch)
    })?;
    let mut used = cache::Used::default();
    used.add(cache::Kind::Rootfs, &base.key, base.lease.as_ref());
    used.add(cache::Kind::Osroot, &os.key, os.lease.as_ref());

    let out_dir = plan.out.join(plan.cluster.name.as_str());
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let update = steps.run("OS update bundle", || {
        update::write_bundle(&os, plan.cluster.name.as_str(), &out_dir)
    })?;
    let mut images = Vec::new();
    let mut entries = std::collections::BTreeMap::new();
    for node in &plan.nodes {
        let name = node.name.as_str();
        let tree = steps.run(&format!("{name}: render node tree"), || {
            render::node_tree(&plan.cluster, &secrets, node, &upstream.get())
        })?;
        let needed = container_images
            .nodes
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let pulled = container_images.for_node(name);
        let store = image_store(steps, &plan, &resolved, name, needed, &pulled, &image_pins)?;
        if let Some(s) = &store {
            used.add(cache::Kind::ContainerdStore, &s.meta.key, s.lease.as_ref());
        }
        let node_images = images::NodeLayout {
            needed,
            pulled,
            lock: &image_pins,
            store: store.as_ref(),
        };
        let img = assemble_node(
            runner,
            steps,
            plan.cluster.name.as_str(),
            node,
            &os,
            &tree,
            &node_images,
            &out_dir,
            plan.access,
        )?;
        entries.insert(
            name.to_string(),
            manifest::ImageEntry {
                role: node.role.as_str().into(),
                qcow2: file_name(&img.qcow2),
                xml: file_name(&img.xml),
                size: img.size,
                sha256: img.sha256.clone(),
                os_root_key: os.key.clone(),
                source_date_epoch: epoch,
                container_images: needed.to_vec(),
            },
        );
        images.push(img);
    }
    // When each image stops being able to join (its baked leaves expire).
    if let Some(d) = crate::pki::dates::read(&plan.state, &plan.cluster)? {
        let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
        for line in crate::pki::dates::report(&d, &names) {
            eprintln!("{line}");
        }
    }
    let manifest_path = out_dir.join("manifest.json");
    steps.run("manifest", || {
        make_manifest(&plan, &base, &os, &resolved, entries, update.clone())?
            .merge_and_write(&manifest_path)
    })?;
    let pruned = prune_caches(steps, &plan, &used, started)?;
    Ok(BuildResult {
        cluster: plan.cluster.name.as_str().into(),
        role: plan.role.as_str().into(),
        images,
        manifest: manifest_path,
        source_date_epoch: epoch,
        version: update.version.clone(),
        update: out_dir.join(&update.dir),
        cache: CacheHits {
            base_rootfs: base.cache_hit,
            os_root: os.cache_hit,
            base_key: base.key.clone(),
            os_root_key: os.key.clone(),
            pruned,
        },
        timings: steps.timings().to_vec(),
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn plan(args: &BuildArgs) -> Result<Plan> {
    let cluster = spec::load(args.cluster.cluster.as_deref())?;
    let role: Role = args
        .profile
        .ok_or_else(|| bad_input("--profile ROLE is required (master, worker or etcd)"))?
        .into();
    let nodes = select_nodes(&cluster, role, args.node.as_deref())?;
    let state = args
        .cluster
        .state
        .clone()
        .unwrap_or_else(|| pki::default_state_dir(&cluster));
    let (lock, cache) = lock_and_cache(&cluster, args.lock.as_ref(), args.cache_dir.as_ref());
    let firstboot = find_firstboot(args.firstboot_bin.as_deref())?;
    let access = ImageAccess::from_group(args.image_group.as_deref())?;
    let env_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(v.trim().parse::<i64>().map_err(|_| {
            bad_input(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970"
            ))
        })?),
        _ => None,
    };
    Ok(Plan {
        cluster,
        role,
        nodes,
        state,
        lock,
        cache,
        firstboot,
        out: args.out.clone(),
        access,
        source: match &args.artifacts {
            Some(m) => Source::Mirror(m.clone()),
            None => Source::Upstream,
        },
        images: images::SourceConfig {
            mirrors: args.registry_mirror.clone(),
            ca: args.registry_ca.clone(),
            layout: args.image_layout.clone(),
        },
        env_epoch,
        cache_keep: usize::try_from(args.cache_keep).unwrap_or(usize::MAX),
    })
}

/// `--lock` and `--cache-dir`, or their defaults (every verb shares them).
pub fn lock_and_cache(
    cluster: &Cluster,
    lock: Option<&PathBuf>,
    cache_dir: Option<&PathBuf>,
) -> (PathBuf, PathBuf) {
    (
        lock.cloned().unwrap_or_else(|| default_lock_path(cluster)),
        cache_dir
            .cloned()
            .unwrap_or_else(artifacts::default_cache_dir),
    )
}

/// `hakube.lock` next to the spec file, or in the current directory for the
/// embedded cluster.
pub fn default_lock_path(cluster: &Cluster) -> PathBuf {
    match &cluster.source {
        SpecSource::File(p) => p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("hakube.lock"),
        SpecSource::Embedded => PathBuf::from("hakube.lock"),
    }
}

/// The nodes to build: all of `role`, or the one `--node` (which must have it).
pub fn select_nodes(cluster: &Cluster, role: Role, only: Option<&str>) -> Result<Vec<Node>> {
    let present: Vec<&str> = cluster.roles_present().iter().map(|r| r.as_str()).collect();
    if let Some(name) = only {
        let Some(node) = cluster.node(name) else {
            let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            return Err(bad_input(format!(
                "--node {name}: no such node in {}; its nodes are: {}",
                cluster.source,
                names.join(", ")
            )));
        };
        if node.role != role {
            return Err(bad_input(format!(
                "--node {name} has role {} in {}, not {} (--profile)",
                node.role.as_str(),
                cluster.source,
                role.as_str()
            )));
        }
        return Ok(vec![node.clone()]);
    }
    let nodes: Vec<Node> = cluster.nodes_with_role(role).cloned().collect();
    if nodes.is_empty() {
        return Err(bad_input(format!(
            "--profile {}: {} has no node with that role; it has: {}",
            role.as_str(),
            cluster.source,
            present.join(", ")
        )));
    }
    Ok(nodes)
}

/// `--firstboot-bin`, else `hakube-firstboot` next to this executable; it
/// must be an x86-64 ELF executable.
fn find_firstboot(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .context("locating the hakube-build executable")?
            .with_file_name("hakube-firstboot"),
    };
    // `cargo run --bin hakube-build` builds only the builder's package; the
    // README's command builds the whole workspace first (issue 7).
    let hint = "build it with `cargo build --release --workspace` (then run target/release/hakube-build), \
                or pass --firstboot-bin FILE";
    let head = match fs::File::open(&path) {
        Ok(mut f) => {
            let mut h = [0u8; 20];
            std::io::Read::read_exact(&mut f, &mut h).ok().map(|_| h)
        }
        Err(_) => {
            return Err(bad_input(format!(
                "the hakube-firstboot binary was not found at {}; {hint}",
                path.display()
            )))
        }
    };
    // ELF magic, and e_machine 0x3e (x86-64) at offset 18.
    match head {
        Some(h) if &h[0..4] == b"\x7fELF" && h[18] == 0x3e && h[19] == 0 => Ok(path),
        _ => Err(bad_input(format!(
            "{} is not an x86-64 Linux executable; {hint}",
            path.display()
        ))),
    }
}

/// The node's images in containerd's own store, for a containerd node that
/// runs any (`None` for CRI-O: first boot imports archives there). The
/// images are checked against the node's list and the pins first, so a
/// missing image stops the build (exit 2) before any store is made.
fn image_store(
    steps: &mut Steps,
    plan: &Plan,
    resolved: &Resolved,
    node: &str,
    needed: &[images::NodeImage],
    pulled: &[&images::PulledImage],
    pins: &artifacts::lock::Lock,
) -> Result<Option<images::store::Store>> {
    images::check_pulled(node, needed, pulled, pins)?;
    if plan.cluster.runtime != hakube_node_profile::Runtime::Containerd || needed.is_empty() {
        return Ok(None);
    }
    let containerd = resolved
        .get("containerd")
        .ok_or_else(|| anyhow::anyhow!("the artifact set has no containerd"))?;
    steps
        .run(&format!("{node}: containerd image store (cached)"), || {
            images::store::ensure(&plan.cache, containerd, pulled)
        })
        .map(Some)
}

/// Bounds the keyed caches once the images are made: keeps what this build
/// used and the `--cache-keep` most recently used others of each kind. A
/// failure is a warning: the build's outputs are complete by now.
fn prune_caches(
    steps: &mut Steps,
    plan: &Plan,
    used: &cache::Used,
    started: std::time::SystemTime,
) -> Result<Vec<cache::Pruned>> {
    let outcomes = steps.run("prune caches", || {
        Ok(cache::prune_all(
            &plan.cache,
            used,
            plan.cache_keep,
            started,
        ))
    })?;
    let mut pruned = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(p) => {
                steps.note(&p.to_string());
                pruned.push(p);
            }
            Err(e) => eprintln!(
                "warning: {e:#} (the images are complete; that cache may keep more than --cache-keep entries)"
            ),
        }
    }
    Ok(pruned)
}

fn build_os_root(
    runner: &dyn Runner,
    plan: &Plan,
    base: &base::Base,
    resolved: &Resolved,
    epoch: i64,
) -> Result<OsRoot> {
    osroot::ensure(
        runner,
        &plan.cache,
        &osroot::Inputs {
            base,
            artifacts: resolved,
            firstboot_bin: &plan.firstboot,
            source_date_epoch: epoch,
            version_epoch: plan.env_epoch.unwrap_or_else(base::now_epoch),
        },
    )
}

/// Builds one node's qcow2 and libvirt XML in `out_dir` from the shared OS
/// root, the node's tree and its container images. Files appear under their
/// final names only when complete. Everything that holds the node's secrets
/// (the staged tree, the var partition, the raw disk, the qcow2) is made
/// inside a 0700 work directory, and the qcow2 gets `access`'s mode there
/// before its rename.
#[allow(clippy::too_many_arguments)]
pub fn assemble_node(
    runner: &dyn Runner,
    steps: &mut Steps,
    cluster: &str,
    node: &Node,
    os: &OsRoot,
    tree: &FileTree,
    node_images: &images::NodeLayout,
    out_dir: &Path,
    access: ImageAccess,
) -> Result<BuiltImage> {
    let name = node.name.as_str();
    let mut layout = disk::Layout::default();
    // Room for the images (plus a tenth for the file system); the partition
    // still grows to fill the disk at first boot.
    let images_size = node_images.size()?;
    layout.var += (images_size + images_size / 10).next_multiple_of(1 << 20);
    let epoch = os.source_date_epoch;
    let gpt = disk::plan(cluster, name, &layout, &os.image_version()?);
    let root_a = gpt.partitions[1].guid;
    let work = WorkDir::new_in(out_dir, &format!(".{name}.work-"))?;
    let var_img = work.path().join("var.ext4");
    steps.run(&format!("{name}: var partition"), || {
        let stage = work.path().join("var");
        partitions::stage_var(runner, os, tree, &stage)?;
        node_images.lay(runner, name, &stage, epoch)?;
        let ids = partitions::VarIds {
            uuid: disk::seeded_uuid(cluster, name, "fs/var"),
            hash_seed: disk::seeded_uuid(cluster, name, "fs/var/hash-seed"),
        };
        partitions::make_var(runner, &stage, &var_img, layout.var, &ids, epoch)
    })?;
    let esp_img = work.path().join("esp.vfat");
    steps.run(&format!("{name}: EFI system partition"), || {
        let files = partitions::esp_files(os, &root_a)?;
        let volid = disk::seeded_uuid(cluster, name, "fs/esp").as_u128() as u32;
        partitions::make_esp(runner, &files, &esp_img, layout.esp, volid, epoch)
    })?;
    let raw = work.path().join("disk.raw");
    steps.run(&format!("{name}: GPT disk"), || {
        disk::assemble_raw(
            &gpt,
            &disk::Contents {
                esp: &esp_img,
                root_a: &os.erofs(),
                var: &var_img,
            },
            &raw,
        )
    })?;
    let qcow2 = out_dir.join(format!("{name}.qcow2"));
    let qcow2_tmp = work.path().join(format!("{name}.qcow2"));
    let (size, sha256) = steps.run(&format!("{name}: qcow2"), || {
        disk::to_qcow2(runner, &raw, &qcow2_tmp)?;
        fs::remove_file(&raw).ok();
        let size = fs::metadata(&qcow2_tmp)
            .with_context(|| format!("reading {}", qcow2_tmp.display()))?
            .len();
        Ok((size, fsutil::sha256_file(&qcow2_tmp)?))
    })?;
    let xml = out_dir.join(format!("{name}.xml"));
    steps.run(&format!("{name}: libvirt domain"), || {
        let abs = std::path::absolute(&qcow2)
            .with_context(|| format!("resolving {}", qcow2.display()))?;
        let tmp = work.path().join(format!("{name}.xml"));
        fs::write(&tmp, libvirt::domain_xml(cluster, node, &abs))
            .with_context(|| format!("writing {}", tmp.display()))?;
        access.apply(&qcow2_tmp)?;
        fsutil::commit(&qcow2_tmp, &qcow2)?;
        fsutil::commit(&tmp, &xml)
    })?;
    Ok(BuiltImage {
        node: name.into(),
        qcow2,
        xml,
        size,
        sha256,
    })
}

fn make_manifest(
    plan: &Plan,
    base: &base::Base,
    os: &OsRoot,
    resolved: &Resolved,
    images: std::collections::BTreeMap<String, manifest::ImageEntry>,
    update: update::UpdateInfo,
) -> Result<manifest::Manifest> {
    let spec_bytes = match &plan.cluster.source {
        SpecSource::Embedded => spec::DEFAULT_CLUSTER_YAML.as_bytes().to_vec(),
        SpecSource::File(p) => fs::read(p).with_context(|| format!("reading {}", p.display()))?,
    };
    Ok(manifest::Manifest {
        builder_version: env!("CARGO_PKG_VERSION").into(),
        cluster: plan.cluster.name.as_str().into(),
        spec: manifest::SpecInfo {
            source: plan.cluster.source.to_string(),
            sha256: fsutil::sha256_bytes(&spec_bytes),
            kubernetes_version: plan.cluster.kubernetes_version.to_string(),
        },
        base: manifest::BaseInfo {
            cache_key: base.key.clone(),
            suite: base.suite.clone(),
            mirror: base.mirror.clone(),
            packages: base.packages.clone(),
            package_versions: base.package_versions.clone(),
        },
        os_root: manifest::OsRootInfo {
            cache_key: os.key.clone(),
            erofs_sha256: os.erofs_sha256.clone(),
            kernel_version: os.kernel_version.clone(),
            source_date_epoch: os.source_date_epoch,
            version: os.version.clone(),
        },
        update,
        firstboot: manifest::FileInfo {
            sha256: fsutil::sha256_file(&plan.firstboot)?,
        },
        artifacts: resolved.artifacts.iter().map(Into::into).collect(),
        images,
    })
}
