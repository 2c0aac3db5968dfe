//! Fakes of every side-effect trait, for tests (unit and integration).
//! Each records what it was asked; the etcd fake models membership, quorum
//! and learners closely enough for the steps' decisions to be exercised.
//!
//! [`PowerCut`] simulates a crash: after a given number of side effects the
//! next one happens and then panics, leaving the journal as a power cut would.

use crate::etcd::{quorum, EtcdApi, Member};
use crate::system::{Clock, Cmd, CommandRunner, Output, Probe, ServiceManager};
use anyhow::{anyhow, Result};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;
use time::OffsetDateTime;

/// Shared countdown of side effects; panics ("power cut") when it reaches zero.
#[derive(Default, Clone)]
pub struct PowerCut(Rc<Cell<Option<u32>>>);

impl PowerCut {
    pub fn after(n: u32) -> PowerCut {
        PowerCut(Rc::new(Cell::new(Some(n))))
    }
    /// Called after each side effect.
    pub fn tick(&self, what: &str) {
        if let Some(n) = self.0.get() {
            if n == 0 {
                self.0.set(None);
                panic!("simulated power cut after: {what}");
            }
            self.0.set(Some(n - 1));
        }
    }
    /// Cut power after `n` more side effects (every fake sharing this value counts).
    pub fn arm(&self, n: u32) {
        self.0.set(Some(n));
    }
    pub fn disarm(&self) {
        self.0.set(None);
    }
}

type Effect = Box<dyn Fn(&Cmd) -> Output>;

/// A command runner answering from a script. Rules match on the start of
/// `program arg1 arg2 ...`; the first matching rule wins; one-shot rules are
/// used once. Unmatched commands succeed with empty output.
#[derive(Default)]
pub struct FakeRunner {
    rules: RefCell<Vec<(String, bool, Effect)>>,
    calls: RefCell<Vec<Cmd>>,
    pub cut: PowerCut,
}

impl FakeRunner {
    pub fn new() -> FakeRunner {
        FakeRunner::default()
    }
    pub fn with_cut(cut: PowerCut) -> FakeRunner {
        FakeRunner {
            cut,
            ..Default::default()
        }
    }
    /// Always answer `out` to commands starting with `prefix`.
    pub fn on(&self, prefix: &str, out: Output) -> &Self {
        self.rules
            .borrow_mut()
            .push((prefix.to_string(), false, Box::new(move |_| out.clone())));
        self
    }
    /// Answer `out` once.
    pub fn once(&self, prefix: &str, out: Output) -> &Self {
        self.rules
            .borrow_mut()
            .push((prefix.to_string(), true, Box::new(move |_| out.clone())));
        self
    }
    /// Run `f` (which may change files, like the real tool) and answer what it returns.
    pub fn effect(&self, prefix: &str, f: impl Fn(&Cmd) -> Output + 'static) -> &Self {
        self.rules
            .borrow_mut()
            .push((prefix.to_string(), false, Box::new(f)));
        self
    }
    /// Like [`FakeRunner::once`], ahead of every existing rule.
    pub fn push_front(&self, prefix: &str, out: Output) -> &Self {
        self.rules.borrow_mut().insert(
            0,
            (prefix.to_string(), true, Box::new(move |_| out.clone())),
        );
        self
    }
    /// Like [`FakeRunner::on`], ahead of every existing rule.
    pub fn on_front(&self, prefix: &str, out: Output) -> &Self {
        self.rules.borrow_mut().insert(
            0,
            (prefix.to_string(), false, Box::new(move |_| out.clone())),
        );
        self
    }
    /// Like [`FakeRunner::effect`], once, ahead of every existing rule.
    pub fn effect_front(&self, prefix: &str, f: impl Fn(&Cmd) -> Output + 'static) -> &Self {
        self.rules
            .borrow_mut()
            .insert(0, (prefix.to_string(), true, Box::new(f)));
        self
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().iter().map(Cmd::line).collect()
    }
    pub fn count(&self, prefix: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }
}

impl CommandRunner for FakeRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output> {
        self.calls.borrow_mut().push(cmd.clone());
        let line = cmd.line();
        let out = {
            let mut rules = self.rules.borrow_mut();
            match rules
                .iter()
                .position(|(p, _, _)| line.starts_with(p.as_str()))
            {
                Some(i) => {
                    let out = (rules[i].2)(cmd);
                    if rules[i].1 {
                        drop(rules.remove(i));
                    }
                    out
                }
                None => Output::default(),
            }
        };
        self.cut.tick(&line);
        Ok(out)
    }
}

