//! `hakube-build summary`: the resolved cluster, without building anything
//! (like mkosi's `summary`). Text for people, `--json` for scripts; warnings
//! go to stderr either way so stdout stays parseable.

use crate::artifacts::catalog;
use crate::cli::SummaryArgs;
use crate::pki::dates::{self, CredentialDates};
use crate::spec::model::{Cluster, NodeNetwork};
use anyhow::{Context, Result};
use hakube_node_profile::{EndpointMode, EtcdTopology};
use std::io::Write;
use std::path::Path;

pub fn run(args: &SummaryArgs) -> Result<()> {
    let cluster = crate::spec::load(args.cluster.as_deref())?;
    for w in &cluster.warnings {
        eprintln!("warning: {}: {w}", cluster.source);
    }
    let state = args
        .state
        .clone()
        .unwrap_or_else(|| crate::pki::default_state_dir(&cluster));
    let dates = dates::read(&state, &cluster)
        .with_context(|| format!("reading credential dates from {}", state.display()))?;
    let (lock, cache) =
        crate::image::lock_and_cache(&cluster, args.lock.as_ref(), args.cache_dir.as_ref());
    let images = crate::images::planned(&cluster, &lock, &cache)?;
    let out = if args.json {
        let mut v = to_json(&cluster);
        v["credentials"] = credentials_json(&state, dates.as_ref());
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "containerImages".into(),
                match &images {
                    Ok(m) => serde_json::to_value(m)?,
                    Err(why) => serde_json::json!({ "unknown": why }),
                },
            );
        }
        let mut s =
            serde_json::to_string_pretty(&v).context("serialising the resolved cluster as JSON")?;
        s.push('\n');
        s
    } else {
        to_text(&cluster)
            + &credentials_text(&cluster, &state, dates.as_ref())
            + &images_text(&images)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
    {
        // A reader that stops early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the summary to stdout"),
    }
}

/// Expiry dates of the state directory's credentials, as JSON (`null`
/// dates: nothing issued yet).
pub fn credentials_json(state: &Path, d: Option<&CredentialDates>) -> serde_json::Value {
    let Some(d) = d else {
        return serde_json::json!({"state": state.display().to_string(), "exists": false});
    };
    let nodes: serde_json::Map<String, serde_json::Value> = d
        .nodes
        .iter()
        .map(|(n, t)| (n.clone(), t.map(rfc3339).into()))
        .collect();
    let cas: serde_json::Map<String, serde_json::Value> = d
        .cas
        .iter()
        .map(|(k, t)| (k.to_string(), rfc3339(*t).into()))
        .collect();
    serde_json::json!({
        "state": state.display().to_string(),
        "exists": true,
        "caNotAfter": cas,
        "nodeCertificatesNotAfter": nodes,
        "clusterInitialised": d.initialised,
    })
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// The credentials part of the text summary.
pub fn credentials_text(c: &Cluster, state: &Path, d: Option<&CredentialDates>) -> String {
    let mut out = format!("\nCredentials ({})\n", state.display());
    let Some(d) = d else {
        out.push_str("  none yet: the first build or render creates them\n");
        return out;
    };
    for (ca, t) in &d.cas {
        out.push_str(&format!("  {ca:<16} CA valid until {}\n", dates::day(*t)));
    }
    for (n, t) in &d.nodes {
        match t {
            Some(t) => out.push_str(&format!(
                "  {n:<16} baked certificates valid until {} (its image joins until then)\n",
                dates::day(*t)
            )),
            None => out.push_str(&format!("  {n:<16} not built yet\n")),
        }
    }
    out.push_str(&format!(
        "  join token       lifetime {} days from kubeadm init; every master renews it at boot once less than half is left\n",
        c.certificates.leaf_validity.days
    ));
    out.push_str(&match &d.initialised {
        Some(t) => format!("  cluster formed   recorded {t}: every image, the init node's too, only joins\n"),
        None => "  cluster formed   not recorded (after the cluster formed, build with --cluster-initialised)\n"
            .to_string(),
    });
    out
}

/// The resolved cluster as one JSON object: the serialised [`Cluster`] plus
/// facts derived from it (source, kubeadm API version, the version's end of
/// support, the companion versions with their sources, init node, etcd
/// members) and the warnings. Keys are sorted, so the output is stable.
pub fn to_json(c: &Cluster) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("source".into(), c.source.to_string().into());
        obj.insert(
            "kubeadmApiVersion".into(),
            c.kubernetes_version.kubeadm_api().into(),
        );
        obj.insert(
            "kubernetesSupportEnds".into(),
            c.kubernetes_version.support().end_of_support.into(),
        );
        obj.insert(
            "companions".into(),
            serde_json::to_value(catalog::companions_for(c.kubernetes_version))
                .unwrap_or(serde_json::Value::Null),
        );
        obj.insert("initNode".into(), c.init_node().name.as_str().into());
        obj.insert(
            "etcdMembers".into(),
            c.etcd_member_nodes()
                .map(|n| serde_json::Value::from(n.name.as_str()))
                .collect(),
        );
        obj.insert("warnings".into(), c.warnings.clone().into());
    }
    v
}

