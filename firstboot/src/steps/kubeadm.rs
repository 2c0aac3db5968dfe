//! Kubernetes control plane: decide init or join, guard against a stale
//! keyspace or a stale stacked etcd member, run kubeadm exactly once.

use super::{log, Ctx};
use crate::etcd::{member_label, quorum, voting_health, Member};
use crate::system::{run_checked, Cmd};
use anyhow::{Context, Result};
use hakube_node_profile::{EtcdTopology, Role};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Journal note: `init` or `join`, decided once by the init node.
pub const DECISION: &str = "decision";
/// Journal note: SHA-256 of the baked apiserver.crt, taken before kubeadm init.
pub const APISERVER_FP: &str = "apiserver.crt.sha256";

/// kubeadm init and join wait for the control plane themselves (their own
/// timeouts are minutes); on an emulated CPU that takes several times longer.
const KUBEADM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

const APISERVER_CRT: &str = "/etc/kubernetes/pki/apiserver.crt";
const APISERVER_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";
const ETCD_MANIFEST: &str = "/etc/kubernetes/manifests/etcd.yaml";
/// Written by `kubeadm join`'s kubelet-start phase; kubeadm deletes it when
/// its kubelet-wait-bootstrap phase returns, also when that phase gives up.
const BOOTSTRAP_KUBELET_CONF: &str = "/etc/kubernetes/bootstrap-kubelet.conf";
/// The kubelet's client certificate: there once its TLS bootstrap finished
/// (kubelet.conf, which points at it, is written before).
const KUBELET_CLIENT_PEM: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";
/// The kubelet's configuration: kubeadm's kubelet-start writes it after its
/// check for a Ready Node of this name, right before it starts the kubelet.
/// Without it no kubelet ran on this disk's behalf.
const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
/// Part of kubeadm's refusal in kubelet-start (1.35-1.37): "a Node with name
/// %q and status %q already exists in the cluster".
const NODE_READY_REFUSAL: &str = "already exists in the cluster";
/// How long a Node of this node's name may go on reading Ready before the
/// join gives up (and retries): the node controller marks a node whose
/// kubelet went silent not Ready after its grace period (40 s by default),
/// so a Node Ready that long is kept so by a live kubelet.
const STALE_NODE_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);
/// The worker's copy of the cluster CA in the image; kubeadm writes its own
/// at the JoinConfiguration's caCertPath during kubelet-start.
const WORKER_CA: &str = "/etc/hakube/pki/ca.crt";
const KUBEADM_CA: &str = "/etc/kubernetes/pki/ca.crt";

fn endpoint_url(ctx: &Ctx) -> String {
    format!("https://{}/readyz", ctx.profile.endpoint.host_port())
}

fn etcd_endpoints(ctx: &Ctx) -> Vec<String> {
    ctx.profile
        .etcd_members
        .iter()
        .map(|m| m.client_url.clone())
        .collect()
}

/// External topology: the etcd cluster is healthy (quorum of voting members).
pub fn wait_etcd(ctx: &mut Ctx) -> Result<String> {
    let eps = etcd_endpoints(ctx);
    let etcd = ctx.env.etcd;
    let summary = ctx.wait_for(
        &format!("external etcd at {}", eps.join(",")),
        ctx.env.waits.remote,
        || {
            let members = etcd.member_list(&eps).map_err(|e| format!("{e:#}"))?;
            let (voters, healthy, down) = voting_health(etcd, &members);
            if healthy.len() >= quorum(voters) {
                Ok(format!("{} of {voters} members healthy", healthy.len()))
            } else {
                Err(format!(
                    "{} of {voters} voting members healthy; not answering: {}",
                    healthy.len(),
                    down.join(", ")
                ))
            }
        },
    )?;
    Ok(format!("etcd in quorum: {summary}"))
}

/// How long the init node must see no sign of a cluster before it decides
/// to initialise one, probing every [`INIT_PROBE_EVERY`]: one missed probe (an
/// API server restarting, the VIP moving, a lost packet) must not start a
/// second cluster.
pub const INIT_SETTLE: std::time::Duration = std::time::Duration::from_secs(30);
const INIT_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A sign that the cluster exists.
enum Seen {
    /// An API server answers here.
    Api(String),
    /// Stacked etcd: other masters' etcd answers (they run it only once
    /// they joined a cluster), though no API server does yet.
    Etcd(Vec<String>),
}

/// One look for a sign of the cluster: an API server at the endpoint or at
/// another master, else (stacked etcd) another master's etcd.
fn look_for_cluster(ctx: &Ctx, urls: &[String]) -> Option<Seen> {
    if let Some(u) = urls.iter().find(|u| ctx.env.probe.https_answers(u)) {
        return Some(Seen::Api(u.clone()));
    }
    if ctx.profile.etcd_topology != EtcdTopology::Stacked {
        return None;
    }
    let etcd: Vec<String> = ctx
        .profile
        .masters
        .iter()
        .filter(|m| m.name != ctx.profile.node_name)
        .map(|m| format!("{}:2379", m.address))
        .filter(|hp| ctx.env.probe.tcp_open(hp))
        .collect();
    (!etcd.is_empty()).then_some(Seen::Etcd(etcd))
}

