//! firstboot's kubeadm steps against the real kubeadm (`HAKUBE_SRCBUILD_BIN`),
//! as far as it runs outside a VM.
//!
//! Real: render's trees and certificates; firstboot's steps and journal,
//! driven through `hakube_firstboot::run`; every `kubeadm` command line
//! firstboot builds, run by the real kubeadm chrooted into the node's tree
//! (`--rootfs`, so the node's own paths apply) with `--dry-run` added, and
//! `--ignore-preflight-errors=all` on `init`/`join` (this host has no
//! kubelet or container runtime, which a VM would). kubeadm's dry run goes
//! through its whole workflow (certificates, kubeconfigs, manifests, kubelet
//! configuration, upload-config, bootstrap token, addons) against its dry-run
//! client; what it would have written is then installed where a real run
//! writes it, so firstboot's later steps read kubeadm's own files.
//!
//! The nodes get LAN addresses (kubeadm refuses a loopback advertise
//! address) and kubeadm runs in a network namespace of the node's own, so
//! whatever its dry-run client dials stays on this host and goes unanswered.
//! A dry run checks certificates in the real certificate directory but the
//! kubeconfigs and the service-account key in its dry-run directory only:
//! those are judged by a real run in hakube-build's `realtools_phases`.
//!
//! Doubles: systemd, the network probes, `hostname`/`ip`, and kubectl (the
//! API answers: this test has no API server; the real control plane is in
//! hakube-build's `realtools_control_plane` target).
//!
//! Only a VM shows, and this target does not claim: the kubelet starting the
//! static pods, `kubeadm join` past discovery (TLS bootstrap of a kubelet).
//! Discovery with the rendered join configuration is checked against a real
//! API server in `realtools_control_plane`.

mod support;

use hakube_firstboot::fakes::{FakeCluster, FakeEtcd, FakeProbe, FakeRunner, FakeServices};
use hakube_firstboot::steps::Env;
use hakube_firstboot::system::{Cmd, CommandRunner, Output, SystemClock};
use hakube_node_profile::NodeProfile;
use serde_json::Value;
use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use support::{node_identity, runtime_socket_on_start, waits, Scenario};

/// Inside the node's tree: where kubeadm's dry run writes.
const DRY_RUN_DIR: &str = "var/tmp/realtools-kubeadm-dryrun";

fn kubeadm_bin() -> PathBuf {
    support::srcbuild_bin("kubeadm")
}

/// A network namespace of the node's own: `lo`, and a veth pair whose one
/// end holds the node's address and the default route (kubeadm's defaulting
/// looks for such an interface). kubeadm's dry-run client may read from the
/// node's API endpoint; here nothing answers, and nothing leaves this host.
struct Netns(String);

impl Netns {
    fn new(address: &str) -> Netns {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("realtools-fb-{}-{n}", std::process::id());
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        let ns = Netns(name.clone());
        let addr = format!("{address}/24");
        for args in [
            &["-n", &name, "link", "set", "lo", "up"][..],
            &[
                "-n", &name, "link", "add", "rt0", "type", "veth", "peer", "name", "rt1",
            ],
            &["-n", &name, "addr", "add", &addr, "dev", "rt0"],
            &["-n", &name, "link", "set", "rt0", "up"],
            &["-n", &name, "link", "set", "rt1", "up"],
            &["-n", &name, "route", "add", "default", "dev", "rt0"],
        ] {
            ip(args);
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
}

/// One kubeadm call: firstboot's argv and what the real kubeadm answered.
#[derive(Debug, Clone)]
struct Call {
    argv: Vec<String>,
    out: Output,
}

/// The node's programs: the real kubeadm (dry run, chrooted), scripted
/// kubectl answers, `hostname`/`ip` as the node reports them.
struct NodeRunner {
    root: PathBuf,
    netns: Netns,
    identity: FakeRunner,
    kubectl: FakeRunner,
    calls: RefCell<Vec<Call>>,
    /// Power cut right after a full `kubeadm init` returns.
    cut_after_init: bool,
}

impl NodeRunner {
    fn new(root: &Path, p: &NodeProfile) -> NodeRunner {
        let identity = FakeRunner::new();
        node_identity(&identity, p);
        NodeRunner {
            root: root.to_path_buf(),
            netns: Netns::new(&p.address.unwrap().to_string()),
            identity,
            kubectl: FakeRunner::new(),
            calls: RefCell::new(Vec::new()),
            cut_after_init: false,
        }
    }

    /// A path under the node's root as the node sees it.
    fn node_path(&self, arg: &str) -> String {
        match Path::new(arg).strip_prefix(&self.root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => arg.to_string(),
        }
    }

    fn kubeadm(&self, cmd: &Cmd) -> Output {
        let full = |verb: &str| {
            cmd.args.first().is_some_and(|a| a == verb)
                && cmd.args.get(1).is_none_or(|a| a != "phase")
        };
        let mut args: Vec<String> = cmd.args.iter().map(|a| self.node_path(a)).collect();
        args.push("--dry-run".into());
        if full("init") || full("join") {
            args.push("--ignore-preflight-errors=all".into());
        }
        let dry = self.root.join(DRY_RUN_DIR);
        let _ = fs::remove_dir_all(&dry);
        fs::create_dir_all(&dry).unwrap();
        // A dry-run phase reads the kubeconfigs from the dry-run directory,
        // where a dry-run init would have left them: the node's own.
        let phase = cmd.args.get(1).is_some_and(|a| a == "phase");
        for e in fs::read_dir(self.root.join("etc/kubernetes")).unwrap() {
            if !phase {
                break;
            }
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "conf") {
                fs::copy(&p, dry.join(p.file_name().unwrap())).unwrap();
            }
        }
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.netns.0])
            .arg(kubeadm_bin())
            .arg("--rootfs")
            .arg(&self.root)
            .args(&args)
            .env("KUBEADM_INIT_DRYRUN_DIR", format!("/{DRY_RUN_DIR}"))
            .env("KUBEADM_JOIN_DRYRUN_DIR", format!("/{DRY_RUN_DIR}"))
            .output()
            .expect("running kubeadm");
        let out = Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if out.status == 0 && full("init") {
            install_dry_run(&self.root);
        }
        self.calls.borrow_mut().push(Call {
            argv: cmd.args.clone(),
            out: out.clone(),
        });
        if self.cut_after_init && full("init") {
            panic!("simulated power cut after: {}", cmd.line());
        }
        out
    }
}

