//! A real control plane on this host from master-1's baked files: etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler (all from
//! `HAKUBE_SRCBUILD_BIN`) started as processes with the command lines of the
//! static pod manifests kubeadm writes for master-1's init.yaml (`kubeadm
//! init phase control-plane all` / `etcd local`, parsed here, not copied),
//! using master-1's baked certificates and kubeconfigs. Then:
//!
//! - `kubectl --kubeconfig admin.conf get --raw /readyz` answers `ok`, and
//!   the controller-manager and the scheduler hold their leases (their baked
//!   kubeconfigs authenticate and are authorised);
//! - after `kubeadm init phase upload-config all` and `bootstrap-token`
//!   (what firstboot's init runs), the baked bootstrap token authenticates
//!   as a bootstrapper, and a wrong secret does not;
//! - the controller-manager's bootstrap signer signs cluster-info
//!   (`jws-kubeconfig-<token id>`);
//! - worker-1's rendered discovery (token and CA pin from its join.yaml) is
//!   accepted by kubeadm's own token discovery (`kubeadm join phase
//!   preflight`, which discovers cluster-info and fetches the cluster's
//!   configuration with the token, writing nothing), and the same with a
//!   wrong CA pin is refused;
//! - master-2's baked certificates pass the checks of a control-plane join
//!   (`kubeadm join phase control-plane-prepare certs`: the SAN check
//!   `validateCertificateWithConfig` runs there), changing no byte.
//!
//! Addresses and ports (the only rewriting done to kubeadm's command lines,
//! besides prefixing the node's paths with the scratch root): the node's
//! address becomes 127.0.2.1 and the well-known ports move into 16600-16699;
//! added: the API server's bind address (0.0.0.0) and `--endpoint-reconciler-type=none`
//! (a loopback advertise address is refused otherwise), the secure ports of
//! the controller-manager and the scheduler, and, when kubeadm sets none,
//! the controller-manager's flex-volume directory under the scratch root.
//! Every client reaches the API server at 127.0.0.1: that is the loopback
//! name its baked certificate carries (as for the node-local load
//! balancer); the same holds for etcd, which kubeadm already reaches at
//! 127.0.0.1. Everything runs in a network namespace of this test's own (see
//! `Netns`), where the API server listens on all addresses. Processes are killed when the test ends,
//! also on a panic; their logs are kept (and their tails printed) on failure.

mod realtools_support;

use realtools_support::*;
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every process of this test runs in a network namespace of its own: `lo`,
/// also holding the node's own address (kubeadm's client
/// dials the node's local API endpoint, see below). Whatever else kubeadm or
/// a component might dial fails at once instead of leaving this host.
struct Netns(String);

impl Netns {
    fn new(node_ip: &str) -> Netns {
        let name = format!("realtools-cp-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let addr = format!("{node_ip}/32");
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        ok(&out.expect("running ip"), &format!("ip netns add {name}"));
        // Deleted on drop from here on, also when a step below fails.
        let ns = Netns(name.clone());
        for args in [
            vec!["-n", &name, "link", "set", "lo", "up"],
            vec!["-n", &name, "addr", "add", &addr, "dev", "lo"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("running ip");
            ok(&out, &format!("ip {}", args.join(" ")));
        }
        ns
    }

    /// `program` inside the namespace.
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program);
        c
    }