/// Records the decision to join the cluster `seen` shows (waiting for its
/// API when only its etcd answers), and says why.
fn join_seen(ctx: &mut Ctx, urls: &[String], seen: Seen) -> Result<String> {
    let what = match seen {
        Seen::Api(u) => format!("a cluster already answers at {u}: joining it"),
        Seen::Etcd(etcd) => {
            let why = format!(
                "etcd answers on {} (other masters run etcd only once they joined a cluster), so cluster {} \
                 exists; no API server answers yet, and initialising would create a second cluster",
                etcd.join(", "),
                ctx.profile.cluster_name
            );
            log(&why);
            let u = wait_any_api(ctx, urls, &why)?;
            format!("{why}; it now answers at {u}: joining it")
        }
    };
    ctx.journal.set_note(DECISION, "join")?;
    Ok(what)
}

/// Init node: initialise the cluster only when nothing says one exists.
/// From durable evidence first:
/// - the image says the cluster was already formed (`clusterInitialised`,
///   recorded in the build's state directory): join, waiting as long as it
///   takes for an API server;
/// - an API server answers at the endpoint or at another master: join;
/// - stacked etcd: another master's etcd answers. Masters other than this one
///   run etcd only after joining a cluster, so one exists although no API
///   server answers (it is recovering): wait for it, then join.
///
/// "init" is decided only after [`INIT_SETTLE`] of probes without any sign,
/// and it is not final until kubeadm init starts: `etcd-keyspace` and
/// `kubeadm-init` look again and join a cluster that answers by then. With
/// external etcd, `etcd-keyspace` refuses an init over an existing keyspace.
/// A second cluster is never created on a guess.
pub fn init_or_join(ctx: &mut Ctx) -> Result<String> {
    if let Some(d) = ctx.journal.note(DECISION) {
        return Ok(format!("decided earlier: {d}"));
    }
    let urls = api_urls(ctx);
    if ctx.profile.cluster_initialised {
        log(&format!(
            "the image says cluster {} was formed already (built with --cluster-initialised): this node \
             joins it and never runs kubeadm init",
            ctx.profile.cluster_name
        ));
        let u = wait_any_api(ctx, &urls, "the image says the cluster was formed already")?;
        ctx.journal.set_note(DECISION, "join")?;
        return Ok(format!(
            "the image says the cluster was formed already; it answers at {u}: joining it"
        ));
    }
    let clock = ctx.env.clock;
    let start = clock.now();
    let mut probes = 0;
    loop {
        probes += 1;
        if let Some(seen) = look_for_cluster(ctx, &urls) {
            return join_seen(ctx, &urls, seen);
        }
        let waited = (clock.now() - start).unsigned_abs();
        if waited >= INIT_SETTLE {
            break;
        }
        if probes == 1 {
            log(&format!(
                "no sign of cluster {} yet; looking for {}s before deciding to initialise it",
                ctx.profile.cluster_name,
                INIT_SETTLE.as_secs()
            ));
        }
        clock.sleep(INIT_PROBE_EVERY.min(INIT_SETTLE - waited));
    }
    ctx.journal.set_note(DECISION, "init")?;
    Ok(format!(
        "no API server answered at {}{} in {}s ({probes} looks): this node initialises the cluster",
        urls.join(", "),
        if ctx.profile.etcd_topology == EtcdTopology::Stacked {
            " and no other master ran etcd"
        } else {
            ""
        },
        INIT_SETTLE.as_secs()
    ))
}

/// The decision to initialise, looked at again before anything acts on it:
/// a cluster seen now (its API was unreachable when "init" was decided) is
/// joined instead. `Some(outcome)` when the decision changed to join.
fn redecide(ctx: &mut Ctx) -> Result<Option<String>> {
    let urls = api_urls(ctx);
    match look_for_cluster(ctx, &urls) {
        None => Ok(None),
        Some(seen) => {
            log("the decision to initialise was made while no cluster answered; one does now");
            join_seen(ctx, &urls, seen).map(|w| Some(format!("re-decided: {w}")))
        }
    }
}

/// The endpoint and every other master's API server.
fn api_urls(ctx: &Ctx) -> Vec<String> {
    let mut urls = vec![endpoint_url(ctx)];
    for m in &ctx.profile.masters {
        if m.name != ctx.profile.node_name {
            urls.push(format!("https://{}:6443/readyz", m.address));
        }
    }
    urls
}

/// Waits (as long as remote waits may) until one of `urls` answers.
fn wait_any_api(ctx: &Ctx, urls: &[String], why: &str) -> Result<String> {
    let probe = ctx.env.probe;
    ctx.wait_for(
        &format!(
            "an API server of the existing cluster at {}",
            urls.join(", ")
        ),
        ctx.env.waits.remote,
        || {
            urls.iter()
                .find(|u| probe.https_answers(u))
                .cloned()
                .ok_or_else(|| format!("none answers; not initialising because {why}"))
        },
    )
}

