//! `hakube-firstboot health`: is this node's role healthy? Used by the OS
//! update to decide commit or rollback, so it answers from live state, not
//! from the journal.

use crate::etcd::{quorum, voting_health};
use crate::steps::Env;
use crate::system::Cmd;
use anyhow::{Context, Result};
use hakube_node_profile::{EtcdTopology, NodeProfile, Role};

/// Restarts by systemd itself, on one boot, after which a unit that is still
/// not running is taken as one that cannot start (kubeadm's kubelet unit
/// restarts every 10 s: about a minute of crashing).
pub const CRASH_LOOP_RESTARTS: u32 = 6;

/// This boot's id (the kubelet reports it in the Node's `nodeInfo.bootID`).
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Unhealthy in a way that waiting cannot mend (a unit that crashed again and
/// again on this boot): the health gate stops waiting for its deadline.
#[derive(Debug)]
pub struct Definite(pub String);

impl std::fmt::Display for Definite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Definite {}

/// Whether `err` (or what it wraps) is [`Definite`].
pub fn is_definite(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<Definite>().is_some())
}

/// `unit` is not active: a [`Definite`] failure once systemd restarted it
/// [`CRASH_LOOP_RESTARTS`] times on this boot, else a plain one.
fn not_active(env: &Env, unit: &str) -> anyhow::Error {
    let n = env.svc.restarts(unit);
    if n >= CRASH_LOOP_RESTARTS {
        anyhow::Error::new(Definite(format!(
            "{unit} is not active and systemd restarted it {n} times on this boot: it cannot start \
             (`journalctl -b -u {unit}` says why)"
        )))
    } else {
        anyhow::anyhow!("{unit} is not active")
    }
}

/// `Ok(summary)` when healthy, `Err(reason)` when not.
pub fn check(env: &Env, p: &NodeProfile) -> Result<String> {
    match p.role {
        Role::Etcd => etcd(env, p),
        Role::Master | Role::Worker => kubernetes(env, p),
    }
}

fn etcd(env: &Env, p: &NodeProfile) -> Result<String> {
    let me = p.own_etcd_member().with_context(|| {
        format!(
            "node profile: etcdMembers has no member named {}",
            p.node_name
        )
    })?;
    if !env.etcd.endpoint_healthy(&me.client_url) {
        if !env.svc.is_active(crate::steps::ETCD_UNIT) {
            return Err(not_active(env, crate::steps::ETCD_UNIT));
        }
        anyhow::bail!(
            "etcd member {} at {} does not answer health reads",
            me.name,
            me.client_url
        );
    }
    let members = env
        .etcd
        .member_list(std::slice::from_ref(&me.client_url))
        .context("listing etcd members")?;
    let (voters, healthy, down) = voting_health(env.etcd, &members);
    if healthy.len() < quorum(voters) {
        anyhow::bail!(
            "etcd cluster out of quorum: {} of {voters} voting members healthy; down: {}",
            healthy.len(),
            down.join(", ")
        );
    }
    Ok(format!(
        "etcd member {} healthy; {} of {voters} voting members healthy",
        me.name,
        healthy.len()
    ))
}

fn kubernetes(env: &Env, p: &NodeProfile) -> Result<String> {
    // The disk's images first: without one, a static pod or kube-proxy can
    // never start again (the node has no registry to pull it from).
    let images = crate::steps::check_node_images(&env.root, env.cmd, &p.node_name, p.runtime)
        .context("checking the container images the disk carries")?;
    if let Some(r) = &images {
        if !r.problems.is_empty() {
            anyhow::bail!("container images: {}", r.summary());
        }
    }
    if !env.svc.is_active("kubelet.service") {
        return Err(not_active(env, "kubelet.service"));
    }
    let kubectl = || kubelet_kubectl(env, p);
    let mut parts = vec!["kubelet active".to_string()];
    if p.role == Role::Master {
        parts.extend(control_plane(env, p, kubectl())?);
    }
    let cmd = kubectl().args(["get", "node", &p.node_name, "-o", "json"]);
    let out = env.cmd.run(&cmd)?;
    if !out.success() {
        anyhow::bail!("`{cmd}` failed: {}", out.combined());
    }
    let node = read_node(&out.stdout)?;
    if !node.ready {
        anyhow::bail!("node {} is not Ready: {}", p.node_name, node.why);
    }
    // A Ready condition the kubelet posted before this boot proves nothing
    // about this boot (the node controller takes 40 s to notice a node gone).
    let boot = std::fs::read_to_string(env.path(BOOT_ID))
        .with_context(|| format!("reading this boot's id ({BOOT_ID})"))?;
    let boot = boot.trim();
    if node.boot_id != boot {
        anyhow::bail!(
            "node {} reads Ready, but from another boot (its bootID {:?}, this boot {boot}): \
             the kubelet has not reported since this boot",
            p.node_name,
            node.boot_id
        );
    }
    parts.push(format!("node {} Ready (this boot)", p.node_name));
    if let Some(r) = &images {
        parts.push(r.summary());
    }
    Ok(parts.join("; "))
}