    fn kubeadm(&self, root: &Path, args: &[&str]) -> Output {
        run(self
            .command(&tool("kubeadm"))
            .arg("--rootfs")
            .arg(root)
            .args(args))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

const NODE_LOOPBACK: &str = "127.0.2.1";
const API_PORT: u16 = 16643;
/// kubeadm's well-known ports and where this test puts them.
const PORTS: [(u16, u16); 4] = [
    (2379, 16679),
    (2380, 16680),
    (2381, 16681),
    (6443, API_PORT),
];
const CONTROLLER_MANAGER_PORT: u16 = 16657;
const SCHEDULER_PORT: u16 = 16659;

/// Running processes, killed on drop; the work directory is kept (and the
/// logs' tails printed) when the test is failing.
struct Processes {
    work: Option<tempfile::TempDir>,
    running: Vec<(String, Child, PathBuf)>,
}

impl Processes {
    fn dir(&self) -> &Path {
        self.work.as_ref().unwrap().path()
    }

    fn start(&mut self, ns: &Netns, name: &str, argv: &[String]) {
        let log = self.dir().join(format!("{name}.log"));
        let f = File::create(&log).unwrap();
        let child = ns
            .command(Path::new(&argv[0]))
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", argv[0]));
        self.running.push((name.to_string(), child, log));
    }

    /// Stops `name` (killed, as a container stop ends a static pod's
    /// process), so that it can be started again.
    fn stop(&mut self, name: &str) {
        if let Some(i) = self.running.iter().position(|(n, _, _)| n == name) {
            let (_, mut child, _) = self.running.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Fails at once when a process has exited.
    fn all_alive(&mut self) {
        for (name, child, log) in &mut self.running {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{name} exited ({status}):\n{}", tail(log, 40));
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _, log) in &self.running {
                eprintln!(
                    "---- {name} (last lines of {})\n{}",
                    log.display(),
                    tail(log, 25)
                );
            }
            if let Some(w) = self.work.take() {
                eprintln!("work directory kept: {}", w.keep().display());
            }
        }
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The command line of the static pod `manifest` (its only container).
fn manifest_command(manifest: &Path) -> Vec<String> {
    let pod = &yaml_docs(&std::fs::read_to_string(manifest).unwrap())[0];
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{}", manifest.display());
    let mut argv: Vec<String> = containers[0]["command"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no command", manifest.display()))
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    if let Some(args) = containers[0]["args"].as_array() {
        argv.extend(args.iter().map(|a| a.as_str().unwrap().to_string()));
    }
    argv
}

/// kubeadm's command line, runnable on this host: the real binary, the
/// node's paths under `root`, the node's address on loopback, ports moved.
fn host_command(argv: &[String], root: &Path, node_ip: &str) -> Vec<String> {
    let root = root.display().to_string();
    let mut out = vec![tool(&argv[0]).display().to_string()];
    for a in &argv[1..] {
        let mut a = a
            .replace("=/etc/kubernetes/", &format!("={root}/etc/kubernetes/"))
            .replace("=/var/lib/", &format!("={root}/var/lib/"))
            .replace("=/usr/libexec/", &format!("={root}/usr/libexec/"))
            .replace(node_ip, NODE_LOOPBACK);
        for (from, to) in PORTS {
            a = a.replace(&format!(":{from}"), &format!(":{to}"));
            if a.ends_with(&format!("-port={from}")) {
                a = a.replace(&format!("={from}"), &format!("={to}"));
            }
        }
        out.push(a);
    }
    out
}

fn set_flag(argv: &mut Vec<String>, flag: &str, value: &str) {
    let prefix = format!("--{flag}=");
    argv.retain(|a| !a.starts_with(&prefix));
    argv.push(format!("{prefix}{value}"));
}

fn flag<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("--{flag}=");
    argv.iter().find_map(|a| a.strip_prefix(&prefix))
}

/// Points a copy of a baked kubeconfig's server at the test's API server.
fn loopback_server(kubeconfig: &Path) {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let out: Vec<String> = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("server:") {
            Some(_) => {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}server: https://127.0.0.1:{API_PORT}")
            }
            None => l.to_string(),
        })
        .collect();
    assert_ne!(out.join("\n") + "\n", text, "{}", kubeconfig.display());
    std::fs::write(kubeconfig, out.join("\n") + "\n").unwrap();
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("running a tool")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn kubectl(ns: &Netns, admin: &Path, args: &[&str]) -> Output {
    run(ns
        .command(&tool("kubectl"))
        .arg("--kubeconfig")
        .arg(admin)
        .args(["--request-timeout", "10s"])
        .args(args))
}

/// Polls `f` until it returns Some, or fails after `secs` naming `what`.
fn wait_for<T>(
    procs: &mut Processes,
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        procs.all_alive();
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not within {secs}s; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn config_docs(path: &Path) -> Vec<Value> {
    yaml_docs(&std::fs::read_to_string(path).unwrap())
}

/// A copy of a join.yaml inside `root` (at tmp/realtools-join.yaml) with
/// discovery pointed at the test's API server and a bounded timeout;
/// `ca_hash` replaces the pinned hash when given.
fn loopback_join_config(root: &Path, join: &Path, ca_hash: Option<&str>) -> String {
    let mut docs = config_docs(join);
    for d in &mut docs {
        if d["kind"] == "JoinConfiguration" {
            d["discovery"]["bootstrapToken"]["apiServerEndpoint"] =
                Value::from(format!("127.0.0.1:{API_PORT}"));
            if let Some(h) = ca_hash {
                d["discovery"]["bootstrapToken"]["caCertHashes"] = serde_json::json!([h]);
            }
            d["timeouts"] = serde_json::json!({"discovery": "1m0s"});
        }
    }
    let rel = "tmp/realtools-join.yaml";
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::write(root.join(rel), yaml_text(&docs)).unwrap();
    format!("/{rel}")
}

#[test]
fn master_1s_baked_files_run_a_control_plane_that_kubeadm_discovery_trusts() {
    let t0 = Instant::now();
    for t in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubeadm",
        "kubectl",
    ] {
        tool(t);
    }
    let work_dir = tempfile::tempdir().unwrap();
    let work = work_dir.path().to_path_buf();
    let spec = SpecCase {
        label: "default cluster".into(),
        file: None,
    };
    let nodes = render(&spec, &work);
    let default_cluster = hakube_build::spec::load(None).unwrap();
    let m1 = nodes.iter().find(|n| n.init_config().exists()).unwrap();
    let worker = nodes.iter().find(|n| n.role == "worker").unwrap();
    let m2 = nodes
        .iter()
        .find(|n| n.role == "master" && n.name != m1.name)
        .unwrap();
    let init_docs = config_docs(&m1.init_config());
    let init_cfg = init_docs
        .iter()
        .find(|d| d["kind"] == "InitConfiguration")
        .unwrap();
    let node_ip = init_cfg["localAPIEndpoint"]["advertiseAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let token = init_cfg["bootstrapTokens"][0]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let token_id = token.split('.').next().unwrap().to_string();
    // Declared before the processes, dropped after them: they are killed
    // before their namespace goes.
    let ns = Netns::new(&node_ip);
    let mut procs = Processes {
        work: Some(work_dir),
        running: Vec::new(),
    };

    // master-1's tree, and kubeadm's static pod manifests for it.
    let root = work.join("master-1");
    copy_tree(&m1.dir, &root);
    let init = "/etc/hakube/kubeadm/init.yaml";
    for phase in [&["control-plane", "all"][..], &["etcd", "local"]] {
        let mut args = vec!["init", "phase"];
        args.extend(phase);
        args.extend(["--config", init]);
        ok(
            &ns.kubeadm(&root, &args),
            &format!("kubeadm init phase {}", phase.join(" ")),
        );
    }
    let manifests = root.join("etc/kubernetes/manifests");
    let cmdline = |name: &str| {
        host_command(
            &manifest_command(&manifests.join(format!("{name}.yaml"))),
            &root,
            &node_ip,
        )
    };
    let etcd = cmdline("etcd");
    let mut apiserver = cmdline("kube-apiserver");
    let mut cm = cmdline("kube-controller-manager");
    let mut sched = cmdline("kube-scheduler");
    // Both tolerate a slow API server (render/kubeadm.rs leader_election):
    // kubeadm carries the flags into the manifests, and both components
    // start with them and take their leases below.
    for argv in [&cm, &sched] {
        assert_eq!(
            flag(argv, "leader-elect-lease-duration"),
            Some("60s"),
            "{argv:?}"
        );
        assert_eq!(
            flag(argv, "leader-elect-renew-deadline"),
            Some("40s"),
            "{argv:?}"
        );
        assert_eq!(
            flag(argv, "leader-elect-retry-period"),
            Some("5s"),
            "{argv:?}"
        );
    }
    // The three the manifests leave to their defaults: 0.0.0.0 and the
    // well-known ports, which are not this test's to take.
    // All addresses of the private namespace: 127.0.0.1 for the clients,
    // the node's address for kubeadm's own client (see the phases below).
    set_flag(&mut apiserver, "bind-address", "0.0.0.0");
    // The lease endpoint reconciler refuses a loopback advertise address
    // ("may not be in the loopback range"); nothing here reads the
    // `kubernetes` service's endpoints.
    set_flag(&mut apiserver, "endpoint-reconciler-type", "none");
    set_flag(&mut cm, "secure-port", &CONTROLLER_MANAGER_PORT.to_string());
    set_flag(&mut sched, "secure-port", &SCHEDULER_PORT.to_string());
    // The flex-volume prober creates its directory: kubeadm's default
    // (/usr/libexec/..., kubernetes/kubeadm#2031) must land in the scratch
    // root, not on this host.
    if flag(&cm, "flex-volume-plugin-dir").is_none() {
        let dir = root.join("usr/libexec/kubernetes/kubelet-plugins/volume/exec");
        set_flag(
            &mut cm,
            "flex-volume-plugin-dir",
            &dir.display().to_string(),
        );
    }
    assert_eq!(
        flag(&apiserver, "secure-port"),
        Some("16643"),
        "{apiserver:?}"
    );
    assert_eq!(
        flag(&apiserver, "etcd-servers"),
        Some("https://127.0.0.1:16679"),
        "{apiserver:?}"
    );
    for argv in [&etcd, &apiserver, &cm, &sched] {
        assert!(
            !argv.iter().any(|a| a.contains(&node_ip)),
            "the node address survived: {argv:?}"
        );
    }
    std::fs::write(
        work.join("command-lines.txt"),
        [&etcd, &apiserver, &cm, &sched]
            .iter()
            .map(|a| a.join(" "))
            .collect::<Vec<_>>()
            .join("\n\n"),
    )
    .unwrap();
    // The kubeconfigs' servers (the endpoint, or the node's own apiserver)
    // now are the test's.
    for f in [
        "admin.conf",
        "super-admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ] {
        let p = root.join("etc/kubernetes").join(f);
        if p.exists() {
            loopback_server(&p);
        }
    }
    let admin = root.join("etc/kubernetes/admin.conf");

    procs.start(&ns, "etcd", &etcd);
    procs.start(&ns, "kube-apiserver", &apiserver);
    let readyz = wait_for(&mut procs, "the API server's /readyz", 90, || {
        let out = kubectl(&ns, &admin, &["get", "--raw", "/readyz"]);
        let t = text(&out);
        if out.status.success() {
            Ok(t)
        } else {
            Err(t)
        }
    });
    assert_eq!(readyz.trim(), "ok");
    let up = t0.elapsed();
    procs.start(&ns, "kube-controller-manager", &cm);
    procs.start(&ns, "kube-scheduler", &sched);
    // What `kubeadm init` does once the control plane is up. Its client
    // first binds kubeadm:cluster-admins (admin.conf's group) to
    // cluster-admin, with super-admin.conf (EnsureAdminClusterRoleBinding):
    // until then admin.conf may read /readyz and nothing else. That client
    // dials the InitConfiguration's localAPIEndpoint (PointKubeConfigTo-
    // LocalAPIEndpoint: the node's address, which the namespace holds, and
    // the baked certificate names), so these phases get a copy whose bind
    // port is the test's; the ClusterConfiguration they upload is master-1's.
    let mut docs = init_docs.clone();
    for d in &mut docs {
        if d["kind"] == "InitConfiguration" {
            d["localAPIEndpoint"]["bindPort"] = Value::from(API_PORT);
        }
    }
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::write(root.join("tmp/realtools-init.yaml"), yaml_text(&docs)).unwrap();
    for phase in [&["upload-config", "all"][..], &["bootstrap-token"]] {
        let mut args = vec!["init", "phase"];
        args.extend(phase);
        args.extend([
            "--config",
            "/tmp/realtools-init.yaml",
            "--kubeconfig",
            "/etc/kubernetes/admin.conf",
        ]);
        ok(
            &ns.kubeadm(&root, &args),
            &format!("kubeadm init phase {}", phase.join(" ")),
        );
    }

    // kube-proxy, as firstboot's kube-proxy step deploys it (init.yaml skips
    // kubeadm's phase): kubeadm's own phase with master-1's kube-proxy.yaml,
    // so its kubeconfig names the node-local balancer, not the endpoint.
    let mut proxy_docs = config_docs(&m1.kube_proxy_config());
    for d in &mut proxy_docs {
        if d["kind"] == "InitConfiguration" {
            d["localAPIEndpoint"]["bindPort"] = Value::from(API_PORT);
        }
    }
    std::fs::write(
        root.join("tmp/realtools-kube-proxy.yaml"),
        yaml_text(&proxy_docs),
    )
    .unwrap();
    ok(
        &ns.kubeadm(
            &root,
            &[
                "init",
                "phase",
                "addon",
                "kube-proxy",
                "--config",
                "/tmp/realtools-kube-proxy.yaml",
                "--kubeconfig",
                "/etc/kubernetes/admin.conf",
            ],
        ),
        "kubeadm init phase addon kube-proxy",
    );
    let cm = kubectl(
        &ns,
        &admin,
        &[
            "-n",
            "kube-system",
            "get",
            "configmap",
            "kube-proxy",
            "-o",
            "json",
        ],
    );
    let cm: Value =
        serde_json::from_slice(&cm.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&cm)));
    let kubeconfig = cm["data"]["kubeconfig.conf"].as_str().unwrap_or_default();
    assert!(
        kubeconfig.contains(&format!(
            "server: https://127.0.0.1:{}",
            default_cluster.local_lb.port
        )),
        "kube-proxy's kubeconfig does not name the node-local balancer:\n{kubeconfig}"
    );
    let ds = kubectl(
        &ns,
        &admin,
        &["-n", "kube-system", "get", "daemonset", "kube-proxy"],
    );
    assert!(
        ds.status.success(),
        "no kube-proxy DaemonSet: {}",
        text(&ds)
    );

    // The CNI manifests as firstboot's cni step applies them (server-side,
    // conflicts forced), each twice: the step re-runs after a power cut.
    // flannel's is master-1's own; calico's is what master-1 of the same
    // cluster with `cni: calico` gets, made from the stand-in of calico's
    // manifest. The real API server validates every object (calico's CRD, its
    // patched DaemonSet), and stores the patch.
    let calico_spec = work.join("calico-cluster.yaml");
    std::fs::write(
        &calico_spec,
        hakube_build::spec::DEFAULT_CLUSTER_YAML.replace("cni: flannel", "cni: calico"),
    )
    .unwrap();
    let calico_cluster = hakube_build::spec::load(Some(&calico_spec)).unwrap();
    let calico_tree = hakube_build::render::config_tree(
        &calico_cluster,
        calico_cluster.init_node(),
        &render_support::fixed_creds(),
        &render_support::upstream(),
    )
    .unwrap();
    let calico_manifest = root.join("tmp/realtools-calico.yaml");
    match calico_tree.get("etc/hakube/cni/calico.yaml") {
        Some(hakube_build::tree::FileEntry::File { contents, .. }) => {
            std::fs::write(&calico_manifest, contents).unwrap()
        }
        other => panic!("master-1 of a calico cluster has no calico.yaml: {other:?}"),
    }
    for manifest in [m1.dir.join("etc/hakube/cni/flannel.yaml"), calico_manifest] {
        for round in 1..=2 {
            let out = kubectl(
                &ns,
                &admin,
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "-f",
                    manifest.to_str().unwrap(),
                ],
            );
            ok(
                &out,
                &format!("apply {} (round {round})", manifest.display()),
            );
        }
    }
    let ds = kubectl(
        &ns,
        &admin,
        &[
            "-n",
            "kube-system",
            "get",
            "daemonset",
            "calico-node",
            "-o",
            "json",
        ],
    );
    let ds: Value = serde_json::from_str(&ok(&ds, "get daemonset calico-node")).unwrap();
    let env = ds["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    let pool: Vec<&Value> = env
        .iter()
        .filter(|e| e["name"] == "CALICO_IPV4POOL_CIDR")
        .collect();
    assert_eq!(pool.len(), 1, "{env:?}");
    assert_eq!(
        pool[0]["value"].as_str(),
        Some(calico_cluster.networking.pod_cidr.to_string().as_str())
    );
    ok(
        &kubectl(
            &ns,
            &admin,
            &["get", "crd", "ippools.crd.projectcalico.org"],
        ),
        "calico's CRD",
    );
    ok(
        &kubectl(
            &ns,
            &admin,
            &["-n", "kube-flannel", "get", "daemonset", "kube-flannel-ds"],
        ),
        "flannel's DaemonSet",
    );

    for lease in ["kube-controller-manager", "kube-scheduler"] {
        wait_for(&mut procs, &format!("the {lease} lease"), 60, || {
            let out = kubectl(
                &ns,
                &admin,
                &["-n", "kube-system", "get", "lease", lease, "-o", "json"],
            );
            let holder = serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| v["spec"]["holderIdentity"].as_str().map(str::to_string));
            holder.filter(|h| !h.is_empty()).ok_or_else(|| text(&out))
        });
    }

    // The baked token authenticates, as a kubeadm bootstrapper.
    let whoami = |tok: &str| {
        run(ns
            .command(&tool("kubectl"))
            .args(["--server", &format!("https://127.0.0.1:{API_PORT}")])
            .arg("--certificate-authority")
            .arg(root.join("etc/kubernetes/pki/ca.crt"))
            .args(["--token", tok, "--request-timeout", "10s"])
            .args(["auth", "whoami", "-o", "json"]))
    };
    let who = whoami(&token);
    let who: Value =
        serde_json::from_str(&ok(&who, "kubectl auth whoami with the baked token")).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["username"],
        format!("system:bootstrap:{token_id}"),
        "{who:#}"
    );
    assert!(
        who["status"]["userInfo"]["groups"]
            .to_string()
            .contains("system:bootstrappers:kubeadm:default-node-token"),
        "{who:#}"
    );
    let forged = whoami(&format!("{token_id}.0123456789abcdef"));
    assert!(
        !forged.status.success(),
        "a wrong token secret authenticated: {}",
        text(&forged)
    );

    // The controller-manager's bootstrap signer signs cluster-info.
    let jws_key = format!("jws-kubeconfig-{token_id}");
    wait_for(&mut procs, "cluster-info's JWS signature", 60, || {
        let out = kubectl(
            &ns,
            &admin,
            &[
                "-n",
                "kube-public",
                "get",
                "configmap",
                "cluster-info",
                "-o",
                "json",
            ],
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .filter(|v| v["data"][&jws_key].is_string())
            .ok_or_else(|| text(&out))
    });

    // worker-1's baked discovery, judged by kubeadm's own token discovery.
    let wroot = work.join("worker-1");
    copy_tree(&worker.dir, &wroot);
    let join = worker.join_config();
    let pinned = config_docs(&join)[0]["discovery"]["bootstrapToken"]["caCertHashes"][0]
        .as_str()
        .unwrap()
        .to_string();
    let preflight = |cfg: &str| {
        ns.kubeadm(
            &wroot,
            &[
                "join",
                "phase",
                "preflight",
                "--config",
                cfg,
                "--ignore-preflight-errors=all",
                "-v=1",
            ],
        )
    };
    let good_cfg = loopback_join_config(&wroot, &join, None);
    let before = hash_tree(&wroot);
    let out = preflight(&good_cfg);
    let t = text(&out);
    assert!(
        out.status.success(),
        "kubeadm discovery refused worker-1's baked pin:\n{t}"
    );
    assert!(
        t.contains("TLS certificate validates against pinned roots"),
        "discovery did not validate against the pin:\n{t}"
    );
    assert!(t.contains("Retrieving KubeConfig objects"), "{t}");
    assert_eq!(tree_diff(&before, &hash_tree(&wroot)), Vec::<String>::new());
    let wrong = format!("sha256:{}", "0".repeat(64));
    assert_ne!(wrong, pinned);
    let bad_cfg = loopback_join_config(&wroot, &join, Some(&wrong));
    let out = preflight(&bad_cfg);
    let t = text(&out);
    assert!(!out.status.success(), "a wrong CA pin was accepted:\n{t}");
    assert!(
        t.contains("are pinned"),
        "refused, but not for the pin:\n{t}"
    );

    // worker-1 reimaged while its old Node still reads Ready (booted within
    // the node controller's grace period): kubeadm's kubelet-start writes
    // bootstrap-kubelet.conf and its copy of the CA, then refuses, before it
    // configures the kubelet. firstboot recognises the refusal ("already
    // exists in the cluster"), takes a kubelet configuration as the sign that
    // kubeadm got past it, and clears those files for a fresh retry.
    let node = work.join("worker-1-node.json");
    std::fs::write(
        &node,
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"worker-1"}}"#,
    )
    .unwrap();
    ok(
        &kubectl(&ns, &admin, &["create", "-f", &node.to_string_lossy()]),
        "creating the old worker-1 Node",
    );
    let set_ready = |status: &str| {
        let stamp = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": "Ready", "status": status, "reason": "KubeletReady",
            "message": "the machine this disk replaced",
            "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}]}});
        ok(
            &kubectl(
                &ns,
                &admin,
                &[
                    "patch",
                    "node",
                    "worker-1",
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &patch.to_string(),
                ],
            ),
            "setting the old worker-1 Node's Ready condition",
        );
    };
    set_ready("True");
    // (the wrong pin's config was written over the good one's file)
    let good_cfg = loopback_join_config(&wroot, &join, None);
    let kubelet_start = || {
        ns.kubeadm(
            &wroot,
            &[
                "join",
                "phase",
                "kubelet-start",
                "--config",
                &good_cfg,
                "-v=1",
            ],
        )
    };
    let out = kubelet_start();
    let t = text(&out);
    assert!(
        !out.status.success(),
        "kubeadm joined over a Ready Node:\n{t}"
    );
    assert!(
        t.contains(
            "a Node with name \"worker-1\" and status \"Ready\" already exists in the cluster"
        ),
        "refused, but not for the Ready Node:\n{t}"
    );
    assert!(
        wroot.join("etc/kubernetes/bootstrap-kubelet.conf").exists(),
        "{t}"
    );
    assert!(wroot.join("etc/kubernetes/pki/ca.crt").exists(), "{t}");
    assert!(!wroot.join("var/lib/kubelet/config.yaml").exists(), "{t}");
    // Once the node controller has marked it not Ready, kubeadm goes on:
    // the kubelet's configuration is written (starting it fails here: no
    // systemd in the node's tree, which kubeadm only warns about).
    set_ready("Unknown");
    let out = kubelet_start();
    let t = text(&out);
    assert!(!t.contains("already exists in the cluster"), "{t}");
    assert!(wroot.join("var/lib/kubelet/config.yaml").exists(), "{t}");