/// Init node, external etcd: refuse to initialise over an existing keyspace.
pub fn etcd_keyspace(ctx: &mut Ctx) -> Result<String> {
    if !ctx.initialises() {
        return Ok("skipped: joining an existing cluster".into());
    }
    let eps = etcd_endpoints(ctx);
    let n = ctx
        .env
        .etcd
        .count_keys(&eps, "/registry/")
        .with_context(|| {
            format!(
                "counting keys under /registry/ in etcd at {}",
                eps.join(",")
            )
        })?;
    if n > 0 {
        // A live cluster whose API did not answer when "init" was decided,
        // or the stale keyspace of a gone one: only an API that answers
        // tells them apart. Looked at again on every attempt.
        if let Some(joined) = redecide(ctx)? {
            return Ok(format!("{n} keys under /registry/: {joined}"));
        }
        anyhow::bail!(
            "refusing to run kubeadm init: the external etcd at {eps} already holds {n} keys under /registry/ \
             (a Kubernetes keyspace from an earlier cluster; kubeadm reset does not clean an external etcd, and \
             a new cluster would start on those stale objects). If that cluster is gone for good, back up etcd \
             (etcdctl snapshot save) and wipe the keyspace deliberately with `etcdctl del --prefix /registry/`, \
             or reimage the etcd nodes; then reboot this node or run `hakube-firstboot run`. If that cluster is \
             still wanted, this node should join it instead: check that its API endpoint {ep} answers. \
             Nothing was deleted.",
            eps = eps.join(","),
            ep = ctx.profile.endpoint.host_port(),
        );
    }
    Ok("no keys under /registry/".into())
}

/// This master's etcd peer URL, and the client URLs of the other masters'
/// stacked etcd members (where to ask about membership).
fn other_masters_etcd(ctx: &Ctx) -> (String, Vec<String>) {
    let me = &ctx.profile.node_name;
    let my_peer = ctx
        .profile
        .address
        .map(|a| format!("https://{a}:2380"))
        .unwrap_or_default();
    let eps = ctx
        .profile
        .etcd_members
        .iter()
        .filter(|m| m.name != *me)
        .map(|m| m.client_url.clone())
        .collect();
    (my_peer, eps)
}

/// Whether `m` is this master's own etcd member: by name, or by peer URL
/// for a member added but not started yet (it has no name until then).
fn is_own_member(m: &Member, me: &str, my_peer: &str) -> bool {
    m.name == me || m.peer_urls.iter().any(|u| u == my_peer)
}

/// Stacked etcd, joining masters: a master rebuilt under the same name must
/// first remove its previous etcd member, or kubeadm's member add fails.
pub fn stale_etcd_member(ctx: &mut Ctx) -> Result<String> {
    if ctx.initialises() {
        return Ok("skipped: this node initialises the cluster".into());
    }
    if ctx.profile.paths.etcd_client.is_none() {
        return Ok("skipped: the profile gives no etcd client certificate".into());
    }
    let data = ctx.path(&ctx.profile.paths.etcd_data_dir);
    if data.join("member").is_dir() {
        return Ok(format!(
            "local etcd data in {} present: not a rebuilt member",
            data.display()
        ));
    }
    let me = &ctx.profile.node_name;
    let (my_peer, eps) = other_masters_etcd(ctx);
    let etcd = ctx.env.etcd;
    let members = ctx.wait_for(
        &format!("stacked etcd on the other masters ({})", eps.join(",")),
        ctx.env.waits.remote,
        || etcd.member_list(&eps).map_err(|e| format!("{e:#}")),
    )?;
    let Some(stale) = members.iter().find(|m| is_own_member(m, me, &my_peer)) else {
        return Ok("no etcd member of this name: nothing to remove".into());
    };
    if !stale.is_learner {
        if let Err(why) = super::etcd_member::quorum_without(ctx, stale, &members) {
            anyhow::bail!(
                "refusing to remove stale etcd member {}: this master was rebuilt, but removing its old member \
                 would leave {why}. Nothing was changed. Bring the other masters back, then reboot this node.",
                member_label(stale)
            );
        }
    }
    etcd.member_remove(&eps, stale.id)
        .with_context(|| format!("removing stale etcd member {}", member_label(stale)))?;
    log(&format!(
        "removed stale stacked etcd member {}",
        member_label(stale)
    ));
    Ok(format!("removed stale etcd member {}", member_label(stale)))
}

/// Stacked masters, before `kubeadm join`: etcd admits one learner at a
/// time, and kubeadm adds the joining master's member as a learner, promoted
/// once it has caught up. A master that joins while another's learner is
/// still catching up has kubeadm retry for its whole etcd API-call timeout
/// and fail half joined (the HA VM run: three masters booted together, the
/// third waited behind the second while both started control planes on a
/// saturated host). So masters join etcd one after the other. Two that find
/// no learner at the same moment are still fine: kubeadm retries the one
/// etcd turns away.
pub fn etcd_learners(ctx: &mut Ctx) -> Result<String> {
    if ctx.initialises() {
        return Ok("skipped: this node initialises the cluster".into());
    }
    if ctx.profile.paths.etcd_client.is_none() {
        return Ok("skipped: the profile gives no etcd client certificate".into());
    }
    let me = &ctx.profile.node_name;
    let (my_peer, eps) = other_masters_etcd(ctx);
    let etcd = ctx.env.etcd;
    let members = ctx.wait_for(
        "the other masters' etcd learners to be promoted (etcd admits one learner at a time; \
         if a learner's master is gone for good, remove its member)",
        ctx.env.waits.remote,
        || {
            let members = etcd.member_list(&eps).map_err(|e| format!("{e:#}"))?;
            let learners: Vec<String> = members
                .iter()
                .filter(|m| m.is_learner && !is_own_member(m, me, &my_peer))
                .map(member_label)
                .collect();
            if learners.is_empty() {
                Ok(members.len())
            } else {
                Err(format!("learner {} still catching up", learners.join(", ")))
            }
        },
    )?;
    Ok(format!(
        "no other master's etcd learner among {members} members"
    ))
}