type Hook = Box<dyn Fn()>;
type Ready = Box<dyn Fn() -> bool>;

/// systemd: records starts and restarts; a started unit is active; hooks let
/// a test make starting a unit do something (bring an etcd member up).
#[derive(Default)]
pub struct FakeServices {
    pub active: RefCell<BTreeSet<String>>,
    /// `NRestarts` by unit (0 when absent).
    pub restarts: RefCell<BTreeMap<String, u32>>,
    calls: RefCell<Vec<String>>,
    hooks: RefCell<Vec<(String, Hook)>>,
    ready: RefCell<Vec<(String, Ready)>>,
    pub cut: PowerCut,
}

impl FakeServices {
    pub fn with_cut(cut: PowerCut) -> FakeServices {
        FakeServices {
            cut,
            ..Default::default()
        }
    }
    pub fn on_start(&self, unit: &str, f: impl Fn() + 'static) {
        self.hooks
            .borrow_mut()
            .push((unit.to_string(), Box::new(f)));
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
    /// `unit` is Type=notify and ready only when `f` says so: a blocking
    /// start of it fails as systemd's start timeout would, unless ready
    /// right after starting.
    pub fn notify_when(&self, unit: &str, f: impl Fn() -> bool + 'static) {
        self.ready
            .borrow_mut()
            .push((unit.to_string(), Box::new(f)));
    }
    fn launch(&self, call: String, unit: &str) {
        self.calls.borrow_mut().push(call.clone());
        self.active.borrow_mut().insert(unit.to_string());
        for (u, f) in self.hooks.borrow().iter() {
            if u == unit {
                f();
            }
        }
        self.cut.tick(&call);
    }
}

impl ServiceManager for FakeServices {
    fn start(&self, unit: &str) -> Result<()> {
        self.launch(format!("start {unit}"), unit);
        let ready = self.ready.borrow();
        if let Some((_, f)) = ready.iter().find(|(u, _)| u == unit) {
            if !f() {
                self.active.borrow_mut().remove(unit);
                anyhow::bail!(
                    "`systemctl enable --now {unit}` exited with status 1: Job for {unit} failed because \
                     a timeout was exceeded"
                );
            }
        }
        Ok(())
    }
    fn start_no_block(&self, unit: &str) -> Result<()> {
        self.launch(format!("start --no-block {unit}"), unit);
        Ok(())
    }
    fn restart(&self, unit: &str) -> Result<()> {
        self.calls.borrow_mut().push(format!("restart {unit}"));
        self.active.borrow_mut().insert(unit.to_string());
        self.cut.tick(&format!("restart {unit}"));
        Ok(())
    }
    fn is_active(&self, unit: &str) -> bool {
        self.active.borrow().contains(unit)
    }
    fn restarts(&self, unit: &str) -> u32 {
        self.restarts.borrow().get(unit).copied().unwrap_or(0)
    }
}

/// Probes: a URL answers once it has been probed `after` times.
#[derive(Default)]
pub struct FakeProbe {
    pub https: RefCell<BTreeMap<String, u32>>,
    pub tcp: RefCell<BTreeSet<String>>,
    pub probes: Cell<u32>,
}

impl FakeProbe {
    pub fn answer(&self, url: &str, after: u32) {
        self.https.borrow_mut().insert(url.to_string(), after);
    }
}

impl Probe for FakeProbe {
    fn https_answers(&self, url: &str) -> bool {
        self.probes.set(self.probes.get() + 1);
        let mut m = self.https.borrow_mut();
        match m.get_mut(url) {
            Some(0) => true,
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        }
    }
    fn tcp_open(&self, host_port: &str) -> bool {
        self.tcp.borrow().contains(host_port)
    }
}

/// A clock whose sleeps only move time forward. Events scheduled with
/// [`FakeClock::at`] happen once that much time has been slept (a peer that
/// boots minutes later).
pub struct FakeClock {
    now: Cell<OffsetDateTime>,
    pub slept: Cell<Duration>,
    events: RefCell<Vec<(Duration, Hook)>>,
}

impl FakeClock {
    pub fn at(&self, after: Duration, f: impl Fn() + 'static) {
        self.events.borrow_mut().push((after, Box::new(f)));
    }
}

impl Default for FakeClock {
    fn default() -> FakeClock {
        FakeClock {
            now: Cell::new(
                OffsetDateTime::from_unix_timestamp(1_800_000_000)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            ),
            slept: Cell::new(Duration::ZERO),
            events: RefCell::new(Vec::new()),
        }
    }
}

impl Clock for FakeClock {
    fn now(&self) -> OffsetDateTime {
        self.now.get()
    }
    fn sleep(&self, d: Duration) {
        self.now.set(self.now.get() + d);
        self.slept.set(self.slept.get() + d);
        let due: Vec<Hook> = {
            let mut ev = self.events.borrow_mut();
            let (due, later) = ev.drain(..).partition(|(t, _)| *t <= self.slept.get());
            *ev = later;
            due.into_iter().map(|(_, f)| f).collect()
        };
        for f in due {
            f();
        }
    }
}

/// One member of the fake etcd cluster.
#[derive(Debug, Clone)]
pub struct FakeMember {
    pub member: Member,
    /// The client URL it serves on once started.
    pub client_url: String,
    pub up: bool,
}

/// An etcd cluster in memory: members, learners, quorum, keys.
#[derive(Debug, Default)]
pub struct FakeCluster {
    pub members: Vec<FakeMember>,
    pub keys: BTreeMap<String, String>,
    /// The cluster has had quorum once; before that members serve no clients.
    pub formed: bool,
    /// Promotions refused ("not in sync with leader") before one succeeds.
    pub promote_refusals: u32,
    pub next_id: u64,
    pub log: Vec<String>,
}

impl FakeCluster {
    /// A cluster of the given members (`name`, `ip`), all started and up
    /// when `running`, else all listed but never started (initial formation).
    pub fn new(members: &[(&str, &str)], running: bool) -> FakeCluster {
        let mut c = FakeCluster {
            next_id: 0x100,
            formed: running,
            ..Default::default()
        };
        for (i, (name, ip)) in members.iter().enumerate() {
            let client = format!("https://{ip}:2379");
            c.members.push(FakeMember {
                member: Member {
                    id: 0x10 + i as u64,
                    name: name.to_string(),
                    peer_urls: vec![format!("https://{ip}:2380")],
                    client_urls: if running {
                        vec![client.clone()]
                    } else {
                        vec![]
                    },
                    is_learner: false,
                },
                client_url: client,
                up: running,
            });
        }
        c
    }

