//! Cluster VM harness: builds every image of a cluster spec from the test
//! mirror, boots all nodes at once in a private network namespace
//! (`hk-e2e-<pid>-<scenario>`: one bridge, one tap per VM, the nodes' gateway
//! address on the bridge so the host side of the namespace reaches them), and
//! then only observes them from outside: the guest agent for
//! `hakube-firstboot status --json`, kubectl run inside the namespace with the
//! built admin.conf through the control-plane endpoint. Nothing is done to a
//! VM after power-on except what a scenario does on purpose (power off, start
//! again, a fresh disk).
//!
//! Teardown is unconditional: VMs, namespace and work directory go when the
//! harness drops (also on panic); SIGINT/SIGTERM make the next wait panic so
//! the same drops run; QEMU dies with the process in any case (parent-death
//! signal) and a stale namespace of a killed run is deleted by the next one.
//! On failure every VM's serial log, QEMU's stderr and the last firstboot
//! statuses are copied to `target/e2e-artifacts/<scenario>-<time>/`.

#![allow(dead_code)]

use super::firstboot::firstboot_bin;
use super::harness::{self, run_bounded, wait_for};
use super::vm::{run, Accel, Agent, Netns, Vm, VmConfig};
use hakube_build::spec::{Cluster, Node, NodeNetwork};
use hakube_node_profile::Role;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const NETNS_PREFIX: &str = "hk-e2e-";

/// Memory per role under TCG: a control plane (etcd, apiserver,
/// controller-manager, scheduler, CoreDNS, flannel) needs room to not swap.
fn memory_mib(role: Role) -> u32 {
    match role {
        Role::Master => 4096,
        Role::Worker => 2048,
        Role::Etcd => 1536,
    }
}

/// vCPUs per role. Under MTTCG each vCPU is a host thread, and the host has
/// two cores: masters get two (kubeadm's preflight wants two on a control
/// plane, and a starting control plane is the critical path of every
/// scenario); workers and etcd members one each, so that, booting at the
/// same time, they never take both host cores from a master.
fn cpus(role: Role) -> u32 {
    match role {
        Role::Master => 2,
        Role::Worker | Role::Etcd => 1,
    }
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An environment variable the scenario cannot run without.
pub fn required_env(var: &str, what: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!("{var} is not set: it must name {what} (see README, Tests)"),
    }
}

/// One node's VM and what the harness saw of it.
pub struct NodeVm {
    pub name: String,
    pub role: Role,
    pub address: String,
    pub vm: Vm,
    pub powered_on: Instant,
    agent: Option<Agent>,
    /// Power-on to `overall: done` in `hakube-firstboot status`.
    pub first_boot: Option<Duration>,
    /// The last `hakube-firstboot status --json` read (or why none was).
    pub last_status: String,
}

impl NodeVm {
    /// Runs `sh -c cmd` in the guest through the agent (reconnecting when the
    /// channel was lost, e.g. after a power cycle).
    pub fn guest_sh(&mut self, cmd: &str) -> Result<(i64, String), String> {
        if self.vm.exited() {
            return Err(format!("{}: qemu exited", self.name));
        }
        if self.agent.is_none() {
            let mut a = Agent::connect(&self.vm.qga).map_err(|e| format!("agent: {e}"))?;
            a.sync(Duration::from_secs(5))?;
            self.agent = Some(a);
        }
        let r = self
            .agent
            .as_mut()
            .map(|a| a.sh(cmd))
            .unwrap_or(Err("no agent".into()));
        if r.is_err() {
            self.agent = None;
        }
        r
    }

    /// `hakube-firstboot status --json`, parsed.
    pub fn firstboot_status(&mut self) -> Result<serde_json::Value, String> {
        let (code, out) = self
            .guest_sh("hakube-firstboot status --json")
            .inspect_err(|e| self.last_status = format!("(not read: {e})"))?;
        let parsed = serde_json::from_str::<serde_json::Value>(&out)
            .map_err(|e| format!("exit {code}, not JSON ({e}): {out}"));
        self.last_status = out;
        parsed
    }
}