/// Joining nodes: the API endpoint answers.
pub fn wait_api(ctx: &mut Ctx) -> Result<String> {
    let url = endpoint_url(ctx);
    let probe = ctx.env.probe;
    ctx.wait_for(
        &format!("the Kubernetes API at {url}"),
        ctx.env.waits.remote,
        || {
            if probe.https_answers(&url) {
                Ok(())
            } else {
                Err("no TLS answer".to_string())
            }
        },
    )?;
    Ok(format!("{url} answers"))
}

fn fingerprint(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// `kubeadm init`, at most once per node. An earlier attempt (journal says
/// running or failed) means kubeadm may have changed the node: this never
/// runs a second full init but finishes from what it finds, or stops.
pub fn kubeadm_init(ctx: &mut Ctx) -> Result<String> {
    if !ctx.initialises() {
        return Ok("skipped: joining an existing cluster".into());
    }
    let config = ctx.path(
        ctx.profile
            .paths
            .kubeadm_config
            .as_deref()
            .context("node profile: paths.kubeadmConfig is missing")?,
    );
    let crt = ctx.path(APISERVER_CRT);
    if ctx.resumed() {
        return resume_init(ctx, &config);
    }
    if let Some(joined) = redecide(ctx)? {
        return Ok(format!("skipped: {joined}"));
    }
    let fp = fingerprint(&crt)
        .context("the baked API server certificate must be in place before kubeadm init")?;
    ctx.journal.set_note(APISERVER_FP, &fp)?;
    let cmd = Cmd::new("kubeadm")
        .args(["init", "--config"])
        .arg(config.to_string_lossy())
        .timeout(KUBEADM_TIMEOUT);
    if let Err(init) = run_checked(ctx.env.cmd, &cmd) {
        // kubeadm gives up on its own timeouts; once it has written the
        // control plane (kubelet.conf and the API server manifest) the rest
        // of init is idempotent phases, which finish it against the control
        // plane the kubelet keeps running. Before that point nothing is
        // retried: a second full init is never run.
        if !init_control_plane_written(ctx) {
            return Err(init.context("kubeadm init failed; it will not be re-run automatically"));
        }
        log(&format!(
            "kubeadm init stopped after writing the control plane ({init:#}); finishing it with its phases"
        ));
        return resume_init(ctx, &config).map_err(|resume| {
            resume.context(format!(
                "kubeadm init failed ({init:#}) and finishing it with its phases failed too; \
                 neither will be re-run automatically"
            ))
        });
    }
    check_certs_kept(ctx)?;
    Ok("kubeadm init done; baked certificates kept".into())
}

/// Whether an init got as far as the control plane: only what kubeadm
/// itself writes tells (admin.conf is baked into the image, so its presence
/// says nothing): kubelet.conf from the kubeconfig phase, the API server's
/// manifest from the control-plane phase.
fn init_control_plane_written(ctx: &Ctx) -> bool {
    ctx.path(&ctx.profile.paths.kubelet_kubeconfig).exists()
        && ctx.path(APISERVER_MANIFEST).exists()
}

fn check_certs_kept(ctx: &Ctx) -> Result<()> {
    let crt = ctx.path(APISERVER_CRT);
    let now = fingerprint(&crt)?;
    match ctx.journal.note(APISERVER_FP) {
        Some(before) if before == now => Ok(()),
        Some(before) => anyhow::bail!(
            "kubeadm replaced the baked API server certificate {} (sha256 {before} before, {now} after): \
             the image's certificates do not match its kubeadm config (SANs or CA); rebuild the images",
            crt.display()
        ),
        None => anyhow::bail!("the journal has no fingerprint of {} from before kubeadm init", crt.display()),
    }
}

/// Phases that finish an init whose control plane is up. Each is idempotent.
/// With the kube-proxy addon config, the addons are CoreDNS alone: kube-proxy
/// comes from the `kube-proxy` step, with its own endpoint. `addon all`
/// would deploy it against the control-plane endpoint: a phase run on its own
/// does not honour init.yaml's `skipPhases` (kubeadm 1.37.2's dry run shows
/// it), only a whole `kubeadm init` does.
fn finish_phases(ctx: &Ctx) -> [&'static [&'static str]; 5] {
    let addons: &[&str] = if ctx.profile.paths.kube_proxy_addon_config.is_some() {
        &["addon", "coredns"]
    } else {
        &["addon", "all"]
    };
    [
        &["upload-config", "all"],
        &["mark-control-plane"],
        &["bootstrap-token"],
        &["kubelet-finalize", "all"],
        addons,
    ]
}

