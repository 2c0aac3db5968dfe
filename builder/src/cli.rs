//! Command-line interface. `hakube-build --profile ROLE` builds images;
//! `render` and `summary` are the data-only verbs.

use clap::{Args, Parser, Subcommand, ValueEnum};
use hakube_node_profile::Role;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "hakube-build",
    version,
    about = "Bake bootable, immutable qcow2 images for a highly-available kubeadm cluster",
    long_about = "Bake one bootable qcow2 per node of a role. Each image holds an immutable Debian root \
(A/B slots), kubeadm/kubelet/kubectl, the container runtime, CNI plugins, the cluster's PKI and the \
node's profile; the cluster forms itself at first boot.\n\nWith no --cluster, the embedded default \
cluster is used (3 masters with stacked etcd behind a VIP, 1 worker, on libvirt's default network).",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write every node's file tree and Ignition config, without building images.
    Render(RenderArgs),
    /// Print the resolved cluster configuration (nodes, roles, endpoint, topology).
    ///
    /// Loads and validates the spec exactly as a build would, applies the role
    /// profiles and defaults, and prints the result without writing anything.
    /// Warnings (e.g. an even etcd member count) go to stderr. Exit code 2 when
    /// the spec is invalid; the error names the file and the field.
    Summary(SummaryArgs),
}

/// Which cluster and where its secrets live.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Cluster spec (YAML). Without it, the embedded default cluster is used.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,

    /// State directory holding the cluster's CAs, keys and join credentials
    /// (created 0700 on first use, reused by every later build) [default: .hakube/<cluster>]
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,

    /// The cluster has been formed: record that in the state directory (for
    /// good), so every image built from now on, the init node's included,
    /// joins it and never runs kubeadm init
    #[arg(long)]
    pub cluster_initialised: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Master,
    Worker,
    Etcd,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Master => Role::Master,
            RoleArg::Worker => Role::Worker,
            RoleArg::Etcd => Role::Etcd,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// Build the images of every node with this role.
    #[arg(long, value_enum, value_name = "ROLE", required = true)]
    pub profile: Option<RoleArg>,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Build only this node (it must have the --profile role).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,

    /// Output directory; images land in <DIR>/<cluster>/.
    #[arg(long, value_name = "DIR", default_value = "images")]
    pub out: PathBuf,

    /// Artifact mirror (a directory or an http(s) URL) laid out like the upstream
    /// download hosts: <mirror>/<host>/<path>, e.g. <mirror>/dl.k8s.io/release/v1.31.4/bin/linux/amd64/kubeadm.
    /// Without it, artifacts come from their upstream release locations.
    #[arg(long, value_name = "DIR_OR_URL")]
    pub artifacts: Option<String>,

    /// Read the container images of REGISTRY from a mirror: URL's path is a
    /// repository prefix on the mirror host, e.g.
    /// registry.k8s.io=https://127.0.0.1:15443/registry.k8s.io. Repeatable;
    /// registries without a mirror are read from upstream.
    #[arg(long, value_name = "REGISTRY=URL")]
    pub registry_mirror: Vec<crate::images::source::Mirror>,

    /// PEM CA certificate(s) trusted for registries and mirrors, in addition
    /// to the system roots.
    #[arg(long, value_name = "FILE")]
    pub registry_ca: Option<PathBuf>,

    /// Read every container image from this OCI image layout directory
    /// instead of registries (index.json names each image by its full
    /// reference, as `skopeo copy docker://IMAGE oci:DIR:IMAGE` writes it).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["registry_mirror", "registry_ca"])]
    pub image_layout: Option<PathBuf>,

    /// Lock file pinning every artifact's SHA-256 and every image's manifest digest [default: hakube.lock next to
    /// --cluster, or in the current directory for the embedded cluster]
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// Cache directory for downloads and base root filesystems
    /// [default: $XDG_CACHE_HOME/hakube or ~/.cache/hakube]
    #[arg(long, value_name = "DIR", env = "HAKUBE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// After a successful build, keep this many entries of each keyed cache
    /// (base rootfs, OS root, containerd store) besides the build's own, the
    /// most recently used; older ones are deleted. 0 keeps only the build's
    /// own. Downloads are never pruned.
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::cache::DEFAULT_KEEP,
        value_parser = parse_count,
        allow_negative_numbers = true
    )]
    pub cache_keep: u32,

    /// The hakube-firstboot binary to put in the images [default: next to this
    /// executable, where `cargo build --release --workspace` puts it]
    #[arg(long, value_name = "FILE")]
    pub firstboot_bin: Option<PathBuf>,

    /// Give the images to this group, mode 0640 (default: owner only, 0600).
    /// Images hold the cluster's keys: see README, "Who can read what".
    #[arg(long, value_name = "GROUP")]
    pub image_group: Option<String>,

    /// Print a machine-readable JSON result on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A number of entries: 0, 1, 2, ...
fn parse_count(s: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a number of entries (0, 1, 2, ...)"))
}

#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Directory to write <out>/<node>/ trees and <out>/<node>.ign into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Render only this node.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,

    /// Lock file pinning the artifacts a tree is made from (calico's
    /// manifest) [default: as for a build]
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// Cache directory holding those artifacts; render reads them from there
    /// and never downloads [default: as for a build]
    #[arg(long, value_name = "DIR", env = "HAKUBE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SummaryArgs {
    /// Cluster spec (YAML). Without it, the embedded default cluster is shown.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,

    /// State directory to read credential expiry dates from (read only)
    /// [default: .hakube/<cluster>, when it exists]
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,

    /// Print the resolved configuration as one JSON object instead of text:
    /// the resolved spec plus initNode, etcdMembers, kubeadmApiVersion, source,
    /// warnings and containerImages, keys sorted.
    #[arg(long)]
    pub json: bool,

    /// Lock file holding the image pins shown [default: as for a build]
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// Cache directory holding the artifact set's kubeadm, which lists the
    /// images [default: as for a build]
    #[arg(long, value_name = "DIR", env = "HAKUBE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cache_keep_is_a_count() {
        let keep = |extra: &[&str]| {
            let args = [&["hakube-build", "--profile", "worker"], extra].concat();
            Cli::try_parse_from(args).map(|c| c.build.cache_keep)
        };
        assert_eq!(keep(&[]).unwrap(), 3);
        assert_eq!(keep(&["--cache-keep", "0"]).unwrap(), 0);
        assert_eq!(keep(&["--cache-keep", "12"]).unwrap(), 12);
        for bad in ["-1", "three", "", "1.5"] {
            let err = keep(&["--cache-keep", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "--cache-keep {bad:?}");
            assert!(
                err.to_string().contains("is not a number of entries"),
                "{err}"
            );
        }
    }
}
