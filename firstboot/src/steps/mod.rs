//! The steps of first boot, as a table per role, and the engine that runs
//! them against the journal.
//!
//! Every step is idempotent: it checks what already exists before acting, so
//! re-running a step that a power cut interrupted is safe. The journal decides
//! what is left: steps recorded `done` are never run again.

mod cluster;
mod etcd_member;
mod images;
pub(crate) use cluster::kubectl_with;
pub use etcd_member::UNIT as ETCD_UNIT;
pub use images::{check_node_images, ready_node_images, ImagesReport};
mod kubeadm;
mod node;
#[cfg(test)]
mod tests;

use crate::etcd::EtcdApi;
use crate::journal::{Journal, StepState};
use crate::system::{rfc3339, Clock, CommandRunner, Probe, ServiceManager};
use anyhow::Result;
use hakube_node_profile::{EndpointMode, EtcdTopology, NodeProfile, Role};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long to wait for things.
#[derive(Debug, Clone)]
pub struct Waits {
    /// Other nodes (peers, the API endpoint). `None`: wait as long as it takes,
    /// logging at least once a minute; nodes of a cluster boot in any order.
    pub remote: Option<Duration>,
    /// Things on this node (runtime socket, own etcd member, own apiserver).
    pub local: Duration,
    /// A new etcd learner catching up before it can be promoted.
    pub promote: Duration,
    /// How long a quorum check may take to come out right before firstboot
    /// refuses a membership change (a leader election after a member died
    /// makes healthy members fail reads for a few seconds).
    pub settle: Duration,
    /// Longest pause between two checks.
    pub max_backoff: Duration,
}

impl Default for Waits {
    fn default() -> Waits {
        Waits {
            remote: None,
            local: Duration::from_secs(600),
            promote: Duration::from_secs(600),
            settle: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// The outside world, as the steps see it.
pub struct Env<'a> {
    /// Every path of the profile is resolved under this root.
    pub root: PathBuf,
    pub cmd: &'a dyn CommandRunner,
    pub svc: &'a dyn ServiceManager,
    pub etcd: &'a dyn EtcdApi,
    pub probe: &'a dyn Probe,
    pub clock: &'a dyn Clock,
    pub waits: Waits,
}

impl Env<'_> {
    /// A node path (absolute, as in the profile) under the root.
    pub fn path(&self, node_path: &str) -> PathBuf {
        under(&self.root, node_path)
    }
}

/// `node_path` (absolute inside the node) resolved under `root`.
pub fn under(root: &Path, node_path: &str) -> PathBuf {
    root.join(node_path.trim_start_matches('/'))
}

/// Logs one line to stderr (the unit sends it to the journal and the console).
pub fn log(msg: &str) {
    eprintln!("hakube-firstboot: {msg}");
}

/// What a step sees.
pub struct Ctx<'a> {
    pub env: &'a Env<'a>,
    pub profile: &'a NodeProfile,
    pub journal: &'a mut Journal,
    /// The step's state before this attempt: `running` or `failed` mean an
    /// earlier attempt started it and did not finish cleanly.
    pub prior: StepState,
}

impl Ctx<'_> {
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.env.path(node_path)
    }

    /// Was this step started before (and not completed)?
    pub fn resumed(&self) -> bool {
        matches!(self.prior, StepState::Running | StepState::Failed)
    }

    /// Waits with exponential backoff (1 s doubling to `max_backoff`) until
    /// `check` returns `Ok`. Its `Err` text says why it is not ready yet and is
    /// logged at least once a minute. Gives up, loudly, after `limit`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Option<Duration>,
        mut check: impl FnMut() -> std::result::Result<T, String>,
    ) -> Result<T> {
        let clock = self.env.clock;
        let start = clock.now();
        let mut delay = Duration::from_secs(1);
        let mut last_log: Option<time::OffsetDateTime> = None;
        loop {
            let why = match check() {
                Ok(v) => {
                    if last_log.is_some() {
                        log(&format!(
                            "{what}: ready after {}s",
                            (clock.now() - start).whole_seconds()
                        ));
                    }
                    return Ok(v);
                }
                Err(why) => why,
            };
            let now = clock.now();
            let waited = now - start;
            if let Some(limit) = limit {
                if waited >= limit {
                    anyhow::bail!(
                        "gave up waiting for {what} after {}s: {why}",
                        waited.whole_seconds()
                    );
                }
            }
            let due = last_log.is_none_or(|t| now - t >= time::Duration::seconds(60));
            if due {
                log(&format!(
                    "waiting for {what} ({}s so far): {why}",
                    waited.whole_seconds()
                ));
                last_log = Some(now);
            }
            clock.sleep(delay);
            delay = (delay * 2).min(self.env.waits.max_backoff);
        }
    }

    /// Does this (init) node initialise the cluster, or join one that answers?
    pub fn initialises(&self) -> bool {
        self.profile.init_node && self.journal.note(kubeadm::DECISION) != Some("join")
    }
}

/// One row of the table.
pub struct Step {
    pub name: &'static str,
    /// Returns what it found or did, in a few words, for the journal.
    pub run: fn(&mut Ctx) -> Result<String>,
    /// Run again on every boot even when done: a check that keeps something
    /// true over time (the join token's expiry), not a one-time change.
    pub every_boot: bool,
}

const fn step(name: &'static str, run: fn(&mut Ctx) -> Result<String>) -> Step {
    Step {
        name,
        run,
        every_boot: false,
    }
}