fn resume_init(ctx: &mut Ctx, config: &Path) -> Result<String> {
    let kubelet_conf = ctx.path(&ctx.profile.paths.kubelet_kubeconfig).exists();
    let manifest = ctx.path(APISERVER_MANIFEST).exists();
    let local_api = format!(
        "https://{}:6443/readyz",
        ctx.profile
            .address
            .map(|a| a.to_string())
            .unwrap_or_else(|| "127.0.0.1".into())
    );
    let found = format!(
        "kubelet.conf {}, kube-apiserver manifest {}",
        if kubelet_conf { "present" } else { "missing" },
        if manifest { "present" } else { "missing" }
    );
    if !(kubelet_conf && manifest) {
        anyhow::bail!(
            "kubeadm init was started on this node before and did not finish ({found}); a second full \
             kubeadm init is never run. To start over deliberately: `kubeadm reset -f` on this node (and, with \
             external etcd, back up and `etcdctl del --prefix /registry/`), then \
             `hakube-firstboot run --retry kubeadm-init`."
        );
    }
    log(&format!(
        "kubeadm init was interrupted ({found}): finishing it"
    ));
    if !ctx.env.probe.https_answers(&local_api) {
        ctx.env.svc.start("kubelet.service")?;
        let probe = ctx.env.probe;
        ctx.wait_for(
            &format!("the local API server at {local_api}"),
            Some(ctx.env.waits.local),
            || {
                if probe.https_answers(&local_api) {
                    Ok(())
                } else {
                    Err("no TLS answer".into())
                }
            },
        )
        .context(
            "the control plane of the interrupted kubeadm init does not come up; inspect \
             `journalctl -u kubelet` and `crictl ps -a`, or start over with `kubeadm reset -f` and \
             `hakube-firstboot run --retry kubeadm-init`",
        )?;
    }
    let mut ran = Vec::new();
    for phase in finish_phases(ctx) {
        if phase == ["mark-control-plane"] {
            wait_own_node(ctx)?;
        }
        let cmd = Cmd::new("kubeadm")
            .args(["init", "phase"])
            .args(phase.iter().copied())
            .arg("--config")
            .arg(config.to_string_lossy());
        run_checked(ctx.env.cmd, &cmd)?;
        ran.push(phase.join(" "));
    }
    check_certs_kept(ctx)?;
    Ok(format!(
        "resumed an interrupted kubeadm init: ran phases {}",
        ran.join(", ")
    ))
}

/// Init node with the node-local load balancer: kube-proxy, deployed by
/// kubeadm's own addon phase (which `kubeadm init` skipped) from a config
/// whose endpoint is the local balancer, so kube-proxy never talks to the API
/// any other way and is never restarted to change that. The phase creates or
/// updates its objects, so running it again is harmless.
pub fn kube_proxy(ctx: &mut Ctx) -> Result<String> {
    if !ctx.initialises() {
        return Ok("skipped: joined an existing cluster".into());
    }
    let config = ctx.path(
        ctx.profile
            .paths
            .kube_proxy_addon_config
            .as_deref()
            .context("node profile: paths.kubeProxyAddonConfig is missing")?,
    );
    let cmd = Cmd::new("kubeadm")
        .args(["init", "phase", "addon", "kube-proxy", "--config"])
        .arg(config.to_string_lossy())
        .timeout(KUBEADM_TIMEOUT);
    run_checked(ctx.env.cmd, &cmd).context("deploying kube-proxy")?;
    Ok(format!(
        "kube-proxy deployed; it reaches the API through 127.0.0.1:{}",
        ctx.profile.local_lb.port
    ))
}

/// `kubeadm join --config` (control plane on masters: join.yaml has a
/// controlPlane section; kubeadm refuses --control-plane next to --config).
pub fn kubeadm_join(ctx: &mut Ctx) -> Result<String> {
    if ctx.initialises() {
        return Ok("skipped: this node initialised the cluster".into());
    }
    let p = &ctx.profile.paths;
    let cfg = if ctx.profile.init_node {
        p.kubeadm_join_config
            .as_deref()
            .context("node profile: paths.kubeadmJoinConfig is missing on the init node")?
    } else {
        p.kubeadm_config
            .as_deref()
            .context("node profile: paths.kubeadmConfig is missing")?
    };
    let config = ctx.path(cfg);
    let kubelet_conf = ctx.path(&p.kubelet_kubeconfig);
    let bootstrap_conf = ctx.path(BOOTSTRAP_KUBELET_CONF);
    let master = ctx.profile.role == Role::Master;
    // kubeadm got as far as starting the kubelet in its kubelet-start phase
    // (past its check for a Ready Node of this name): a master's join goes on
    // with etcd-join and the kubelet's bootstrap from there. kubeadm writes
    // bootstrap-kubelet.conf before that check, so that file alone is not it.
    let kubelet_configured = ctx.path(KUBELET_CONFIG);
    let kubelet_started = || {
        kubelet_conf.exists() || (master && bootstrap_conf.exists() && kubelet_configured.exists())
    };
    if kubelet_started() {
        // A previous attempt got at least as far as the kubelet's TLS bootstrap.
        if master && !ctx.path(APISERVER_MANIFEST).exists() {
            anyhow::bail!(
                "an earlier kubeadm join on this master stopped half way ({} exists, {} does not); \
                 run `kubeadm reset -f`, then `hakube-firstboot run --retry kubeadm-join`",
                kubelet_conf.display(),
                APISERVER_MANIFEST
            );
        }
        ctx.env.svc.start("kubelet.service")?;
        if !master {
            let ran = finish_worker_join(ctx, &config)?;
            return Ok(format!(
                "already joined ({} exists); kubelet started{ran}",
                kubelet_conf.display()
            ));
        }
        let ran = finish_control_plane_join(ctx, &config)?;
        return Ok(format!(
            "resumed an interrupted control-plane join ({} existed; kubelet started): ran phases {ran}",
            kubelet_conf.display()
        ));
    }
    // A fresh join: whatever an earlier attempt left before it configured
    // the kubelet would fail kubeadm's preflight on every retry.
    clear_pre_kubelet_leftovers(ctx)?;
    let waited = wait_stale_node(ctx, &config)?;
    let joined = |what: &str| match &waited {
        Some(w) => format!("{w}; {what}"),
        None => what.to_string(),
    };
    let cmd = Cmd::new("kubeadm")
        .args(["join", "--config"])
        .arg(config.to_string_lossy())
        .timeout(KUBEADM_TIMEOUT);
    match run_checked(ctx.env.cmd, &cmd) {
        Ok(_) if master => Ok(joined("joined as a control-plane node")),
        Ok(_) => Ok(joined("joined as a worker")),
        // Stopped before the kubelet was configured (kubeadm's refusal of a
        // Ready Node of this name among others): nothing ran; what kubeadm
        // wrote goes, so the retry is a fresh join, never a resumed one.
        Err(e) if !ctx.path(KUBELET_CONFIG).exists() => {
            clear_pre_kubelet_leftovers(ctx)?;
            let me = &ctx.profile.node_name;
            if format!("{e:#}").contains(NODE_READY_REFUSAL) {
                Err(e.context(format!(
                    "kubeadm join refused: a Node named {me} reads Ready (a machine this disk replaced \
                     that the node controller has not yet marked not Ready, or a live one running as \
                     {me}); retried from scratch"
                )))
            } else {
                Err(e.context(
                    "kubeadm join failed before it configured the kubelet; retried from scratch",
                ))
            }
        }
        // Failed after the kubelet's bootstrap, in etcd-join or later: the
        // rest is done by kubeadm's own phases, now rather than a restart later.
        // A worker whose kubelet's TLS bootstrap outlasted kubeadm's wait:
        // kubeadm removed the bootstrap kubeconfig the kubelet still needs.
        Err(e) if !master && kubelet_started() => {
            log(&format!(
                "kubeadm join failed after the kubelet was started; finishing its bootstrap: {e:#}"
            ));
            let ran = finish_worker_join(ctx, &config)?;
            Ok(joined(&format!(
                "joined as a worker (kubeadm join failed after starting the kubelet{ran})"
            )))
        }
        Err(e) if master && kubelet_started() && ctx.path(APISERVER_MANIFEST).exists() => {
            log(&format!(
                "kubeadm join failed after the kubelet's bootstrap; finishing with its phases: {e:#}"
            ));
            let ran = finish_control_plane_join(ctx, &config)?;
            Ok(format!(
                "joined as a control-plane node (kubeadm join failed after the kubelet's bootstrap; ran phases {ran})"
            ))
        }
        Err(e) => Err(e.context("kubeadm join failed")),
    }
}

