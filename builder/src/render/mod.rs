//! Per-node configuration: kubeadm, kubelet, runtime, etcd, haproxy,
//! keepalived, CNI, networkd, the node profile, and Ignition output.
//!
//! [`node_tree`] is the PKI of the node ([`crate::pki::node_files`]) plus
//! [`config_tree`], which is pure: the same cluster and credentials give the
//! same bytes. `hakube-build render` ([`run`]) writes the trees and their
//! Ignition form.
//!
//! Units the tree enables but does not contain (the OS root must ship them,
//! under /lib/systemd/system, and must not enable them itself):
//! `kubelet.service` plus kubeadm's `10-kubeadm.conf` drop-in,
//! `containerd.service` or `crio.service`, `etcd.service` (ExecStart
//! `/usr/local/bin/etcd --config-file=/var/lib/hakube/etcd/etcd.conf.yml`,
//! with `ConditionPathExists=` on that file so it waits for firstboot),
//! `haproxy.service`, `keepalived.service`, `ssh.service`,
//! `systemd-networkd.{service,socket}`, `systemd-networkd-wait-online.service`
//! `systemd-timesyncd.service` and, for DHCP nodes, `systemd-resolved.service`.
//! The tree ships `hakube-firstboot.service`.

mod calico;
mod cni;
mod containers;
mod etcd;
mod ignition;
mod kubeadm;
mod lb;
mod profile;
mod runtime;
mod system;
pub mod yaml;

pub use ignition::{ignition, IGNITION_VERSION};
pub use kubeadm::{
    static_pod_patches, JoinCredentials, ETCD_CPU_REQUEST, LIVENESS_FAILURES, PATCHES_DIR,
};

use crate::cli::RenderArgs;
use crate::errors::bad_input;
use crate::pki::{self, ClusterSecrets};
use crate::spec::{self, Cluster, Node};
use crate::tree::FileTree;
use anyhow::{Context, Result};
use hakube_node_profile::Role;

/// Paths (relative to the image root) of the files this module writes.
pub mod paths {
    pub use super::containers::POLICY as CONTAINERS_POLICY;
    pub use super::etcd::ETCD_CONFIG;
    pub use super::lb::{HAPROXY_CONFIG, KEEPALIVED_CONFIG};
    pub use super::runtime::{CONTAINERD_CONFIG, CRICTL_CONFIG, CRIO_DROPIN};
    pub use super::system::{
        CERTS_SERVICE, CERTS_TIMER, FIRSTBOOT_UNIT, HOSTNAME, HOSTS, LINK_FILE, LOGIND_DROPIN,
        MODULES, NETWORK_FILE, RESOLV_CONF, SSHD_DROPIN, SSH_KEYS, SYSCTLS,
    };
    pub use hakube_node_profile::PROFILE_PATH as NODE_PROFILE;
    pub const KUBEADM_INIT: &str = "etc/hakube/kubeadm/init.yaml";
    pub const KUBEADM_JOIN: &str = "etc/hakube/kubeadm/join.yaml";
    pub const KUBEADM_KUBE_PROXY: &str = "etc/hakube/kubeadm/kube-proxy.yaml";
    /// `etc/hakube/kubeadm/patches/<file>`: kubeadm's patches on masters.
    pub fn kubeadm_patch(file: &str) -> String {
        format!(
            "{}/{file}",
            super::kubeadm::PATCHES_DIR.trim_start_matches('/')
        )
    }
    /// The join token on masters, which re-create it at boot when it is gone.
    pub const BOOTSTRAP_TOKEN: &str = "etc/hakube/bootstrap-token";
    /// `etc/hakube/cni/<cni>.yaml`
    pub fn cni_manifest(cni: crate::spec::model::Cni) -> String {
        super::cni::manifest_path(cni)
    }
}

