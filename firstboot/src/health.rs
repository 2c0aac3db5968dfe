//! `hakube-firstboot health`: is this node's role healthy? Used by the OS
//! update to decide commit or rollback, so it answers from live state, not
//! from the journal.

use crate::etcd::{quorum, voting_health};
use crate::steps::Env;
use crate::system::Cmd;
use anyhow::{Context, Result};
use hakube_node_profile::{NodeProfile, Role};

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
        anyhow::bail!("kubelet.service is not active");
    }
    let kubeconfig = env.path(&p.paths.kubelet_kubeconfig);
    let cmd = Cmd::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig.to_string_lossy())
        .args(["get", "node", &p.node_name, "-o", "json"]);
    let out = env.cmd.run(&cmd)?;
    if !out.success() {
        anyhow::bail!("`{cmd}` failed: {}", out.combined());
    }
    match node_ready(&out.stdout)? {
        (true, _) => Ok(match images {
            Some(r) => format!(
                "kubelet active; node {} Ready; {}",
                p.node_name,
                r.summary()
            ),
            None => format!("kubelet active; node {} Ready", p.node_name),
        }),
        (false, why) => anyhow::bail!("node {} is not Ready: {why}", p.node_name),
    }
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