/// What `kubeadm join` writes before it configures the kubelet that its
/// preflight refuses to find on the next attempt: bootstrap-kubelet.conf
/// and, on a worker, its copy of the CA (kubelet-start, before its Ready
/// Node check); on a master the control-plane manifests (control-plane-
/// prepare). None is in the image; with no kubelet configuration no kubelet
/// ever ran them. Removed (each named in the log) while the kubelet is not
/// configured.
fn clear_pre_kubelet_leftovers(ctx: &Ctx) -> Result<()> {
    if ctx.path(KUBELET_CONFIG).exists() {
        return Ok(());
    }
    let mut files = vec![BOOTSTRAP_KUBELET_CONF];
    match ctx.profile.role {
        Role::Master => files.extend([
            APISERVER_MANIFEST,
            "/etc/kubernetes/manifests/kube-controller-manager.yaml",
            "/etc/kubernetes/manifests/kube-scheduler.yaml",
        ]),
        _ => files.push(KUBEADM_CA),
    }
    for f in files {
        let path = ctx.path(f);
        if path.exists() {
            log(&format!(
                "removing {f}: written by a kubeadm join that stopped before it configured the kubelet"
            ));
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The join credentials of a JoinConfiguration: the API endpoint and the
/// bootstrap token kubeadm's kubelet-start uses (`tlsBootstrapToken`, else
/// discovery's token).
fn join_credentials(config: &Path) -> Result<(String, String)> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = serde_yaml_ng::Value::deserialize(doc)
            .with_context(|| format!("{}: not YAML", config.display()))?;
        if v["kind"].as_str() != Some("JoinConfiguration") {
            continue;
        }
        let d = &v["discovery"];
        let token = d["tlsBootstrapToken"]
            .as_str()
            .or_else(|| d["bootstrapToken"]["token"].as_str());
        let endpoint = d["bootstrapToken"]["apiServerEndpoint"].as_str();
        if let (Some(t), Some(e)) = (token, endpoint) {
            return Ok((e.to_string(), t.to_string()));
        }
    }
    anyhow::bail!(
        "{}: no JoinConfiguration with discovery.bootstrapToken.apiServerEndpoint and a token",
        config.display()
    )
}

/// A Node of this node's name that reads Ready blocks kubeadm's join (a disk
/// reimaged and booted within the node controller's grace period finds the
/// Node of the machine it replaced still Ready): waited for until it leaves
/// Ready, as long as [`STALE_NODE_LIMIT`]. Read with the join token, as
/// kubeadm reads it. `Some(what)` when it waited; when the Node cannot be
/// read, kubeadm's own check decides.
fn wait_stale_node(ctx: &Ctx, config: &Path) -> Result<Option<String>> {
    let me = ctx.profile.node_name.clone();
    let Some(ca) = [WORKER_CA, KUBEADM_CA]
        .into_iter()
        .map(|c| ctx.path(c))
        .find(|c| c.exists())
    else {
        return Ok(None);
    };
    let (endpoint, token) = match join_credentials(config) {
        Ok(c) => c,
        Err(e) => {
            log(&format!(
                "cannot read Node {me} before joining ({e:#}); kubeadm's own check decides"
            ));
            return Ok(None);
        }
    };
    let get = super::cluster::kubectl_bare()
        .arg("--server")
        .arg(format!("https://{endpoint}"))
        .arg("--certificate-authority")
        .arg(ca.to_string_lossy())
        .secret_arg(format!("--token={token}"))
        .args(["--request-timeout=20s", "get", "node", &me, "-o", "json"])
        .timeout(std::time::Duration::from_secs(60));
    let cmd = ctx.env.cmd;
    // Ok(None): not Ready or no such Node; Err: unreadable.
    let read = || -> std::result::Result<Option<String>, String> {
        let out = cmd.run(&get).map_err(|e| format!("{e:#}"))?;
        if !out.success() {
            return if out.combined().contains("NotFound") {
                Ok(None)
            } else {
                // kubectl's last line says it (client-go's retries before it
                // repeat the same).
                let text = out.combined();
                let last = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default();
                Err(get.redact(last.trim()))
            };
        }
        let node = crate::health::read_node(&out.stdout).map_err(|e| format!("{e:#}"))?;
        Ok(node.ready.then_some(node.why))
    };
    match read() {
        Ok(None) => return Ok(None),
        Err(why) => {
            log(&format!(
                "cannot read Node {me} before joining ({why}); kubeadm's own check decides"
            ));
            return Ok(None);
        }
        Ok(Some(_)) => {}
    }
    log(&format!(
        "a Node named {me} reads Ready: the machine this disk replaced, not yet marked not Ready by the \
         node controller, or a live machine running as {me}; kubeadm would refuse to join, so waiting for \
         it to leave Ready"
    ));
    let start = ctx.env.clock.now();
    ctx.wait_for(
        &format!("the Node {me} of an earlier machine to leave Ready"),
        Some(STALE_NODE_LIMIT),
        || match read() {
            Ok(Some(why)) => Err(format!("still {why}")),
            _ => Ok(()),
        },
    )
    .with_context(|| {
        format!(
            "a Node named {me} stays Ready: a live machine seems to run as {me}; power it off (or \
             `kubectl delete node {me}` if it is gone) and this node joins on its next attempt"
        )
    })?;
    Ok(Some(format!(
        "waited {}s for the Node {me} of the machine it replaced to leave Ready",
        (ctx.env.clock.now() - start).whole_seconds()
    )))
}

/// The rest of a master's join after the kubelet's bootstrap. `etcd-join`
/// adds this node's stacked etcd member as a learner and promotes it once it
/// has caught up; `control-plane-join all` marks the node. A join that
/// failed there (etcd too slow to answer under load: seen in the HA VM test)
/// leaves an unpromoted learner, and etcd takes one learner at a time, so no
/// other master could join either. Both phases are idempotent (an existing
/// member is not added again, a voting member is not promoted again, and
/// external etcd is skipped); kubeadm 1.35-1.37 name them the same.
///
/// When kubeadm got as far as writing this node's etcd manifest and adding
/// its member, the promotion is done here first ([`promote_own_learner`]),
/// and `etcd-join` is skipped once the member votes: that phase gives every
/// etcd call 2 s and gives up on the first failed member list, which under
/// load failed three attempts in a row on master-3 of the HA VM run while its
/// learner sat started and in sync.
///
/// `control-plane-join all` runs only once the kubelet has registered this
/// node ([`wait_own_node`]).
fn finish_control_plane_join(ctx: &Ctx, config: &Path) -> Result<String> {
    let mut ran = Vec::new();
    let join_phase = |phase: &[&str]| {
        let cmd = Cmd::new("kubeadm")
            .args(["join", "phase"])
            .args(phase.iter().copied())
            .arg("--config")
            .arg(config.to_string_lossy())
            .timeout(KUBEADM_TIMEOUT);
        run_checked(ctx.env.cmd, &cmd)
            .with_context(|| format!("finishing the control-plane join: {}", cmd.line()))
            .map(|_| phase.join(" "))
    };
    // A joining master's kubelet bootstraps against this master's own API
    // server, which answers only once this master's etcd member votes; under
    // load that took longer than kubeadm's tlsBootstrap wait (10 minutes,
    // master-2 of HA run 6), and kubeadm then deletes the bootstrap
    // kubeconfig, leaving a kubelet that can never get its certificate.
    // kubelet-start writes it again (from the baked join token) and restarts
    // the kubelet; the wait for the node below is not bounded by kubeadm.
    if needs_bootstrap_again(ctx) {
        ran.push(join_phase(&["kubelet-start"])?);
    }
    let promoted = promote_own_learner(ctx)?;
    let phases: &[&[&str]] = if promoted.is_some() {
        &[&["control-plane-join", "all"]]
    } else {
        &[&["etcd-join"], &["control-plane-join", "all"]]
    };
    for phase in phases {
        if phase[0] == "control-plane-join" {
            wait_own_node(ctx)?;
        }
        ran.push(join_phase(phase)?);
    }
    // The node is registered, so the bootstrap is over: its token credential
    // goes, as kubeadm removes it after a join that went through.
    let bootstrap = ctx.path(BOOTSTRAP_KUBELET_CONF);
    if bootstrap.exists() {
        std::fs::remove_file(&bootstrap)
            .with_context(|| format!("removing {}", bootstrap.display()))?;
    }
    Ok(match promoted {
        Some(how) => format!("{how}; {}", ran.join(", ")),
        None => ran.join(", "),
    })
}

/// The kubelet has no client certificate and kubeadm removed its bootstrap
/// kubeconfig when its wait gave up (said in the log): kubeadm's
/// kubelet-start must write it again.
fn needs_bootstrap_again(ctx: &Ctx) -> bool {
    let lost = !ctx.path(KUBELET_CLIENT_PEM).exists() && !ctx.path(BOOTSTRAP_KUBELET_CONF).exists();
    if lost {
        log(&format!(
            "the kubelet has no client certificate ({KUBELET_CLIENT_PEM}) and kubeadm removed its bootstrap \
             kubeconfig ({BOOTSTRAP_KUBELET_CONF}) when its wait gave up: writing it again"
        ));
    }
    lost
}

/// The rest of a worker's join once kubeadm started its kubelet: the
/// bootstrap kubeconfig written again if the kubelet never got its
/// certificate (its TLS bootstrap outlasted kubeadm's 10-minute wait under a
/// loaded control plane, as masters saw in the HA VM runs), then the wait
/// for the kubelet to register the node, with no limit but the remote
/// waits'. Returns what it ran, for the step's outcome.
fn finish_worker_join(ctx: &Ctx, config: &Path) -> Result<String> {
    let mut ran = String::new();
    if needs_bootstrap_again(ctx) {
        let cmd = Cmd::new("kubeadm")
            .args(["join", "phase", "kubelet-start", "--config"])
            .arg(config.to_string_lossy())
            .timeout(KUBEADM_TIMEOUT);
        run_checked(ctx.env.cmd, &cmd)
            .context("writing the kubelet's bootstrap kubeconfig again")?;
        ran.push_str("; ran phase kubelet-start (bootstrap kubeconfig written again)");
    }
    wait_own_node(ctx).context("the kubelet has not registered this node")?;
    let bootstrap = ctx.path(BOOTSTRAP_KUBELET_CONF);
    if bootstrap.exists() {
        std::fs::remove_file(&bootstrap)
            .with_context(|| format!("removing {}", bootstrap.display()))?;
    }
    Ok(ran)
}

/// This node's Node object exists: the kubelet has registered it. kubeadm's
/// mark-control-plane (in `control-plane-join all`, and in an init's
/// phases) patches that object and gives up after `kubernetesAPICall` (5
/// minutes in hakube's configs); on master-2 of two HA VM runs the kubelet,
/// started by the join under a loaded control plane, registered later than
/// that (`nodes "master-2" not found`). Asked with the kubelet's own
/// credentials (the node authorizer lets a kubelet read its own Node), as
/// long as remote waits may take, with each request bounded.
fn wait_own_node(ctx: &Ctx) -> Result<()> {
    let me = &ctx.profile.node_name;
    let kubeconfig = ctx.path(&ctx.profile.paths.kubelet_kubeconfig);
    let get = super::cluster::kubectl_with(&kubeconfig)
        .args(["--request-timeout=20s", "get", "node", me, "-o", "name"])
        .timeout(std::time::Duration::from_secs(60));
    let cmd = ctx.env.cmd;
    ctx.wait_for(
        &format!("the kubelet to register node {me}"),
        ctx.env.waits.remote,
        || {
            let out = cmd.run(&get).map_err(|e| format!("{e:#}"))?;
            if out.success() {
                Ok(())
            } else {
                Err(out.combined().trim().to_string())
            }
        },
    )
    .context("the Node object kubeadm's mark-control-plane patches is not there")
}

/// Stacked etcd, a master whose `kubeadm join` stopped in or after
/// `etcd-join`: when kubeadm wrote this node's etcd manifest and its member
/// is listed, the member is made a voter here, with patient retries (etcd
/// refuses to promote a learner that has not caught up). Returns what it
/// found or did, or `None` when kubeadm's `etcd-join` phase must run (no
/// manifest yet, no member yet, or external etcd).
fn promote_own_learner(ctx: &Ctx) -> Result<Option<String>> {
    if ctx.profile.paths.etcd_client.is_none() || ctx.profile.etcd_members.is_empty() {
        return Ok(None);
    }
    let manifest = ctx.path(ETCD_MANIFEST);
    if !manifest.exists() {
        return Ok(None);
    }
    let me = &ctx.profile.node_name;
    let (my_peer, eps) = other_masters_etcd(ctx);
    let etcd = ctx.env.etcd;
    let outcome = ctx.wait_for(
        &format!("this master's etcd member ({my_peer}) to be promoted to a voting member"),
        ctx.env.waits.remote,
        || {
            let members = etcd.member_list(&eps).map_err(|e| format!("{e:#}"))?;
            let Some(mine) = members.iter().find(|m| is_own_member(m, me, &my_peer)) else {
                return Ok(None);
            };
            if !mine.is_learner {
                return Ok(Some(format!(
                    "etcd member {} already voting",
                    member_label(mine)
                )));
            }
            etcd.member_promote(&eps, mine.id)
                .map(|()| Some(format!("promoted etcd learner {}", member_label(mine))))
                .map_err(|e| format!("learner {}: {e:#}", member_label(mine)))
        },
    )?;
    if let Some(how) = &outcome {
        log(&format!(
            "{how}; kubeadm's etcd-join phase has nothing left to do"
        ));
    }
    Ok(outcome)
}