/// `hakube-build render`: every node's tree (or one node's) and Ignition
/// config under `args.out`. Everything is rendered in memory first, so a bad
/// spec, an unknown node or a PKI failure writes nothing under `--out`.
pub fn run(args: &RenderArgs) -> Result<()> {
    let cluster = spec::load(args.cluster.cluster.as_deref())?;
    for w in &cluster.warnings {
        eprintln!("warning: {w}");
    }
    let nodes = select_nodes(&cluster, args.node.as_deref())?;
    // Before anything is written: the upstream files the trees are made from
    // (calico's manifest, for masters only).
    let (lock, cache) =
        crate::image::lock_and_cache(&cluster, args.lock.as_ref(), args.cache_dir.as_ref());
    let upstream = match nodes.iter().any(|n| n.role == Role::Master) {
        false => UpstreamTexts::default(),
        true => UpstreamTexts::load(
            &cluster,
            |name| crate::artifacts::cached(&cluster, &lock, &cache, name),
            |name| {
                bad_input(format!(
                    "{name} (cni: calico in {}) is not pinned in {} and cached in {} yet: a build \
                     (hakube-build --profile master, same --lock and --cache-dir) fetches and pins it",
                    cluster.source,
                    lock.display(),
                    cache.display()
                ))
            },
        )?,
    };
    let state = args
        .cluster
        .state
        .clone()
        .unwrap_or_else(|| pki::default_state_dir(&cluster));
    let mut secrets = ClusterSecrets::load_or_create(&cluster, &state)
        .with_context(|| format!("loading the cluster secrets from {}", state.display()))?;
    secrets.record_initialised(args.cluster.cluster_initialised)?;
    if nodes.iter().any(|n| n.name == cluster.init_node().name) {
        if let Some(w) = secrets.init_node_warning(&cluster) {
            eprintln!("warning: {w}");
        }
    }
    let rendered = nodes
        .iter()
        .map(|node| {
            let tree = node_tree(&cluster, &secrets, node, &upstream.get())
                .with_context(|| format!("rendering node {}", node.name))?;
            let ign = ignition(&tree);
            Ok((*node, tree, ign))
        })
        .collect::<Result<Vec<_>>>()?;
    // Trees and Ignition files hold the nodes' keys: --out is made 0700
    // (an existing directory keeps its mode), each tree's root 0700 and each
    // .ign file 0600, all from their first byte.
    crate::private::create_dir_all(&args.out)?;
    if let Some(d) = crate::pki::dates::read(&state, &cluster)? {
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        for line in crate::pki::dates::report(&d, &names) {
            eprintln!("{line}");
        }
    }
    for (node, tree, ign) in rendered {
        let dir = args.out.join(node.name.as_str());
        tree.write_atomically(&dir)
            .with_context(|| format!("writing the tree of {} to {}", node.name, dir.display()))?;
        let ign_path = args.out.join(format!("{}.ign", node.name));
        crate::private::write_atomically(&ign_path, ign.as_bytes())?;
        println!(
            "{:<16} {:<7} {:>3} files  {}  {}",
            node.name,
            node.role,
            tree.len(),
            dir.display(),
            ign_path.display()
        );
    }
    Ok(())
}

fn select_nodes<'c>(cluster: &'c Cluster, only: Option<&str>) -> Result<Vec<&'c Node>> {
    match only {
        None => Ok(cluster.nodes.iter().collect()),
        Some(name) => match cluster.node(name) {
            Some(n) => Ok(vec![n]),
            None => {
                let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
                Err(bad_input(format!(
                    "--node {name:?}: no such node in {} (nodes: {})",
                    cluster.source,
                    names.join(", ")
                )))
            }
        },
    }
}

/// An upstream file a tree is made from, and where it came from (named in
/// errors).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamFile<'a> {
    pub origin: &'a str,
    pub text: &'a str,
}

/// Upstream files trees are made from besides the cluster: artifacts of the
/// catalogue, read by the caller (rendering reads no file).
#[derive(Debug, Clone, Copy, Default)]
pub struct Upstream<'a> {
    /// calico's manifest install (masters of calico clusters).
    pub calico: Option<UpstreamFile<'a>>,
}

/// The upstream files themselves, read once for every tree of a cluster.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTexts {
    calico: Option<(String, String)>,
}

/// The artifact of the catalogue holding calico's manifest install.
pub const CALICO_MANIFEST_ARTIFACT: &str = "calico-manifest";

impl UpstreamTexts {
    /// Reads what `cluster` needs; `find` gives an artifact's file by name,
    /// `None` when it is not at hand (`missing` then says why, in an error).
    pub fn load(
        cluster: &Cluster,
        find: impl Fn(&str) -> Result<Option<std::path::PathBuf>>,
        missing: impl Fn(&str) -> anyhow::Error,
    ) -> Result<Self> {
        if cluster.cni != crate::spec::model::Cni::Calico {
            return Ok(Self::default());
        }
        let path =
            find(CALICO_MANIFEST_ARTIFACT)?.ok_or_else(|| missing(CALICO_MANIFEST_ARTIFACT))?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading calico's manifest {}", path.display()))?;
        Ok(Self {
            calico: Some((path.display().to_string(), text)),
        })
    }

    pub fn get(&self) -> Upstream<'_> {
        Upstream {
            calico: self
                .calico
                .as_ref()
                .map(|(origin, text)| UpstreamFile { origin, text }),
        }
    }
}