/// What kubeadm's dry run would have written, installed where a real run
/// writes it; files already there (baked) are left alone.
fn install_dry_run(root: &Path) {
    let dry = root.join(DRY_RUN_DIR);
    for e in fs::read_dir(&dry).unwrap() {
        let p = e.unwrap().path();
        if !p.is_file() {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let dest = match name.as_str() {
            n if n.ends_with(".conf") => format!("etc/kubernetes/{n}"),
            "etcd.yaml"
            | "kube-apiserver.yaml"
            | "kube-controller-manager.yaml"
            | "kube-scheduler.yaml" => format!("etc/kubernetes/manifests/{name}"),
            "config.yaml" | "kubeadm-flags.env" | "instance-config.yaml" => {
                format!("var/lib/kubelet/{name}")
            }
            _ => continue,
        };
        let dest = root.join(dest);
        if !dest.exists() {
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(&p, &dest).unwrap();
        }
    }
}

impl CommandRunner for NodeRunner {
    fn run(&self, cmd: &Cmd) -> anyhow::Result<Output> {
        match cmd.program.as_str() {
            "hostname" | "ip" => self.identity.run(cmd),
            "kubectl" => self.kubectl.run(cmd),
            "kubeadm" => Ok(self.kubeadm(cmd)),
            other => anyhow::bail!("the test node has no program {other:?} ({})", cmd.line()),
        }
    }
}

/// kubectl as the API server of a cluster kubeadm just initialised would
/// answer: kube-proxy's configmap points at `endpoint` (the local balancer,
/// as kubeadm's kube-proxy phase deployed it from kube-proxy.yaml); the
/// bootstrap token's secret is gone (so firstboot re-creates it with
/// kubeadm).
fn script_api(k: &FakeRunner, endpoint: &str) {
    let cm = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
        "data": {"kubeconfig.conf": format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://{endpoint}\n  name: default\n")},
    });
    k.effect("kubectl", move |c: &Cmd| {
        let line = c.line();
        if line.contains("get configmap kube-proxy") {
            Output::ok(&cm.to_string())
        } else if line.contains("get secret bootstrap-token-") {
            Output {
                status: 1,
                stdout: String::new(),
                stderr: "Error from server (NotFound): secrets not found\n".into(),
            }
        } else {
            Output::ok("")
        }
    });
}

fn run_node(s: &Scenario, runner: &NodeRunner, node: &str, api: bool) -> anyhow::Result<()> {
    let root = s.root(node);
    let p = s.profile(node);
    let svc = FakeServices::default();
    runtime_socket_on_start(&svc, &root, &p);
    let probe = FakeProbe::default();
    probe
        .tcp
        .borrow_mut()
        .insert(format!("127.0.0.1:{}", p.local_lb.port));
    if api {
        probe.answer(&format!("https://{}/readyz", p.endpoint.host_port()), 0);
        for m in &p.masters {
            probe.answer(&format!("https://{}:6443/readyz", m.address), 0);
        }
    }
    let etcd = FakeEtcd::new(FakeCluster::new(&[], true));
    let env = Env {
        root,
        cmd: runner,
        svc: &svc,
        etcd: &etcd,
        probe: &probe,
        clock: &SystemClock,
        waits: waits(),
    };
    hakube_firstboot::run(&env, None)
}