/// A booted test cluster.
pub struct ClusterHarness {
    pub scenario: String,
    pub cluster: Cluster,
    /// The nodes this scenario builds and boots (the spec's, or those of
    /// [`Plan::only`]'s role).
    pub booted: Vec<Node>,
    pub accel: Accel,
    /// Dropped first (explicitly, in Drop): the VMs.
    pub nodes: Vec<NodeVm>,
    pub images: BTreeMap<String, PathBuf>,
    /// The build's manifest.json (every node's container images and digests).
    pub manifest: PathBuf,
    /// The OS image version each node was built with, and a time no earlier
    /// than the one that named it: a build at a later SOURCE_DATE_EPOCH is a
    /// newer version.
    pub versions: BTreeMap<String, String>,
    pub build_epoch: i64,
    /// The test mirror and the scenario's spec (versions pinned), for more
    /// builds of the same cluster (update bundles).
    pub mirror: PathBuf,
    pub spec: Option<PathBuf>,
    /// Disks attached (read-only) to a node besides its own, by node name:
    /// set before the node is powered on.
    pub extra_disks: BTreeMap<String, Vec<PathBuf>>,
    /// The step of the scenario's story under way: a failure names it.
    pub step: String,
    step_started: Instant,
    pub admin_conf: PathBuf,
    kubectl_bin: PathBuf,
    pub ns: Netns,
    pub work: tempfile::TempDir,
}

/// What to build: a spec file (None: the embedded default cluster).
pub struct Plan<'a> {
    pub scenario: &'a str,
    pub spec: Option<&'a Path>,
    /// Build and boot only the nodes of this role (the etcd VMs alone, say);
    /// `None`: every node of the spec.
    pub only: Option<Role>,
}

impl ClusterHarness {
    /// Builds the images, creates the namespace and picks the accelerator;
    /// no VM runs yet.
    pub fn build(plan: Plan) -> ClusterHarness {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the cluster scenarios need root (mmdebstrap, network namespaces)"
        );
        harness::install_signal_handlers();
        harness::sweep_stale_netns(NETNS_PREFIX);
        let kubectl_bin = super::srcbuild::srcbuild_bin("kubectl");
        let mirror = required_env(
            "HAKUBE_TEST_MIRROR",
            "the test mirror made by tests/make-mirror from the real binaries",
        );
        let work = tempfile::Builder::new()
            .prefix(&format!("hk-e2e-{}-", plan.scenario))
            .tempdir_in("/var/tmp")
            .expect("creating the work directory under /var/tmp");
        let w = work.path().to_path_buf();
        eprintln!("e2e {}: work directory {}", plan.scenario, w.display());
        let t = Instant::now();
        run(Command::new(repo().join("tests/make-mirror")).arg(&mirror));

        let spec = plan.spec.map(|p| pin_default_versions(p, &w));
        let cluster = hakube_build::spec::load(spec.as_deref())
            .unwrap_or_else(|e| panic!("loading the scenario's spec: {e}"));
        let booted: Vec<Node> = cluster
            .nodes
            .iter()
            .filter(|n| plan.only.is_none_or(|r| n.role == r))
            .cloned()
            .collect();
        assert!(!booted.is_empty(), "the scenario boots no node");
        let mut images = BTreeMap::new();
        let mut versions = BTreeMap::new();
        let (mut manifest, mut build_epoch) = (PathBuf::new(), 0);
        for role in cluster.roles_present() {
            if plan.only.is_some_and(|r| r != role) {
                continue;
            }
            let build = Build {
                spec: spec.as_deref(),
                mirror: &mirror,
                work: &w,
                role,
                node: None,
                tag: "",
                epoch: None,
            };
            let result = build.run();
            for img in result["images"].as_array().into_iter().flatten() {
                let node = img["node"].as_str().unwrap_or_default().to_string();
                images.insert(
                    node.clone(),
                    PathBuf::from(img["qcow2"].as_str().unwrap_or_default()),
                );
                versions.insert(node, result["version"].as_str().unwrap_or_default().into());
            }
            manifest = PathBuf::from(result["manifest"].as_str().unwrap_or_default());
            build_epoch = result["sourceDateEpoch"].as_i64().unwrap_or_default();
        }
        // A build without SOURCE_DATE_EPOCH names its version after the
        // time it ran, while `sourceDateEpoch` is its (cached) base's: a
        // later build must come after both (CI at 1206311: the base was
        // two hours older than the version).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let build_epoch = build_epoch.max(now);
        for n in &booted {
            assert!(
                images.contains_key(n.name.as_str()),
                "hakube-build built no image for {}: {images:?}",
                n.name
            );
        }
        eprintln!(
            "e2e {}: built {} images in {} s",
            plan.scenario,
            images.len(),
            t.elapsed().as_secs()
        );
        super::checks::record(plan.scenario, "build images", t.elapsed());
        let admin_conf = render_admin_conf(&cluster, spec.as_deref(), &w);