    // master-2's baked certificates pass a control-plane join's checks.
    let m2root = work.join("master-2");
    copy_tree(&m2.dir, &m2root);
    let m2cfg = loopback_join_config(&m2root, &m2.join_config(), None);
    let before = hash_tree(&m2root);
    let out = ns.kubeadm(
        &m2root,
        &[
            "join",
            "phase",
            "control-plane-prepare",
            "certs",
            "--config",
            &m2cfg,
        ],
    );
    let t = ok(
        &out,
        "kubeadm join phase control-plane-prepare certs on master-2",
    );
    let used = t
        .lines()
        .filter(|l| l.starts_with("[certs] Using the existing"))
        .count();
    assert!(used >= 3, "master-2: {t}");
    for l in t.lines().filter(|l| l.starts_with("[certs]")) {
        assert!(
            l.contains("Using the existing")
                || l.contains("Using certificateDir folder")
                || l.contains("Valid certificates and keys now exist"),
            "master-2: {l}\n{t}"
        );
    }
    assert_eq!(
        tree_diff(&before, &hash_tree(&m2root)),
        Vec::<String>::new()
    );

    // Certificate renewal as hakube-certs.timer does it on a master:
    // `kubeadm certs renew` on the baked apiserver leaf keeps its subject,
    // SANs and usages, signs it anew for the spec's leafValidity, and the
    // restarted API server serves it to clients that verify it against the
    // cluster CA. (On a node kubeadm reads the ClusterConfiguration from the
    // API, finding its own API server's mirror pod by the host name; this
    // host is no node, so the same configuration is given as a file.)
    let crt = root.join("etc/kubernetes/pki/apiserver.crt");
    let baked_identity = cert_identity(&crt);
    let baked = std::fs::read(&crt).unwrap();
    let baked_end = hakube_firstboot::certs::not_after(&baked).unwrap();
    let out = ns.kubeadm(
        &root,
        &[
            "certs",
            "renew",
            "apiserver",
            "--config",
            "/tmp/realtools-init.yaml",
        ],
    );
    let t = ok(&out, "kubeadm certs renew apiserver");
    assert!(!t.contains("Falling back to default configuration"), "{t}");
    let renewed = std::fs::read(&crt).unwrap();
    assert_ne!(renewed, baked, "kubeadm wrote no new certificate:\n{t}");
    assert_eq!(cert_identity(&crt), baked_identity);
    let (from, to) = hakube_firstboot::certs::validity(&renewed).unwrap();
    assert!(
        to >= baked_end,
        "renewed until {to}, baked until {baked_end}"
    );
    assert_eq!(
        (to - from).whole_days(),
        i64::from(default_cluster.certificates.leaf_validity.days),
        "the renewed leaf takes the spec's leafValidity (certificateValidityPeriod)"
    );
    procs.stop("kube-apiserver");
    procs.start(&ns, "kube-apiserver", &apiserver);
    let readyz = wait_for(
        &mut procs,
        "/readyz with the renewed certificate",
        90,
        || {
            let out = kubectl(&ns, &admin, &["get", "--raw", "/readyz"]);
            if out.status.success() {
                Ok(text(&out))
            } else {
                Err(text(&out))
            }
        },
    );
    assert_eq!(readyz.trim(), "ok");

    procs.all_alive();
    eprintln!(
        "API server ready after {:.1}s; everything in {:.1}s",
        up.as_secs_f32(),
        t0.elapsed().as_secs_f32()
    );
}