const fn every_boot(name: &'static str, run: fn(&mut Ctx) -> Result<String>) -> Step {
    Step {
        name,
        run,
        every_boot: true,
    }
}

/// The steps of this node's role, in order. Rows that depend only on the
/// profile are left out here; rows that depend on what the node finds at boot
/// (init or join) are always listed and record "skipped: ..." when they do
/// not apply.
pub fn plan(p: &NodeProfile) -> Vec<Step> {
    let mut s = vec![step("identity", node::identity)];
    let lb = p.local_lb.enabled || (p.role == Role::Master && p.endpoint.mode == EndpointMode::Vip);
    match p.role {
        Role::Etcd => s.push(step("etcd-member", etcd_member::etcd_member)),
        Role::Master => {
            s.push(step("container-runtime", node::container_runtime));
            s.push(step("container-images", images::container_images));
            if lb {
                s.push(step("load-balancer", node::load_balancer));
            }
            if p.endpoint.mode == EndpointMode::Vip {
                s.push(step("vip", node::vip));
            }
            if p.etcd_topology == EtcdTopology::External {
                s.push(step("wait-etcd", kubeadm::wait_etcd));
            }
            if p.init_node {
                s.push(step("init-or-join", kubeadm::init_or_join));
                if p.etcd_topology == EtcdTopology::External {
                    s.push(step("etcd-keyspace", kubeadm::etcd_keyspace));
                }
            } else {
                s.push(step("wait-api", kubeadm::wait_api));
            }
            if p.etcd_topology == EtcdTopology::Stacked {
                s.push(step("stale-etcd-member", kubeadm::stale_etcd_member));
                s.push(step("etcd-learners", kubeadm::etcd_learners));
            }
            if p.init_node {
                s.push(step("kubeadm-init", kubeadm::kubeadm_init));
                if p.paths.kube_proxy_addon_config.is_some() {
                    s.push(step("kube-proxy", kubeadm::kube_proxy));
                }
            }
            s.push(step("kubeadm-join", kubeadm::kubeadm_join));
            if p.local_lb.enabled {
                s.push(step("local-lb-clients", cluster::local_lb_clients));
            }
            if p.init_node {
                s.push(step("cni", cluster::cni));
            }
            s.push(step("labels-taints", cluster::labels_taints));
            s.push(every_boot("bootstrap-token", cluster::bootstrap_token));
        }
        Role::Worker => {
            s.push(step("container-runtime", node::container_runtime));
            s.push(step("container-images", images::container_images));
            if lb {
                s.push(step("load-balancer", node::load_balancer));
            }
            s.push(step("wait-api", kubeadm::wait_api));
            s.push(step("kubeadm-join", kubeadm::kubeadm_join));
            if p.local_lb.enabled {
                s.push(step("local-lb-clients", cluster::local_lb_clients));
            }
        }
    }
    s
}

/// Names of the plan's steps.
pub fn plan_names(p: &NodeProfile) -> Vec<&'static str> {
    plan(p).iter().map(|s| s.name).collect()
}

/// Runs every step not yet done, in order, recording each transition in the
/// journal before moving on. Stops at the first failure: the unit fails and
/// the next boot (or an operator) takes it from there.
pub fn run(env: &Env, profile: &NodeProfile, journal: &mut Journal) -> Result<()> {
    let steps = plan(profile);
    log(&format!(
        "node {} ({}{}): {} steps, journal {}",
        profile.node_name,
        profile.role,
        if profile.init_node { ", init node" } else { "" },
        steps.len(),
        journal.path().display()
    ));
    for s in &steps {
        let prior = journal.step_mut(s.name).state;
        if prior == StepState::Done && !s.every_boot {
            log(&format!("step {}: already done", s.name));
            continue;
        }
        let started = env.clock.now();
        {
            let rec = journal.step_mut(s.name);
            rec.state = StepState::Running;
            rec.attempts += 1;
            rec.started = Some(rfc3339(started));
            rec.finished = None;
            rec.duration_ms = None;
            let attempt = rec.attempts;
            journal.save()?;
            log(&format!(
                "step {}: start (attempt {attempt}{})",
                s.name,
                match prior {
                    StepState::Running => ", resuming after an interruption",
                    StepState::Failed => ", after a failure",
                    _ => "",
                }
            ));
        }
        let result = {
            let mut ctx = Ctx {
                env,
                profile,
                journal,
                prior,
            };
            (s.run)(&mut ctx)
        };
        let finished = env.clock.now();
        let ms = (finished - started).whole_milliseconds().max(0) as u64;
        let rec = journal.step_mut(s.name);
        rec.finished = Some(rfc3339(finished));
        rec.duration_ms = Some(ms);
        match result {
            Ok(outcome) => {
                rec.state = StepState::Done;
                rec.outcome = Some(outcome.clone());
                journal.save()?;
                log(&format!(
                    "step {}: done in {:.1}s: {outcome}",
                    s.name,
                    ms as f64 / 1000.0
                ));
            }
            Err(e) => {
                rec.state = StepState::Failed;
                rec.last_error = Some(format!("{e:#}"));
                journal.save()?;
                log(&format!(
                    "step {}: FAILED after {:.1}s: {e:#}",
                    s.name,
                    ms as f64 / 1000.0
                ));
                return Err(e.context(format!("step {} failed", s.name)));
            }
        }
    }
    log("all steps done");
    Ok(())
}