    pub fn quorum_ok(&self) -> bool {
        let voters: Vec<_> = self
            .members
            .iter()
            .filter(|m| !m.member.is_learner)
            .collect();
        voters.iter().filter(|m| m.up).count() >= quorum(voters.len())
    }

    fn serving(&self, ep: &str) -> Option<&FakeMember> {
        self.members
            .iter()
            .find(|m| m.client_url == ep && m.up && (self.formed || self.quorum_ok()))
    }

    fn reachable(&self, eps: &[String]) -> Result<()> {
        if eps.iter().any(|e| self.serving(e).is_some()) {
            Ok(())
        } else {
            Err(anyhow!(
                "connecting to etcd at {}: connection refused",
                eps.join(",")
            ))
        }
    }

    fn need_quorum(&self) -> Result<()> {
        if self.quorum_ok() {
            Ok(())
        } else {
            Err(anyhow!("etcdserver: request timed out"))
        }
    }

    /// What `etcd.service` starting on the node with this peer URL does.
    pub fn start(&mut self, name: &str, peer_url: &str) {
        if let Some(m) = self
            .members
            .iter_mut()
            .find(|m| m.member.peer_urls.iter().any(|u| u == peer_url))
        {
            m.up = true;
            m.member.name = name.to_string();
            m.member.client_urls = vec![m.client_url.clone()];
        }
        if self.quorum_ok() {
            self.formed = true;
        }
        self.log.push(format!("start {name}"));
    }

