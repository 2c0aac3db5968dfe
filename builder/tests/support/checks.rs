//! The checks the cluster scenarios share: readiness, system pods, the
//! firstboot journals, the node-local load balancer, the Service path
//! between nodes, and the formation timings.

#![allow(dead_code)]

use super::cluster::ClusterHarness;
use super::harness::wait_for;
use hakube_node_profile::Role;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Under TCG a control plane comes up ~5x slower than on hardware: kubeadm
/// init alone takes minutes. Generous, but every wait is bounded.
pub const FIRST_BOOT_LIMIT: Duration = Duration::from_secs(50 * 60);
/// From every node Ready to every system pod Running. Under TCG on 2 cores
/// the single master is the bottleneck once the workloads start: in one run
/// etcd reads took up to 10 s, flannel restarted six times on API timeouts
/// and CoreDNS got its sandbox 10 minutes after the nodes were Ready, just
/// past a 10-minute limit, while everything was converging.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(20 * 60);
pub const POLL: Duration = Duration::from_secs(10);
/// From a Service's creation to its answering through kube-proxy's rules.
pub const SERVICE_LIMIT: Duration = Duration::from_secs(600);

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/e2e")
        .join(name)
}

/// Records a timing for bench/e2e.sh (HAKUBE_E2E_TIMINGS names a file that
/// gets one `scenario key seconds` line per figure).
pub fn record(scenario: &str, key: &str, d: Duration) {
    let line = format!("{scenario} {key} {}", d.as_secs());
    eprintln!("e2e timing: {line}");
    if let Some(p) = std::env::var_os("HAKUBE_E2E_TIMINGS") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

pub fn condition<'a>(obj: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Every node of the spec (etcd nodes are no Kubernetes nodes) is Ready.
pub fn nodes_ready(h: &ClusterHarness) -> Result<(), String> {
    let v = h.kubectl_json(&["get", "nodes"])?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let mut missing = Vec::new();
    for n in h.cluster.nodes.iter().filter(|n| n.role != Role::Etcd) {
        let node = items
            .iter()
            .find(|i| i["metadata"]["name"] == n.name.as_str());
        match node.and_then(|i| condition(i, "Ready")) {
            Some(c) if c["status"] == "True" => {}
            Some(c) => missing.push(format!(
                "{}: Ready={} ({})",
                n.name, c["status"], c["message"]
            )),
            None => missing.push(format!("{}: not registered", n.name)),
        }
    }
    if items.len()
        != h.cluster
            .nodes
            .iter()
            .filter(|n| n.role != Role::Etcd)
            .count()
    {
        missing.push(format!("{} nodes registered", items.len()));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// Every pod of kube-system (and flannel's namespace) is Running and Ready,
/// and the expected control-plane pods exist on every master.
pub fn system_pods_running(h: &ClusterHarness) -> Result<(), String> {
    let mut bad = Vec::new();
    let mut names = Vec::new();
    for ns in ["kube-system", "kube-flannel"] {
        let v = h.kubectl_json(&["-n", ns, "get", "pods"])?;
        for p in v["items"].as_array().into_iter().flatten() {
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let ready = condition(p, "Ready")
                .map(|c| c["status"] == "True")
                .unwrap_or(false);
            if p["status"]["phase"] != "Running" || !ready {
                bad.push(format!(
                    "{ns}/{name}: {} ready={ready}",
                    p["status"]["phase"]
                ));
            }
            names.push(name);
        }
    }
    let mut expected: Vec<String> = Vec::new();
    for m in h.cluster.masters() {
        for c in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            expected.push(format!("{c}-{}", m.name));
        }
        if h.cluster.etcd_topology == hakube_node_profile::EtcdTopology::Stacked {
            expected.push(format!("etcd-{}", m.name));
        }
    }
    for e in &expected {
        if !names.contains(e) {
            bad.push(format!("kube-system/{e}: missing"));
        }
    }
    let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    let kube_nodes = h
        .cluster
        .nodes
        .iter()
        .filter(|n| n.role != Role::Etcd)
        .count();
    for (prefix, want) in [
        ("kube-proxy-", kube_nodes),
        ("kube-flannel-ds-", kube_nodes),
    ] {
        if count(prefix) != want {
            bad.push(format!("{} {prefix}* pods, want {want}", count(prefix)));
        }
    }
    if count("coredns-") == 0 {
        bad.push("no coredns pod".into());
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

/// `kubeadm init` ran exactly once, on the init node, and every other
/// Kubernetes node ran `kubeadm join` exactly once (the journal's attempts).
pub fn assert_kubeadm_once(h: &mut ClusterHarness) {
    let init = h.cluster.init_node().name.as_str().to_string();
    let mut problems = Vec::new();
    for i in 0..h.nodes.len() {
        let n = &mut h.nodes[i];
        if n.role == Role::Etcd {
            continue;
        }
        let status = match n.firstboot_status() {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{}: {e}", n.name));
                continue;
            }
        };
        let steps = status["steps"].as_array().cloned().unwrap_or_default();
        let step = |name: &str| steps.iter().find(|s| s["name"] == name).cloned();
        let (want, other) = if n.name == init {
            ("kubeadm-init", "kubeadm-join")
        } else {
            ("kubeadm-join", "kubeadm-init")
        };
        match step(want) {
            Some(s) if s["state"] == "done" && s["attempts"] == 1 => {}
            Some(s) => problems.push(format!("{}: {want} {s}", n.name)),
            None => problems.push(format!("{}: no {want} step", n.name)),
        }
        // The init node lists kubeadm-join too and records it skipped.
        if let Some(s) = step(other) {
            let skipped = s["outcome"]
                .as_str()
                .unwrap_or_default()
                .starts_with("skipped");
            if s["attempts"] != 0 && !skipped {
                problems.push(format!("{}: {other} ran too: {s}", n.name));
            }
        }
        if status["initNode"] != serde_json::json!(n.name == init) {
            problems.push(format!("{}: initNode={}", n.name, status["initNode"]));
        }
    }
    if !problems.is_empty() {
        h.fail(&format!(
            "kubeadm init/join counts: {}",
            problems.join("; ")
        ));
    }
}

/// haproxy answers on every node's local port, in front of a live apiserver.
pub fn assert_local_lb(h: &mut ClusterHarness) {
    let port = h.cluster.local_lb.port;
    let cmd = format!(
        "kubectl --kubeconfig /etc/kubernetes/kubelet.conf --server https://127.0.0.1:{port} \
         --request-timeout=20s get --raw /livez"
    );
    let mut problems = Vec::new();
    for i in 0..h.nodes.len() {
        let n = &mut h.nodes[i];
        if n.role == Role::Etcd {
            continue;
        }
        match n.guest_sh(&cmd) {
            Ok((0, out)) if out.trim() == "ok" => {}
            Ok((code, out)) => problems.push(format!("{}: exit {code}: {out}", n.name)),
            Err(e) => problems.push(format!("{}: {e}", n.name)),
        }
    }
    if !problems.is_empty() {
        h.fail(&format!(
            "haproxy on 127.0.0.1:{port}: {}",
            problems.join("; ")
        ));
    }
}

/// A Deployment on the worker answers through its ClusterIP Service when a
/// pod on the master asks it, and CoreDNS resolves
/// `kubernetes.default.svc.<domain>` for that pod (see fixtures/e2e/probe.yaml).
pub fn assert_service_path(h: &ClusterHarness) {
    let net = &h.cluster.networking;
    let domain = net.dns_domain.clone();
    let probe_ip = std::net::Ipv4Addr::from(u32::from(net.service_cidr.network()) + 53);
    let image = h.must(
        "reading the CoreDNS image",
        h.kubectl(&[
            "-n",
            "kube-system",
            "get",
            "deployment",
            "coredns",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ]),
    );
    let manifest = std::fs::read_to_string(fixture("probe.yaml"))
        .expect("reading fixtures/e2e/probe.yaml")
        .replace("@IMAGE@", image.trim())
        .replace("@DOMAIN@", &domain)
        .replace("@CLUSTER_DNS@", &net.cluster_dns_ip().to_string())
        .replace("@PROBE_IP@", &probe_ip.to_string());
    let file = h.work.path().join("probe.yaml");
    std::fs::write(&file, manifest).expect("writing the probe manifest");
    // Applied until everything is accepted: a new namespace's default
    // ServiceAccount comes from the controller-manager a moment later, and
    // until then the API refuses the bare probe-client Pod (apply is
    // idempotent, so the objects already created stay as they are).
    // `--validate=false`: kubectl's validation first downloads the API
    // server's whole OpenAPI document, which a master under TCG did not serve
    // within the 60 s each call gets (three calls in a row were killed); the
    // API server still validates every object it accepts.
    h.must(
        "applying the probe workload",
        wait_for(
            "the probe workload accepted",
            Duration::from_secs(600),
            POLL,
            || {
                h.kubectl(&[
                    "apply",
                    "--validate=false",
                    "-f",
                    file.to_str().unwrap_or_default(),
                ])
            },
        ),
    );
    let (client_ip, t) = h.must(
        "the probe pods becoming Ready",
        wait_for("probe pods Ready", Duration::from_secs(600), POLL, || {
            let v = h.kubectl_json(&["-n", "hakube-e2e", "get", "pods"])?;
            let mut client = None;
            let mut ready = 0;
            let mut seen = Vec::new();
            for p in v["items"].as_array().into_iter().flatten() {
                let name = p["metadata"]["name"].as_str().unwrap_or_default();
                let ok = condition(p, "Ready").is_some_and(|c| c["status"] == "True");
                seen.push(format!(
                    "{name} on {} {} {}",
                    p["spec"]["nodeName"],
                    p["status"]["phase"],
                    p["status"]["containerStatuses"][0]["state"]["waiting"]
                ));
                if ok {
                    ready += 1;
                    if name == "probe-client" {
                        client = p["status"]["podIP"].as_str().map(str::to_string);
                    }
                }
            }
            match client {
                Some(ip) if ready == 2 => Ok(ip),
                _ => Err(seen.join("; ")),
            }
        }),
    );
    eprintln!("e2e {}: probe pods Ready in {} s", h.scenario, t.as_secs());
    let client_ip: std::net::Ipv4Addr = client_ip
        .parse()
        .unwrap_or_else(|e| h.fail(&format!("probe-client's podIP {client_ip}: {e}")));
    // The host side reaches the master's pods through the master (a route in
    // the test's namespace only).
    let master = h.cluster.init_node();
    let master_ip = master.address().map(|a| a.to_string()).unwrap_or_default();
    let node = h.must(
        "the master's pod CIDR",
        h.kubectl_json(&["get", "node", master.name.as_str()]),
    );
    let pod_cidr = node["spec"]["podCIDR"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let cidr: ipnet::Ipv4Net = pod_cidr
        .parse()
        .unwrap_or_else(|e| h.fail(&format!("{}'s podCIDR {pod_cidr:?}: {e}", master.name)));
    super::vm::run(std::process::Command::new("ip").args([
        "-n", &h.ns.name, "route", "replace", &pod_cidr, "via", &master_ip,
    ]));
    let client = std::net::SocketAddr::from((client_ip, 1053));
    // The new Service works once kube-proxy on the master has seen it and
    // rewritten its rules: on a master under TCG, with a load average over
    // 20, that took longer than 3 minutes (forms run 2).
    let (whoami, _) = h.must(
        "the probe Service answering the master's pod",
        wait_for("probe Service answers", SERVICE_LIMIT, POLL, || {
            let r = super::dns::query_in_netns(&h.ns.name, client, "whoami.hakube-e2e.example")?;
            r.additional
                .first()
                .map(|(_, ip)| *ip)
                .ok_or(format!("no address in the answer: {r:?}"))
        }),
    );
    assert!(
        cidr.contains(&whoami),
        "the worker's probe-server saw the query come from {whoami}, not from the master's pod network {cidr}"
    );
    eprintln!(
        "e2e {}: the Service {probe_ip} (pod on the worker) answered probe-client {client_ip} on the master, seen as {whoami}",
        h.scenario
    );
    let name = format!("kubernetes.default.svc.{domain}");
    let want = net.kubernetes_service_ip();
    let (got, _) = h.must(
        "CoreDNS resolving the kubernetes Service for the master's pod",
        wait_for(
            "kubernetes.default.svc resolves",
            SERVICE_LIMIT,
            POLL,
            || {
                let r = super::dns::query_in_netns(&h.ns.name, client, &name)?;
                r.answers
                    .first()
                    .map(|(_, ip)| *ip)
                    .ok_or(format!("no A record: {r:?}"))
            },
        ),
    );
    assert_eq!(got, want, "{name} through CoreDNS");
}

/// Boots the cluster and waits until it has formed: first boot complete on
/// every node, every node Ready. Returns power-on to Ready.
pub fn form(h: &mut ClusterHarness) -> Duration {
    form_with(h, Boot::AllAtOnce)
}

/// How the nodes are powered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// Every node at once (the "forms" scenario: nothing is waited for).
    AllAtOnce,
    /// One node at a time, the init node first and then the spec's order:
    /// each is powered on once the one before it has completed its first boot.
    OneAtATime,
}

pub fn form_with(h: &mut ClusterHarness, boot: Boot) -> Duration {
    let started = Instant::now();
    power_on(h, boot);
    h.wait_first_boot(FIRST_BOOT_LIMIT);
    formed(h, started)
}

/// Powers the nodes on as `boot` says (one at a time: each once the one
/// before it completed its first boot).
pub fn power_on(h: &mut ClusterHarness, boot: Boot) {
    match boot {
        Boot::AllAtOnce => h.boot_all(),
        Boot::OneAtATime => {
            let init = h.cluster.init_node().name.to_string();
            let mut order: Vec<String> = h.booted.iter().map(|n| n.name.to_string()).collect();
            // Stable: the init node first, the rest in the spec's order.
            order.sort_by_key(|n| *n != init);
            for (i, name) in order.iter().enumerate() {
                if i > 0 {
                    h.wait_first_boot(FIRST_BOOT_LIMIT);
                }
                h.boot_where(|n| n.name.as_str() == name);
            }
        }
    }
}

/// After power-on at `started`, once every first boot is complete: records
/// each node's first boot and waits for every node Ready; returns power-on
/// to Ready ("cluster formed").
pub fn formed(h: &mut ClusterHarness, started: Instant) -> Duration {
    for n in &h.nodes {
        if let Some(d) = n.first_boot {
            record(&h.scenario, &format!("first-boot-{}", n.name), d);
        }
    }
    let r = wait_for("every node Ready", SETTLE_LIMIT, POLL, || nodes_ready(h));
    h.must("nodes Ready", r);
    let formed = started.elapsed();
    eprintln!(
        "e2e {}: cluster formed in {} s",
        h.scenario,
        formed.as_secs()
    );
    record(&h.scenario, "cluster-formed", formed);
    formed
}
