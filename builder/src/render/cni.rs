//! CNI manifests applied by the init master: flannel (a complete manifest
//! written here, pinned images) or calico (its upstream manifest install,
//! patched for the node by [`super::calico`]).

use super::{yaml, Upstream};
use crate::artifacts::catalog;
use crate::spec::model::Cni;
use crate::spec::Cluster;
use anyhow::{anyhow, Result};
use serde_json::{json, Value};

/// Tree path of the manifest for the cluster's CNI.
pub fn manifest_path(cni: Cni) -> String {
    format!("etc/hakube/cni/{}.yaml", cni.as_str())
}

pub fn manifest(cluster: &Cluster, upstream: &Upstream) -> Result<String> {
    match cluster.cni {
        Cni::Flannel => Ok(flannel(cluster)),
        Cni::Calico => {
            let file = upstream.calico.ok_or_else(|| {
                anyhow!(
                    "a calico cluster's masters are rendered from calico's manifest \
                     (artifact calico-manifest of the catalogue), which was not given"
                )
            })?;
            let version = catalog::companions_for(cluster.kubernetes_version)
                .calico
                .version;
            super::calico::manifest(cluster, version, file)
        }
    }
}

const NS: &str = "kube-flannel";

fn flannel(cluster: &Cluster) -> String {
    let images = catalog::flannel_images(cluster.kubernetes_version);
    let cni_conf = serde_json::to_string_pretty(&json!({
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    }))
    .expect("static JSON serialises")
        + "\n";
    let net_conf = serde_json::to_string_pretty(&json!({
        "Network": cluster.networking.pod_cidr.to_string(),
        "EnableNFTables": false,
        "Backend": {"Type": "vxlan"},
    }))
    .expect("static JSON serialises")
        + "\n";
    let labels = json!({"app": "flannel", "k8s-app": "flannel", "tier": "node"});
    let docs = [
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NS, "labels": {
                "k8s-app": "flannel",
                "pod-security.kubernetes.io/enforce": "privileged",
            }},
        }),
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "flannel", "namespace": NS, "labels": {"k8s-app": "flannel"}},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "flannel", "labels": {"k8s-app": "flannel"}},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "flannel", "labels": {"k8s-app": "flannel"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "flannel"},
            "subjects": [{"kind": "ServiceAccount", "name": "flannel", "namespace": NS}],
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-flannel-cfg", "namespace": NS, "labels": labels},
            "data": {"cni-conf.json": cni_conf, "net-conf.json": net_conf},
        }),
        flannel_daemonset(&labels, &images),
    ];
    format!(
        "# flannel v{} for cluster {} (pod network {}), written by hakube-build render.\n{}",
        images.flannel_version,
        cluster.name,
        cluster.networking.pod_cidr,
        yaml::documents(&docs)
    )
}

fn flannel_daemonset(labels: &Value, images: &catalog::FlannelImages) -> Value {
    let host_dir = |name: &str, path: &str| json!({"name": name, "hostPath": {"path": path}});
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-flannel-ds", "namespace": NS, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": "flannel"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                        ]}],
                    }}},
                    "hostNetwork": true,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                    "serviceAccountName": "flannel",
                    "initContainers": [
                        {
                            "name": "install-cni-plugin",
                            "image": images.cni_plugin,
                            "command": ["cp"],
                            "args": ["-f", "/flannel", "/opt/cni/bin/flannel"],
                            "volumeMounts": [{"name": "cni-plugin", "mountPath": "/opt/cni/bin"}],
                        },
                        {
                            "name": "install-cni",
                            "image": images.flannel,
                            "command": ["cp"],
                            "args": ["-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"],
                            "volumeMounts": [
                                {"name": "cni", "mountPath": "/etc/cni/net.d"},
                                {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"},
                            ],
                        },
                    ],
                    "containers": [{
                        "name": "kube-flannel",
                        "image": images.flannel,
                        "command": ["/opt/bin/flanneld"],
                        "args": ["--ip-masq", "--kube-subnet-mgr"],
                        "resources": {"requests": {"cpu": "100m", "memory": "50Mi"}},
                        "securityContext": {
                            "privileged": false,
                            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]},
                        },
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                            {"name": "EVENT_QUEUE_DEPTH", "value": "5000"},
                        ],
                        "volumeMounts": [
                            {"name": "run", "mountPath": "/run/flannel"},
                            {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"},
                            {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                        ],
                    }],
                    "volumes": [
                        host_dir("run", "/run/flannel"),
                        host_dir("cni-plugin", "/opt/cni/bin"),
                        host_dir("cni", "/etc/cni/net.d"),
                        {"name": "flannel-cfg", "configMap": {"name": "kube-flannel-cfg"}},
                        {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                    ],
                },
            },
        },
    })
}