    pub fn stop(&mut self, name: &str) {
        for m in self.members.iter_mut().filter(|m| m.member.name == name) {
            m.up = false;
        }
    }
}

/// [`EtcdApi`] over a shared [`FakeCluster`].
#[derive(Clone, Default)]
pub struct FakeEtcd {
    pub cluster: Rc<RefCell<FakeCluster>>,
    pub cut: PowerCut,
}

impl FakeEtcd {
    pub fn new(c: FakeCluster) -> FakeEtcd {
        FakeEtcd {
            cluster: Rc::new(RefCell::new(c)),
            cut: PowerCut::default(),
        }
    }
    pub fn log(&self) -> Vec<String> {
        self.cluster.borrow().log.clone()
    }
}

impl EtcdApi for FakeEtcd {
    fn member_list(&self, eps: &[String]) -> Result<Vec<Member>> {
        let c = self.cluster.borrow();
        c.reachable(eps)?;
        Ok(c.members.iter().map(|m| m.member.clone()).collect())
    }

    fn member_add_learner(
        &self,
        eps: &[String],
        peer_urls: &[String],
    ) -> Result<(u64, Vec<Member>)> {
        let id = {
            let mut c = self.cluster.borrow_mut();
            c.reachable(eps)?;
            c.need_quorum()?;
            let id = c.next_id;
            c.next_id += 1;
            let host = peer_urls
                .first()
                .map(|u| u.trim_end_matches(":2380").to_string())
                .unwrap_or_default();
            c.members.push(FakeMember {
                member: Member {
                    id,
                    name: String::new(),
                    peer_urls: peer_urls.to_vec(),
                    client_urls: vec![],
                    is_learner: true,
                },
                client_url: format!("{host}:2379"),
                up: false,
            });
            c.log.push(format!("add learner {}", peer_urls.join(",")));
            id
        };
        self.cut.tick("member add");
        let list = self
            .cluster
            .borrow()
            .members
            .iter()
            .map(|m| m.member.clone())
            .collect();
        Ok((id, list))
    }

    fn member_remove(&self, eps: &[String], id: u64) -> Result<()> {
        {
            let mut c = self.cluster.borrow_mut();
            c.reachable(eps)?;
            c.need_quorum()?;
            let before = c.members.len();
            c.members.retain(|m| m.member.id != id);
            if c.members.len() == before {
                return Err(anyhow!("etcdserver: member not found"));
            }
            c.log.push(format!("remove {id:x}"));
        }
        self.cut.tick("member remove");
        Ok(())
    }

    fn member_promote(&self, eps: &[String], id: u64) -> Result<()> {
        {
            let mut c = self.cluster.borrow_mut();
            c.reachable(eps)?;
            c.need_quorum()?;
            if c.promote_refusals > 0 {
                c.promote_refusals -= 1;
                return Err(anyhow!(
                    "etcdserver: can only promote a learner member which is in sync with leader"
                ));
            }
            let m = c
                .members
                .iter_mut()
                .find(|m| m.member.id == id)
                .ok_or_else(|| anyhow!("etcdserver: member not found"))?;
            if !m.member.is_learner {
                return Err(anyhow!("etcdserver: can only promote a learner member"));
            }
            if !m.up {
                return Err(anyhow!(
                    "etcdserver: can only promote a learner member which is in sync with leader"
                ));
            }
            m.member.is_learner = false;
            c.log.push(format!("promote {id:x}"));
        }
        self.cut.tick("member promote");
        Ok(())
    }

    fn endpoint_healthy(&self, ep: &str) -> bool {
        let c = self.cluster.borrow();
        c.serving(ep).is_some_and(|m| !m.member.is_learner) && c.quorum_ok()
    }

    fn count_keys(&self, eps: &[String], prefix: &str) -> Result<i64> {
        let c = self.cluster.borrow();
        c.reachable(eps)?;
        c.need_quorum()?;
        Ok(c.keys.keys().filter(|k| k.starts_with(prefix)).count() as i64)
    }
}

/// What `ctr --namespace k8s.io images ls` prints for `(reference, digest)`
/// pairs, every image pinned as hakube-build lays them.
pub fn ctr_images_ls(entries: &[(&str, &str)]) -> Output {
    let mut s = "REF TYPE DIGEST SIZE PLATFORMS LABELS\n".to_string();
    for (r, d) in entries {
        s += &format!(
            "{r} application/vnd.oci.image.manifest.v1+json {d} 1.0 MiB linux/amd64 io.cri-containerd.pinned=pinned\n"
        );
    }
    Output::ok(&s)
}