        let taps: Vec<String> = (0..booted.len()).map(|i| format!("tap{i}")).collect();
        let tap_refs: Vec<&str> = taps.iter().map(String::as_str).collect();
        let ns = Netns::create(
            &format!("{NETNS_PREFIX}{}-{}", std::process::id(), plan.scenario),
            &tap_refs,
            Some(&bridge_address(&cluster)),
        );
        let first = &booted[0];
        let accel = pick_accel(
            &ns,
            &images[first.name.as_str()],
            &first.mac.to_string(),
            &w,
        );
        eprintln!("e2e {}: accelerator {accel:?}", plan.scenario);
        ClusterHarness {
            scenario: plan.scenario.into(),
            cluster,
            booted,
            accel,
            nodes: Vec::new(),
            images,
            manifest,
            versions,
            build_epoch,
            mirror,
            spec,
            extra_disks: BTreeMap::new(),
            step: String::new(),
            step_started: Instant::now(),
            admin_conf,
            kubectl_bin,
            ns,
            work,
        }
    }

    /// Another build of one node of the scenario's cluster (same state
    /// directory, so the same PKI; its own output and lock), from `mirror`
    /// at build time `epoch`: an OS update bundle. Returns `--json`'s output.
    pub fn build_again(
        &self,
        tag: &str,
        node: &str,
        mirror: &Path,
        epoch: i64,
    ) -> serde_json::Value {
        let role = self
            .cluster
            .node(node)
            .unwrap_or_else(|| panic!("no node {node} in the spec"))
            .role;
        Build {
            spec: self.spec.as_deref(),
            mirror,
            work: self.work.path(),
            role,
            node: Some(node),
            tag,
            epoch: Some(epoch),
        }
        .run()
    }

    /// Ends the step under way: its time is recorded (`step NAME`), for the
    /// test command's phase table.
    pub fn end_step(&mut self) {
        if !self.step.is_empty() {
            super::checks::record(
                &self.scenario,
                &format!("step {}", self.step),
                self.step_started.elapsed(),
            );
            self.step.clear();
        }
    }

    /// Starts a step of the scenario's story (printed; a failure names it;
    /// its time is recorded when the next one starts, or at [`Self::end_step`]).
    pub fn step(&mut self, name: &str) {
        self.end_step();
        eprintln!("e2e {}: step: {name}", self.scenario);
        self.step = name.to_string();
        self.step_started = Instant::now();
    }

    /// A fresh copy-on-write disk over the node's built image.
    pub fn fresh_disk(&self, node: &str) -> PathBuf {
        let disk = self.work.path().join(format!("{node}-disk.qcow2"));
        let _ = std::fs::remove_file(&disk);
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&self.images[node])
            .arg(&disk));
        disk
    }

    /// Powers every node on at once.
    pub fn boot_all(&mut self) {
        self.boot_where(|_| true);
    }

    /// Powers on the nodes `pick` chooses that are not running yet (each
    /// keeps its tap, numbered by its place in the spec).
    pub fn boot_where(&mut self, pick: impl Fn(&Node) -> bool) {
        let running: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let mut now = Vec::new();
        for (i, n) in self.booted.clone().iter().enumerate() {
            if !pick(n) || running.iter().any(|r| r == n.name.as_str()) {
                continue;
            }
            let name = n.name.as_str().to_string();
            now.push(name.clone());
            let config = VmConfig {
                tag: name.clone(),
                disk: self.fresh_disk(&name),
                mac: n.mac.to_string(),
                tap: format!("tap{i}"),
                memory_mib: memory_mib(n.role),
                cpus: cpus(n.role),
                extra_disks: self.extra_disks.get(&name).cloned().unwrap_or_default(),
            };
            let vm = Vm::launch(&self.ns, self.accel, config, self.work.path());
            self.nodes.push(NodeVm {
                name,
                role: n.role,
                address: n.address().map(|a| a.to_string()).unwrap_or_default(),
                vm,
                powered_on: Instant::now(),
                agent: None,
                first_boot: None,
                last_status: String::new(),
            });
        }
        eprintln!("e2e {}: powered on {}", self.scenario, now.join(", "));
    }

    pub fn node(&mut self, name: &str) -> &mut NodeVm {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no VM {name}"))
    }

    /// Power cut, then the same VM (same disk) on again.
    pub fn power_cycle(&mut self, name: &str) {
        let (ns, accel, dir) = (&self.ns, self.accel, self.work.path().to_path_buf());
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no VM {name}"));
        n.vm.power_off();
        n.agent = None;
        let config = n.vm.config.clone();
        n.vm = Vm::launch(ns, accel, config, &dir);
        n.powered_on = Instant::now();
        n.first_boot = None;
    }

    /// Power cut, a fresh disk from the same image, power on: a reimaged machine.
    pub fn reimage(&mut self, name: &str) {
        self.node(name).vm.power_off();
        let disk = self.fresh_disk(name);
        assert_eq!(disk, self.node(name).vm.config.disk, "the node's disk path");
        self.power_cycle(name);
    }

    /// The init node's rendered tree (admin.conf, its certificates).
    pub fn init_tree(&self) -> PathBuf {
        self.work
            .path()
            .join("render")
            .join(self.cluster.init_node().name.as_str())
    }

    /// Waits until `hakube-firstboot status` says `done` on every node; fails
    /// at once when a node's firstboot unit failed (it is not restarted).
    pub fn wait_first_boot(&mut self, limit: Duration) {
        let scenario = self.scenario.clone();
        let r = wait_for(
            "first boot complete on every node",
            limit,
            Duration::from_secs(10),
            || {
                if let Some(crash) = self.kernel_crash() {
                    return Ok(Err(crash));
                }
                let mut pending = Vec::new();
                for n in self.nodes.iter_mut().filter(|n| n.first_boot.is_none()) {
                    match n.firstboot_status() {
                        Ok(s) if s["overall"] == "done" => {
                            let d = n.powered_on.elapsed();
                            eprintln!(
                            "e2e {scenario}: {}: power-on to first boot complete in {} s (+/- 10 s)",
                            n.name,
                            d.as_secs()
                        );
                            n.first_boot = Some(d);
                        }
                        Ok(s) => {
                            // The unit retries a failed step every 30 s; the
                            // same step failing again and again is a failure.
                            let stuck = s["steps"].as_array().and_then(|v| {
                                v.iter().find(|st| {
                                    st["state"] == "failed"
                                        && st["attempts"].as_u64().unwrap_or(0) >= RETRIES_LIMIT
                                })
                            });
                            if let Some(st) = stuck {
                                return Ok(Err(format!(
                                    "{}: step {} failed {} times: {s}",
                                    n.name, st["name"], st["attempts"]
                                )));
                            }
                            if let Ok((_, u)) =
                                n.guest_sh("systemctl is-failed hakube-firstboot.service")
                            {
                                if u.trim() == "failed" {
                                    return Ok(Err(format!(
                                        "{}: hakube-firstboot.service failed: {s}",
                                        n.name
                                    )));
                                }
                            }
                            pending.push(format!("{}: {}", n.name, s["overall"]));
                        }
                        Err(e) => pending.push(format!("{}: {e}", n.name)),
                    }
                }
                if pending.is_empty() {
                    Ok(Ok(()))
                } else {
                    Err(pending.join("; "))
                }
            },
        );
        match r {
            Ok((Ok(()), _)) => {}
            Ok((Err(e), _)) | Err(e) => self.fail(&e),
        }
    }

    /// `kubectl --kubeconfig admin.conf ARGS` in the namespace (so through
    /// the control-plane endpoint), bounded.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut c = self.ns.exec(&self.kubectl_bin);
        c.arg("--kubeconfig")
            .arg(&self.admin_conf)
            .arg("--request-timeout=20s")
            .args(args);
        run_bounded(&mut c, Duration::from_secs(60), self.work.path())
    }

    pub fn kubectl_json(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl(&a)?;
        serde_json::from_str(&out).map_err(|e| format!("kubectl {args:?}: not JSON ({e})"))
    }

    /// A guest kernel that crashed (its serial log says so), named.
    pub fn kernel_crash(&self) -> Option<String> {
        self.nodes.iter().find_map(|n| {
            n.vm.kernel_crash()
                .map(|l| format!("{}: the guest kernel crashed: {l}", n.name))
        })
    }

    /// Fails the scenario: the message, every node's serial log tail and last
    /// firstboot status (the full logs are kept by Drop).
    pub fn fail(&self, msg: &str) -> ! {
        let mut s = if self.step.is_empty() {
            format!("e2e {}: {msg}\n", self.scenario)
        } else {
            format!(
                "e2e {}: step {:?} failed: {msg}\n",
                self.scenario, self.step
            )
        };
        if let Some(crash) = self.kernel_crash() {
            s.push_str(&format!("({crash})\n"));
        }
        for n in &self.nodes {
            s.push_str(&format!(
                "\n--- {} serial log (tail) ---\n{}\n--- {} last firstboot status ---\n{}\n",
                n.name,
                n.vm.serial_tail(40),
                n.name,
                n.last_status
            ));
        }
        panic!("{s}");
    }

    /// `Ok(v)` or the scenario fails with `what` and the error.
    pub fn must<T>(&self, what: &str, r: Result<T, String>) -> T {
        r.unwrap_or_else(|e| self.fail(&format!("{what}: {e}")))
    }
}