/// A master's own control plane, not the endpoint's: its API server ready
/// (`/readyz` of its own address, which fails while its etcd does) and, with
/// stacked etcd, its own etcd member healthy.
fn control_plane(env: &Env, p: &NodeProfile, kubectl: Cmd) -> Result<Vec<String>> {
    let mut parts = vec![api_server_ready(env, p, kubectl)?];
    if p.etcd_topology == EtcdTopology::Stacked {
        let me = p.own_etcd_member().with_context(|| {
            format!(
                "node profile: etcdMembers has no member named {} (stacked etcd)",
                p.node_name
            )
        })?;
        if !env.etcd.endpoint_healthy(&me.client_url) {
            anyhow::bail!(
                "this master's etcd member {} at {} does not answer health reads",
                me.name,
                me.client_url
            );
        }
        parts.push(format!("etcd member {} healthy", me.name));
    }
    Ok(parts)
}

/// This master's own API server answers `/readyz` with `ok` (asked with
/// `kubectl`, the kubelet's credentials: `/readyz` is public to any
/// authenticated client). Returns what it found, for messages.
pub fn api_server_ready(env: &Env, p: &NodeProfile, kubectl: Cmd) -> Result<String> {
    let host = p
        .address
        .map(|a| a.to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let server = format!("https://{host}:6443");
    let cmd = kubectl
        .arg("--server")
        .arg(&server)
        .args(["get", "--raw", "/readyz"]);
    let out = env.cmd.run(&cmd)?;
    if !out.success() || out.stdout.trim() != "ok" {
        anyhow::bail!(
            "this master's API server at {server} is not ready: {}",
            out.combined().trim()
        );
    }
    Ok(format!("API server {server} ready"))
}

/// `kubectl --kubeconfig <the kubelet's kubeconfig>` on this node.
pub fn kubelet_kubectl(env: &Env, p: &NodeProfile) -> Cmd {
    crate::steps::kubectl_with(&env.path(&p.paths.kubelet_kubeconfig))
}

/// What the health check reads of a Node object (kubectl -o json).
pub struct NodeState {
    pub ready: bool,
    /// The Ready condition, for messages.
    pub why: String,
    /// `status.nodeInfo.bootID`: the boot the kubelet last reported from.
    pub boot_id: String,
}

pub fn read_node(json: &str) -> Result<NodeState> {
    let (ready, why) = node_ready(json)?;
    let v: serde_json::Value = serde_json::from_str(json)?;
    Ok(NodeState {
        ready,
        why,
        boot_id: v["status"]["nodeInfo"]["bootID"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// Reads the Ready condition of a Node object (kubectl -o json).
pub fn node_ready(json: &str) -> Result<(bool, String)> {
    let v: serde_json::Value =
        serde_json::from_str(json).context("parsing the Node object from kubectl")?;
    let conditions = v["status"]["conditions"]
        .as_array()
        .context("the Node object has no status.conditions")?;
    let ready = conditions
        .iter()
        .find(|c| c["type"] == "Ready")
        .context("the Node object has no Ready condition")?;
    let status = ready["status"].as_str().unwrap_or("Unknown");
    let why = format!(
        "Ready={status} ({}: {})",
        ready["reason"].as_str().unwrap_or("-"),
        ready["message"].as_str().unwrap_or("-")
    );
    Ok((status == "True", why))
}