/// The container images per node, with their pinned digests.
fn images_text(
    images: &std::result::Result<
        std::collections::BTreeMap<String, Vec<crate::images::PlannedImage>>,
        String,
    >,
) -> String {
    let mut out = String::from("\nContainer images (inside each node's disk)\n");
    match images {
        Err(why) => out.push_str(&format!("  {why}\n")),
        Ok(m) => {
            for (node, list) in m {
                if list.is_empty() {
                    out.push_str(&format!("  {node}: none (runs no containers)\n"));
                    continue;
                }
                out.push_str(&format!("  {node}:\n"));
                for i in list {
                    let d = i.amd64_digest.as_deref().unwrap_or("not pinned yet");
                    out.push_str(&format!("    {:<56} {d}\n", i.image));
                }
            }
        }
    }
    out
}

/// Human-readable summary: settings, then one row per node.
pub fn to_text(c: &Cluster) -> String {
    let mut rows: Vec<(&str, String)> = Vec::new();
    rows.push(("Cluster", format!("{} (from {})", c.name, c.source)));
    rows.push((
        "Kubernetes",
        format!(
            "{} (supported until {}; kubeadm API {})",
            c.kubernetes_version,
            c.kubernetes_version.support().end_of_support,
            c.kubernetes_version.kubeadm_api()
        ),
    ));
    let members: Vec<&str> = c.etcd_member_nodes().map(|n| n.name.as_str()).collect();
    let topology = match c.etcd_topology {
        EtcdTopology::Stacked => "stacked on the masters",
        EtcdTopology::External => "external etcd nodes",
    };
    rows.push((
        "etcd",
        format!(
            "{topology}, {} member(s): {}",
            members.len(),
            members.join(", ")
        ),
    ));
    let e = &c.endpoint;
    let endpoint = match e.mode {
        EndpointMode::Vip => format!(
            "vip {} (keepalived holds {} on the masters; haproxy on *:{} balances to the apiservers on :6443)",
            e.host_port(),
            e.vip.map(|v| v.to_string()).unwrap_or_default(),
            e.port
        ),
        EndpointMode::Dns => format!(
            "dns {} (the name must resolve round-robin to the masters)",
            e.host_port()
        ),
        EndpointMode::External => format!("external load balancer {}", e.host_port()),
    };
    rows.push(("Endpoint", endpoint));
    rows.push((
        "Node-local API LB",
        if c.local_lb.enabled {
            format!(
                "on: haproxy on 127.0.0.1:{} on every node, balancing the masters' :6443",
                c.local_lb.port
            )
        } else {
            "off: kubelets and kube-proxy use the endpoint directly".to_string()
        },
    ));
    let n = &c.networking;
    rows.push(("Pod CIDR", format!("{} (a /24 per node)", n.pod_cidr)));
    rows.push((
        "Service CIDR",
        format!(
            "{} (kubernetes service {}, cluster DNS {})",
            n.service_cidr,
            n.kubernetes_service_ip(),
            n.cluster_dns_ip()
        ),
    ));
    rows.push(("DNS domain", n.dns_domain.clone()));
    rows.push(("CNI", c.cni.as_str().to_string()));
    rows.push((
        "Runtime",
        format!("{} ({})", c.runtime.as_str(), c.runtime.cri_socket()),
    ));
    let certs = &c.certificates;
    rows.push((
        "Certificates",
        format!(
            "{} keys; CAs valid {} days, leaves (and the join token) {} days",
            certs.key_algorithm.kubeadm_name(),
            certs.ca_validity.days,
            certs.leaf_validity.days
        ),
    ));
    rows.push((
        "Extra API SANs",
        if c.api_server_extra_sans.is_empty() {
            "none".to_string()
        } else {
            c.api_server_extra_sans
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    rows.push((
        "SSH keys",
        match c.ssh_authorized_keys.len() {
            0 => "none (nothing needs SSH)".to_string(),
            k => format!("{k} authorized key(s)"),
        },
    ));

    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in &rows {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    out.push('\n');
    out.push_str(&companion_table(c));
    out.push('\n');
    out.push_str(&node_table(c));
    out
}

/// One row per companion version: name, version, where it was read.
fn companion_table(c: &Cluster) -> String {
    let all = catalog::companions_for(c.kubernetes_version).all();
    let name_w = all.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let ver_w = all.iter().map(|(_, p)| p.version.len()).max().unwrap_or(0);
    let mut out = format!(
        "Versions pinned for Kubernetes 1.{}:\n",
        c.kubernetes_version.minor
    );
    for (name, pin) in all {
        out.push_str(&format!(
            "  {name:<name_w$}  {:<ver_w$}  {}\n",
            pin.version, pin.source
        ));
    }
    out
}

fn node_table(c: &Cluster) -> String {
    let init = c.init_node().name.clone();
    let header = [
        "NAME", "ROLE", "ADDRESS", "GATEWAY", "MAC", "TAINTS", "LABELS",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for node in &c.nodes {
        let (address, gateway) = match &node.network {
            NodeNetwork::Static {
                address, gateway, ..
            } => (
                address.to_string(),
                gateway.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
            ),
            NodeNetwork::Dhcp => ("dhcp".to_string(), "dhcp".to_string()),
        };
        let name = if node.name == init {
            format!("{} *", node.name)
        } else {
            node.name.to_string()
        };
        let taints = node
            .taints
            .iter()
            .map(|t| match &t.value {
                Some(v) => format!("{}={}:{}", t.key, v, t.effect),
                None => format!("{}:{}", t.key, t.effect),
            })
            .collect::<Vec<_>>();
        let labels = node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>();
        let or_dash = |v: Vec<String>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        table.push(vec![
            name,
            node.role.to_string(),
            address,
            gateway,
            node.mac.to_string(),
            or_dash(taints),
            or_dash(labels),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|col| table.iter().map(|r| r[col].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &table {
        let line = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str("* runs kubeadm init (the first master in the spec)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_every_node_and_marks_the_init_node() {
        let c = crate::spec::load(None).unwrap();
        let t = to_text(&c);
        assert!(t.contains("master-1 *"), "{t}");
        assert!(!t.contains("master-2 *"), "{t}");
        for name in ["master-2", "master-3", "worker-1"] {
            assert!(t.contains(name), "{t}");
        }
        assert!(t.contains("vip 192.168.122.10:8443"), "{t}");
        assert!(t.contains("kubeadm.k8s.io/v1beta4"), "{t}");
        assert!(
            t.contains("node-role.kubernetes.io/control-plane:NoSchedule"),
            "{t}"
        );
        assert!(t.contains("10.96.0.10"), "{t}");
        assert!(
            t.contains("1.37.2 (supported until 2027-10-28; kubeadm API kubeadm.k8s.io/v1beta4)"),
            "{t}"
        );
        let line = |name: &str| {
            t.lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("no {name} row in\n{t}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(line("etcd image")[2], "3.7.0-0", "{t}");
        assert_eq!(
            line("CoreDNS")[1..4],
            ["1.14.6", "kubeadm", "v1.37.2"],
            "{t}"
        );
        assert_eq!(line("containerd")[1], "2.3.7", "{t}");
        assert!(
            line("CRI-O")[2..].starts_with(&["not", "confirmed:"]),
            "{t}"
        );
    }

    #[test]
    fn json_adds_derived_facts() {
        let c = crate::spec::load(None).unwrap();
        let v = to_json(&c);
        assert_eq!(v["initNode"], "master-1");
        assert_eq!(v["kubeadmApiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(v["etcdMembers"].as_array().map(Vec::len), Some(3));
        assert_eq!(v["nodes"].as_array().map(Vec::len), Some(4));
        assert_eq!(v["endpoint"]["mode"], "vip");
        assert_eq!(v["warnings"].as_array().map(Vec::len), Some(0));
        assert_eq!(v["kubernetesVersion"], "1.37.2");
        assert_eq!(v["kubernetesSupportEnds"], "2027-10-28");
        let comp = &v["companions"];
        assert_eq!(comp["pause"]["version"], "3.10.2");
        assert_eq!(comp["etcdImage"]["version"], "3.7.0-0");
        assert_eq!(comp["runc"]["version"], "1.5.2");
        assert_eq!(comp["flannelCniPlugin"]["version"], "1.9.1-flannel3");
        assert_eq!(comp["calico"]["confirmed"], false);
        assert!(comp["coredns"]["source"]
            .as_str()
            .unwrap()
            .contains("kubeadm v1.37.2 constants.go"));
    }
}