/// A stacked-etcd cluster (no etcd nodes), master-1 and worker-1.
fn stacked_scenario(index: u16) -> Scenario {
    let text = support::spec(
        "  - {name: worker-1, role: worker, network: {address: 127.0.0.41/8, gateway: 127.0.0.1, dns: [127.0.0.1]}}\n",
    )
    .replace("topology: external", "topology: stacked")
    // kubeadm refuses a loopback advertise address (it then looks for
    // another on the default route): the node gets a LAN address, and
    // kubeadm runs in a network namespace where nothing answers it.
    .replace("127.0.0.", "192.168.122.")
    .lines()
    .filter(|l| !l.contains("role: etcd"))
    .collect::<Vec<_>>()
    .join("\n");
    Scenario::from_spec(index, &format!("{text}\n"))
}

fn join_yaml_discovery(root: &Path) -> (String, String) {
    let text = fs::read_to_string(root.join("etc/hakube/kubeadm/join.yaml")).unwrap();
    let v: Value = serde_yaml_ng::from_str(&text).unwrap();
    let bt = &v["discovery"]["bootstrapToken"];
    (
        bt["token"].as_str().unwrap().to_string(),
        bt["caCertHashes"][0].as_str().unwrap().to_string(),
    )
}

fn calls_text(calls: &[Call]) -> String {
    calls
        .iter()
        .map(|c| {
            format!(
                "$ kubeadm {} -> {}\n{}{}",
                c.argv.join(" "),
                c.out.status,
                c.out.stdout,
                c.out.stderr
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lines of kubeadm's output tagged `[tag]` that do not say "Using existing".
fn not_existing<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.starts_with(tag))
        .filter(|l| l.contains("Generating") || l.contains("Writing \""))
        // A dry run looks for the service-account key in its dry-run
        // directory only (and "generates" one there); a real run uses the
        // baked one, as hakube-build's realtools_phases target shows.
        .filter(|l| !l.contains("Generating \"sa\" key"))
        .collect()
}

#[test]
fn firstboots_kubeadm_init_runs_through_the_real_kubeadm() {
    let s = stacked_scenario(0);
    let m1 = s.root("master-1");
    let p = s.profile("master-1");
    let runner = NodeRunner::new(&m1, &p);
    script_api(&runner.kubectl, &format!("127.0.0.1:{}", p.local_lb.port));
    let r = run_node(&s, &runner, "master-1", false);
    let calls = runner.calls.borrow().clone();
    r.unwrap_or_else(|e| panic!("master-1: {e:#}\n{}", calls_text(&calls)));
    let failed: Vec<&Call> = calls.iter().filter(|c| c.out.status != 0).collect();
    assert!(
        failed.is_empty(),
        "kubeadm refused:\n{}",
        calls_text(&calls)
    );

    // Exactly firstboot's command lines, each accepted by the real kubeadm.
    let init_yaml = m1
        .join("etc/hakube/kubeadm/init.yaml")
        .display()
        .to_string();
    let admin = m1.join("etc/kubernetes/admin.conf").display().to_string();
    let argvs: Vec<Vec<String>> = calls.iter().map(|c| c.argv.clone()).collect();
    let token = fs::read_to_string(m1.join("etc/hakube/bootstrap-token")).unwrap();
    let token = token.trim().to_string();
    let proxy_yaml = m1
        .join("etc/hakube/kubeadm/kube-proxy.yaml")
        .display()
        .to_string();
    assert_eq!(argvs.len(), 3, "{argvs:#?}");
    assert_eq!(argvs[0], ["init", "--config", &init_yaml]);
    assert_eq!(
        argvs[1],
        [
            "init",
            "phase",
            "addon",
            "kube-proxy",
            "--config",
            &proxy_yaml
        ]
    );
    assert_eq!(argvs[2][..3], ["token", "create", &token]);
    assert_eq!(argvs[2][argvs[2].len() - 2..], ["--kubeconfig", &admin]);

    // kubeadm init skips kube-proxy (init.yaml's skipPhases) and deploys
    // CoreDNS; its own kube-proxy phase then deploys kube-proxy with a
    // kubeconfig naming the local balancer, not the endpoint.
    let init_out = &calls[0].out.stdout;
    assert!(
        init_out.contains("Applied essential addon: CoreDNS"),
        "{init_out}"
    );
    assert!(!init_out.contains("addon: kube-proxy"), "{init_out}");
    let proxy_out = &calls[1].out.stdout;
    assert!(
        proxy_out.contains("Applied essential addon: kube-proxy"),
        "{proxy_out}"
    );
    let local = format!("server: https://127.0.0.1:{}", p.local_lb.port);
    assert!(proxy_out.contains(&local), "{proxy_out}");
    assert!(
        !proxy_out.contains(&format!("server: https://{}", p.endpoint.host_port())),
        "{proxy_out}"
    );

    // kubeadm took every baked certificate as its own.
    let certs: Vec<&str> = init_out
        .lines()
        .filter(|l| l.starts_with("[certs]"))
        .collect();
    assert!(
        certs
            .iter()
            .any(|l| l.contains("Using existing apiserver certificate")),
        "{init_out}"
    );
    assert_eq!(
        not_existing(init_out, "[certs]"),
        Vec::<&str>::new(),
        "{init_out}"
    );
    // (A dry run checks kubeconfigs and the service-account key in its
    // dry-run directory only; the baked ones are judged by a real run in
    // hakube-build's realtools_phases target.)
    // kubeadm's own join command carries the token and CA pin render baked
    // into the worker's join.yaml.
    let (w_token, w_hash) = join_yaml_discovery(&s.root("worker-1"));
    assert_eq!(w_token, token);
    assert!(init_out.contains(&format!("--token {token}")), "{init_out}");
    assert!(
        init_out.contains(&format!("--discovery-token-ca-cert-hash {w_hash}")),
        "kubeadm computes another CA pin than render baked ({w_hash}):\n{init_out}"
    );

    // firstboot finished, and says so.
    let st: Value = serde_json::from_str(&support::status(&m1, true)).unwrap();
    assert_eq!(st["overall"], "done", "{st:#}");
}

#[test]
fn an_init_cut_short_is_finished_with_phases_the_real_kubeadm_accepts() {
    let s = stacked_scenario(1);
    let m1 = s.root("master-1");
    let p = s.profile("master-1");
    let mut runner = NodeRunner::new(&m1, &p);
    script_api(&runner.kubectl, &format!("127.0.0.1:{}", p.local_lb.port));
    runner.cut_after_init = true;
    let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_node(&s, &runner, "master-1", false)
    }));
    assert!(cut.is_err(), "the power cut happened");
    let st = support::status(&m1, false);
    assert!(st.contains("kubeadm-init         running"), "{st}");

    // Next boot: the control plane is up; firstboot finishes with phases.
    let runner = NodeRunner::new(&m1, &p);
    script_api(&runner.kubectl, &format!("127.0.0.1:{}", p.local_lb.port));
    let r = run_node(&s, &runner, "master-1", true);
    let calls = runner.calls.borrow().clone();
    r.unwrap_or_else(|e| panic!("master-1: {e:#}\n{}", calls_text(&calls)));
    let init_yaml = m1
        .join("etc/hakube/kubeadm/init.yaml")
        .display()
        .to_string();
    let phases: Vec<Vec<String>> = calls
        .iter()
        .filter(|c| c.argv.first().is_some_and(|a| a == "init"))
        .map(|c| c.argv.clone())
        .collect();
    let proxy_yaml = m1
        .join("etc/hakube/kubeadm/kube-proxy.yaml")
        .display()
        .to_string();
    let want: Vec<Vec<String>> = [
        (&["upload-config", "all"][..], &init_yaml),
        (&["mark-control-plane"], &init_yaml),
        (&["bootstrap-token"], &init_yaml),
        (&["kubelet-finalize", "all"], &init_yaml),
        (&["addon", "coredns"], &init_yaml),
        (&["addon", "kube-proxy"], &proxy_yaml),
    ]
    .iter()
    .map(|(ph, config)| {
        let mut v = vec!["init".to_string(), "phase".to_string()];
        v.extend(ph.iter().map(|x| x.to_string()));
        v.extend(["--config".to_string(), config.to_string()]);
        v
    })
    .collect();
    assert_eq!(phases, want);
    // kube-proxy is deployed once, by its own phase, naming the local
    // balancer (`addon all` would deploy it against the endpoint: a phase
    // run alone ignores init.yaml's skipPhases).
    let proxies: Vec<&Call> = calls
        .iter()
        .filter(|c| c.out.stdout.contains("Applied essential addon: kube-proxy"))
        .collect();
    assert_eq!(proxies.len(), 1, "{}", calls_text(&calls));
    assert_eq!(
        proxies[0].argv[..4],
        ["init", "phase", "addon", "kube-proxy"]
    );
    assert!(proxies[0]
        .out
        .stdout
        .contains(&format!("server: https://127.0.0.1:{}", p.local_lb.port)));
    let failed: Vec<&Call> = calls.iter().filter(|c| c.out.status != 0).collect();
    assert!(
        failed.is_empty(),
        "kubeadm refused:\n{}",
        calls_text(&calls)
    );
    let st: Value = serde_json::from_str(&support::status(&m1, true)).unwrap();
    assert_eq!(st["overall"], "done", "{st:#}");
}
