//! hakube-firstboot: forms the cluster at first boot.
//!
//! `main` is one match from subcommand to [`run`], [`status`] or [`health`].
//! The work is a table of idempotent steps per role ([`steps::plan`]), run
//! against a journal ([`journal`]) that decides what is left. Side effects go
//! through small traits ([`system`], [`etcd`]) with fakes in [`fakes`].

pub mod certs;
pub mod cli;
pub mod etcd;
pub mod etcd_config;
pub mod fakes;
pub mod health;
pub mod journal;
pub mod status;
pub mod steps;
pub mod system;
pub mod update;

use anyhow::{Context, Result};
use hakube_node_profile::{NodeProfile, PROFILE_PATH};
use journal::{Journal, StepState};
use std::path::Path;
use std::time::Duration;

/// Exit code for bad input (missing or invalid profile).
pub const EXIT_BAD_INPUT: i32 = 2;

/// A problem with the node's input, as opposed to a failed step.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Exit code for an error returned by [`run`], [`status`] or [`health`].
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.downcast_ref::<BadInput>().is_some() {
        EXIT_BAD_INPUT
    } else {
        1
    }
}

/// Reads and checks `<root>/etc/hakube/node.json`.
pub fn load_profile(root: &Path) -> Result<NodeProfile> {
    let path = root.join(PROFILE_PATH);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        BadInput(format!(
            "cannot read the node profile {}: {e}; this image was not rendered for a node \
             (hakube-build render writes etc/hakube/node.json)",
            path.display()
        ))
    })?;
    NodeProfile::from_json(&text).map_err(|e| BadInput(format!("{}: {e}", path.display())).into())
}

fn open_journal(root: &Path, p: &NodeProfile) -> Result<Journal> {
    Journal::open(root, &p.node_name, p.role, &steps::plan_names(p))
}

/// Holds `run.lock` beside the journal for as long as it lives: one `run` at
/// a time on a node (the first-boot unit, hakube-certs.timer's daily run of
/// the every-boot steps, an operator's), the next one waiting its turn.
pub fn run_lock(root: &Path) -> Result<std::fs::File> {
    let journal = Journal::path_under(root);
    let dir = journal
        .parent()
        .context("the journal path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("run.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            steps::log("another hakube-firstboot run is under way; waiting for it to end");
            f.lock()
                .with_context(|| format!("locking {}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(anyhow::Error::new(e).context(format!("locking {}", path.display())))
        }
    }
    Ok(f)
}

/// `run`: every step not yet done.
pub fn run(env: &steps::Env, retry: Option<&str>) -> Result<()> {
    let profile = load_profile(&env.root)?;
    let _lock = run_lock(&env.root)?;
    let mut journal = open_journal(&env.root, &profile)?;
    if let Some(name) = retry {
        if journal.step(name).is_none() {
            return Err(BadInput(format!(
                "--retry {name}: no such step for this node; its steps are: {}",
                steps::plan_names(&profile).join(", ")
            ))
            .into());
        }
        let rec = journal.step_mut(name);
        rec.state = StepState::Pending;
        journal.save()?;
        steps::log(&format!("step {name}: marked pending by --retry"));
    }
    steps::run(env, &profile, &mut journal)
}

/// `status`: the journal and both OS slots, as text or JSON. The slots need
/// the boot disk and ESP; where they cannot be read (a `--root` that is not a
/// booted node) the reason is reported instead.
pub fn status(root: &Path, json: bool, os: &update::Platform) -> Result<String> {
    let profile = load_profile(root)?;
    let journal = open_journal(root, &profile)?;
    let s = status::status(&profile, &journal);
    let slots = update::os_status(os);
    // Live, not from the journal: a store that lost an image after first
    // boot says so here.
    let images = steps::check_node_images(root, os.cmd, &profile.node_name, profile.runtime);
    let certs = certs::held(root, os.clock.now());
    Ok(if json {
        let mut v = serde_json::to_value(&s)?;
        v["os"] = match &slots {
            Ok(o) => serde_json::to_value(o)?,
            Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
        };
        v["images"] = match &images {
            Ok(r) => serde_json::to_value(r)?,
            Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
        };
        v["certificates"] = serde_json::to_value(&certs)?;
        let mut out = serde_json::to_string_pretty(&v)?;
        out.push('\n');
        out
    } else {
        let mut out = status::to_text(&s);
        match &images {
            Ok(Some(r)) => out.push_str(&format!("\ncontainer images: {}\n", r.summary())),
            Ok(None) => {}
            Err(e) => out.push_str(&format!("\ncontainer images: unavailable: {e:#}\n")),
        }
        out.push_str("\ncertificates:\n");
        out.push_str(&certs::to_text(&certs));
        out.push_str("\nOS slots:\n");
        match &slots {
            Ok(o) => out.push_str(&update::os_status_text(o)),
            Err(e) => out.push_str(&format!("unavailable: {e:#}\n")),
        }
        out
    })
}

/// `health --gate`: the boot health gate after an OS update.
pub fn health_gate(env: &steps::Env, os: &update::Platform, no_reboot: bool) -> Result<String> {
    let profile = load_profile(&env.root)?;
    let deadline = Duration::from_secs(profile.health_deadline_seconds);
    let outcome = update::gate(os, deadline, Duration::from_secs(10), no_reboot, &|| {
        health::check(env, &profile)
    })?;
    match outcome {
        update::GateOutcome::NotCounted => {
            Ok("boot not on trial (first install or blessed): nothing to assess\n".into())
        }
        update::GateOutcome::Healthy(s) => Ok(format!("healthy: {s}\n")),
        update::GateOutcome::MarkedBad(why) => {
            anyhow::bail!("boot marked bad: {why}")
        }
    }
}

/// `health`: `Ok(summary)` only when this node's role is healthy.
pub fn health(env: &steps::Env) -> Result<String> {
    let profile = load_profile(&env.root)?;
    health::check(env, &profile)
}

/// The real etcd client for this node's profile (TLS material under the root).
pub fn etcd_client_for(root: &Path) -> Result<etcd::EtcdClient> {
    let tls = load_profile(root)
        .ok()
        .and_then(|p| p.paths.etcd_client)
        .map(|t| etcd::TlsFiles {
            ca: steps::under(root, &t.ca_file),
            cert: steps::under(root, &t.cert_file),
            key: steps::under(root, &t.key_file),
        });
    etcd::EtcdClient::new(tls).context("setting up the etcd client")
}

/// Real implementations wired together, for `main`.
pub fn real_env<'a>(
    root: &Path,
    wait_timeout: Option<u64>,
    runner: &'a system::ProcessRunner,
    svc: &'a system::Systemctl<'a>,
    etcd: &'a etcd::EtcdClient,
    probe: &'a system::NetProbe,
    clock: &'a system::SystemClock,
) -> steps::Env<'a> {
    steps::Env {
        root: root.to_path_buf(),
        cmd: runner,
        svc,
        etcd,
        probe,
        clock,
        waits: steps::Waits {
            remote: wait_timeout.map(Duration::from_secs),
            ..Default::default()
        },
    }
}