/// How often one first-boot step may fail (the unit retries it every 30 s)
/// before the scenario fails.
const RETRIES_LIMIT: u64 = 4;

/// Run in each guest when a scenario fails (kept as `<node>-diagnostics.txt`):
/// what the serial console does not show. Each is a guest call of its own,
/// bounded to 60 s: on the joining masters of HA run 7 (guest load 21) one
/// call for journals and container logs together did not finish in time. A
/// kubelet without a client certificate repeats two lines every second (HA
/// run 8: they filled the whole tail), so they are left out, once kept.
const DIAGNOSTICS: &[&str] = &[
    "exec 2>&1; echo '== load and memory'; cat /proc/loadavg; \
     grep -E '^(MemTotal|MemAvailable):' /proc/meminfo; \
     echo '== systemctl --failed'; systemctl --failed --no-pager; \
     echo '== journalctl -u kubelet (without its once-a-second repeats)'; \
     journalctl -b --no-pager -o short-monotonic -u kubelet \
       | grep -vE 'No valid client certificate is found|Unable to register mirror pod' | tail -n 150",
    "exec 2>&1; echo '== journalctl -u containerd'; \
     journalctl -b --no-pager -o short-monotonic -u containerd | tail -n 80; \
     echo '== haproxy and keepalived: backend and VIP changes'; \
     journalctl -b --no-pager -o short-monotonic -u haproxy -u keepalived \
       | grep -vE 'Connect from|client-fin' | tail -n 40; \
     echo '== kernel: OOM'; journalctl -b -k --no-pager | grep -iE 'out of memory|oom-kill' | tail -n 20",
    "exec 2>&1; export CONTAINER_RUNTIME_ENDPOINT=unix:///run/containerd/containerd.sock; \
     echo '== crictl pods'; crictl pods; echo '== crictl ps -a'; crictl ps -a; \
     for c in $(crictl ps -a -q); do echo \"== crictl logs $c\"; crictl logs --tail 40 $c; done",
    "exec 2>&1; export CONTAINER_RUNTIME_ENDPOINT=unix:///run/containerd/containerd.sock; \
     echo '== why containers ended (exit code, reason, started, finished)'; \
     for c in $(crictl ps -a -q --state exited); do echo \"-- $c\"; \
       crictl inspect $c | grep -E '\"(name|exitCode|reason|startedAt|finishedAt)\":' | head -n 6; done; \
     echo '== kubelet: probes, kills, client certificate'; \
     journalctl -b --no-pager -o short-monotonic -u kubelet \
       | grep -E 'Probe failed|probe failed|Killing container|OOM|certificate|bootstrap' \
       | grep -v 'No valid client certificate is found' | tail -n 60; \
     journalctl -b --no-pager -o short-monotonic -u kubelet \
       | grep -m 1 -E 'No valid client certificate is found'",
];