/// The complete tree laid into `node`'s image: PKI, configs and node profile.
/// Paths are under `etc/` or `var/` only.
pub fn node_tree(
    cluster: &Cluster,
    secrets: &ClusterSecrets,
    node: &Node,
    upstream: &Upstream,
) -> Result<FileTree> {
    let creds = JoinCredentials {
        token: secrets.bootstrap_token(),
        ca_cert_hash: secrets.ca_cert_hash(),
        cluster_initialised: secrets.cluster_initialised().is_some(),
    };
    let mut tree = pki::node_files(cluster, secrets, node)
        .with_context(|| format!("issuing the certificates of {}", node.name))?;
    tree.merge(config_tree(cluster, node, &creds, upstream)?);
    Ok(tree)
}

/// Everything but the PKI: configuration files, units and the node profile.
pub fn config_tree(
    cluster: &Cluster,
    node: &Node,
    creds: &JoinCredentials,
    upstream: &Upstream,
) -> Result<FileTree> {
    let mut tree = FileTree::new();
    let ssh = system::add(&mut tree, cluster, node);
    let kube = matches!(node.role, Role::Master | Role::Worker);
    if kube {
        if node.role == Role::Master && cluster.init_node().name == node.name {
            tree.add_secret(
                paths::KUBEADM_INIT,
                kubeadm::init_config(cluster, node, creds)?,
            );
            if let Some(addon) = kubeadm::kube_proxy_addon_config(cluster, node)? {
                tree.add_public(paths::KUBEADM_KUBE_PROXY, addon);
            }
        }
        tree.add_secret(
            paths::KUBEADM_JOIN,
            kubeadm::join_config(cluster, node, creds)?,
        );
        runtime::add(&mut tree, cluster);
        if cluster.runtime == hakube_node_profile::Runtime::CriO {
            tree.add_public(containers::POLICY, containers::policy());
        }
    }
    if node.role == Role::Master {
        for (name, patch) in kubeadm::static_pod_patches(cluster) {
            tree.add_public(paths::kubeadm_patch(&name), patch);
        }
        tree.add_secret(paths::BOOTSTRAP_TOKEN, format!("{}\n", creds.token));
        tree.add_public(
            cni::manifest_path(cluster.cni),
            cni::manifest(cluster, upstream)?,
        );
    }
    if lb::wants_haproxy(cluster, node) {
        tree.add_public(paths::HAPROXY_CONFIG, lb::haproxy_config(cluster, node)?);
    }
    if lb::wants_keepalived(cluster, node) {
        tree.add_public(
            paths::KEEPALIVED_CONFIG,
            lb::keepalived_config(cluster, node)?,
        );
    }
    if node.role == Role::Etcd {
        tree.add_public(paths::ETCD_CONFIG, etcd::config(cluster, node)?);
    }
    tree.add_public(
        paths::NODE_PROFILE,
        profile::profile(cluster, node, creds.cluster_initialised)?.to_json(),
    );
    enable_services(&mut tree, cluster, node, ssh);
    Ok(tree)
}

/// Enables the node's units by `*.wants/` symlinks, from the role profile's
/// service list, adjusted to the spec: the chosen runtime's unit, haproxy and
/// keepalived only where configured, sshd only with authorized keys.
fn enable_services(tree: &mut FileTree, cluster: &Cluster, node: &Node, ssh: bool) {
    const MULTI_USER: &str = "multi-user.target";
    let mut wanted: Vec<String> = node.services.clone();
    if ssh {
        wanted.push("ssh".into());
    }
    for svc in wanted {
        match svc.trim_end_matches(".service") {
            "hakube-firstboot" => tree.enable_unit("hakube-firstboot.service", MULTI_USER, false),
            "containerd" | "crio" | "cri-o" => {
                if node.role != Role::Etcd {
                    tree.enable_unit(cluster.runtime.unit(), MULTI_USER, true);
                }
            }
            "haproxy" => {
                if lb::wants_haproxy(cluster, node) {
                    tree.enable_unit("haproxy.service", MULTI_USER, true);
                }
            }
            "keepalived" => {
                if lb::wants_keepalived(cluster, node) {
                    tree.enable_unit("keepalived.service", MULTI_USER, true);
                }
            }
            "systemd-networkd" => {
                tree.enable_unit("systemd-networkd.service", MULTI_USER, true);
                tree.enable_unit("systemd-networkd.socket", "sockets.target", true);
                // Makes network-online.target (which firstboot waits for) mean
                // "lan0 is configured".
                tree.enable_unit(
                    "systemd-networkd-wait-online.service",
                    "network-online.target",
                    true,
                );
            }
            "systemd-timesyncd" => {
                tree.enable_unit("systemd-timesyncd.service", "sysinit.target", true)
            }
            other => tree.enable_unit(&format!("{other}.service"), MULTI_USER, true),
        }
    }
}