impl Drop for ClusterHarness {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        // Whoever interrupts wants out now: the guests' diagnostics (up to a
        // minute per node under load) are read only for a failure.
        if failed && !harness::interrupted() {
            for n in &mut self.nodes {
                let _ = std::fs::write(
                    self.work
                        .path()
                        .join(format!("{}-firstboot-status.json", n.name)),
                    &n.last_status,
                );
                let mut diag = String::new();
                for script in DIAGNOSTICS {
                    match n.guest_sh(script) {
                        Ok((_, out)) => diag.push_str(&out),
                        Err(e) => diag.push_str(&format!("(diagnostics not read: {e})\n")),
                    }
                }
                let _ = std::fs::write(
                    self.work.path().join(format!("{}-diagnostics.txt", n.name)),
                    diag,
                );
            }
        }
        // VMs first (they hold the taps), then the logs, then the namespace
        // and the work directory (field drops).
        self.nodes.clear();
        if failed {
            let dest = harness::artifacts_dir(&self.scenario);
            match harness::keep_files(
                self.work.path(),
                &[
                    "-serial.log",
                    "-qemu.err",
                    "-firstboot-status.json",
                    "-diagnostics.txt",
                ],
                &dest,
            ) {
                Ok(n) => eprintln!(
                    "e2e {}: kept {n} log files in {}",
                    self.scenario,
                    dest.display()
                ),
                Err(e) => eprintln!(
                    "e2e {}: could not keep the logs in {}: {e}",
                    self.scenario,
                    dest.display()
                ),
            }
        }
    }
}

/// One `hakube-build --json` of the scenario's cluster from the test mirror
/// and the test registry; the base-rootfs cache is shared by runs (not a
/// temp file), so a warm run skips mmdebstrap.
struct Build<'a> {
    spec: Option<&'a Path>,
    mirror: &'a Path,
    work: &'a Path,
    role: Role,
    /// One node of the role (None: all of them).
    node: Option<&'a str>,
    /// Names the output directory and lock of a build besides the first.
    tag: &'a str,
    /// SOURCE_DATE_EPOCH (None: the base rootfs's time).
    epoch: Option<i64>,
}

impl Build<'_> {
    fn run(&self) -> serde_json::Value {
        let w = self.work;
        let suffix = if self.tag.is_empty() {
            String::new()
        } else {
            format!("-{}", self.tag)
        };
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hakube-cache");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hakube-build"));
        cmd.args(["--profile", self.role.as_str(), "--json"]);
        if let Some(n) = self.node {
            cmd.args(["--node", n]);
        }
        if let Some(s) = self.spec {
            cmd.arg("--cluster").arg(s);
        }
        if let Some(e) = self.epoch {
            cmd.env("SOURCE_DATE_EPOCH", e.to_string());
        }
        cmd.arg("--artifacts")
            .arg(self.mirror)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--state")
            .arg(w.join("state"))
            .arg("--out")
            .arg(w.join(format!("out{suffix}")))
            .arg("--lock")
            .arg(w.join(format!("hakube{suffix}.lock")))
            .arg("--firstboot-bin")
            .arg(firstboot_bin());
        registry_args(&mut cmd);
        let what = format!("hakube-build --profile {}{suffix}", self.role.as_str());
        let out = run_bounded(&mut cmd, Duration::from_secs(1800), w)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{what} --json printed no JSON ({e}): {out}"))
    }
}

/// The container images come from the test registry (tests/registry), which
/// holds them under `<upstream host>/<repository>`; the VMs never see it.
fn registry_args(cmd: &mut Command) {
    let registry = required_env(
        "HAKUBE_TEST_REGISTRY",
        "the test registry (127.0.0.1:PORT) started by tests/registry",
    );
    let ca = required_env(
        "HAKUBE_TEST_REGISTRY_CA",
        "the test registry's CA certificate (PEM)",
    );
    let registry = registry.display().to_string();
    for upstream in ["registry.k8s.io", "ghcr.io"] {
        cmd.arg("--registry-mirror")
            .arg(format!("{upstream}=https://{registry}/{upstream}"));
    }
    cmd.arg("--registry-ca").arg(ca);
}

/// The test mirror carries the default cluster's versions (tests/make-mirror
/// builds exactly that set): the fixture's kubernetesVersion is replaced by
/// the default's, so the fixture never drifts from the mirror.
fn pin_default_versions(fixture: &Path, work: &Path) -> PathBuf {
    let default = hakube_build::spec::load(None).expect("the embedded default cluster loads");
    let text = std::fs::read_to_string(fixture)
        .unwrap_or_else(|e| panic!("reading {}: {e}", fixture.display()));
    let pinned: String = text
        .lines()
        .map(|l| {
            if l.starts_with("kubernetesVersion:") {
                format!("kubernetesVersion: {}\n", default.kubernetes_version)
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let out = work.join("cluster.yaml");
    std::fs::write(&out, pinned).expect("writing the scenario spec");
    out
}

/// admin.conf as the images carry it (same state directory, so the same
/// client certificate), pointing at the control-plane endpoint.
fn render_admin_conf(cluster: &Cluster, spec: Option<&Path>, work: &Path) -> PathBuf {
    let init = cluster.init_node().name.as_str().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hakube-build"));
    cmd.arg("render");
    if let Some(s) = spec {
        cmd.arg("--cluster").arg(s);
    }
    cmd.arg("--state")
        .arg(work.join("state"))
        .arg("--out")
        .arg(work.join("render"))
        .args(["--node", &init]);
    run(&mut cmd);
    let conf = work
        .join("render")
        .join(&init)
        .join("etc/kubernetes/admin.conf");
    assert!(
        conf.is_file(),
        "hakube-build render wrote no {}",
        conf.display()
    );
    conf
}

/// The nodes' gateway with their prefix (e.g. 192.168.122.1/24) for br0.
fn bridge_address(cluster: &Cluster) -> String {
    for n in &cluster.nodes {
        if let NodeNetwork::Static {
            address,
            gateway: Some(gw),
            ..
        } = &n.network
        {
            return format!("{gw}/{}", address.prefix_len());
        }
    }
    panic!("the scenario's nodes need static addresses with a gateway (the bridge takes it)");
}

/// KVM when a short smoke boot reaches the guest agent (nested KVM here fails
/// or hangs in early boot), TCG otherwise.
pub fn pick_accel(ns: &Netns, image: &Path, mac: &str, dir: &Path) -> Accel {
    if !Path::new("/dev/kvm").exists() {
        return Accel::Tcg;
    }
    let overlay = dir.join("smoke.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(image)
        .arg(&overlay));
    let config = VmConfig {
        tag: "smoke".into(),
        disk: overlay.clone(),
        mac: mac.into(),
        tap: "tap0".into(),
        memory_mib: 1024,
        cpus: 1,
        extra_disks: Vec::new(),
    };
    let mut smoke = Vm::launch(ns, Accel::Kvm, config, dir);
    let ok = smoke.wait_agent(Duration::from_secs(60)).is_ok();
    drop(smoke);
    let _ = std::fs::remove_file(&overlay);
    if ok {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}
