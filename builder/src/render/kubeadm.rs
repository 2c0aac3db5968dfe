//! kubeadm configuration: `init.yaml` (InitConfiguration, ClusterConfiguration,
//! KubeletConfiguration, KubeProxyConfiguration) for the init node and
//! `join.yaml` (JoinConfiguration) for every Kubernetes node.
//!
//! Reference: https://kubernetes.io/docs/reference/config-api/kubeadm-config.v1beta4/
//! (cmd/kubeadm/app/apis/kubeadm/v1beta4 of the release). v1beta4 is the
//! only API written: every supported minor reads it, and kubeadm 1.37 no
//! longer reads v1beta3. Its `extraArgs`/`kubeletExtraArgs` are lists of
//! `{name, value}`.
//!
//! `kubeadm join` ignores KubeletConfiguration/KubeProxyConfiguration
//! documents (joining nodes download them from the cluster's ConfigMaps), so
//! `join.yaml` holds only the JoinConfiguration.

use super::yaml;
use crate::spec::types::kubelet_may_set_label;
use crate::spec::{Cluster, Node};
use anyhow::{anyhow, Result};
use hakube_node_profile::{EtcdTopology, Role, Taint};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// Port every kube-apiserver binds on its node.
pub const APISERVER_PORT: u16 = 6443;
/// Where kubeadm (and hakube's PKI) keep certificates on a node.
pub const PKI_DIR: &str = "/etc/kubernetes/pki";
/// Flexvolume driver directory of the kubelet and the controller-manager.
/// Both default to /usr/libexec/kubernetes/kubelet-plugins/volume/exec, which
/// the read-only root lacks; kubeadm before 1.36 then gives the
/// controller-manager a DirectoryOrCreate hostPath there, which the kubelet
/// cannot create, so the pod never starts (kubernetes/kubeadm#2031, #3318;
/// `phases/controlplane/volumes.go` of kubeadm 1.35). /var is writable.
pub const VOLUME_PLUGIN_DIR: &str = "/var/lib/kubelet/volumeplugins";
/// Where kubeadm reads hakube's patches of the control-plane static pods
/// (v1beta4 `patches.directory` of InitConfiguration and JoinConfiguration).
pub const PATCHES_DIR: &str = "/etc/hakube/kubeadm/patches";

/// The cluster-wide join credential baked into configs. Taken from the state
/// directory's secrets in production; fixed values in golden tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinCredentials {
    /// Bootstrap token `abcdef.0123456789abcdef`.
    pub token: String,
    /// `sha256:<hex>` of the Kubernetes CA's SubjectPublicKeyInfo.
    pub ca_cert_hash: String,
    /// The state directory says the cluster was formed: the init node joins.
    pub cluster_initialised: bool,
}

/// A static address is required for masters (validated by the spec); this
/// turns a violation into an error instead of a panic.
fn master_address(node: &Node) -> Result<Ipv4Addr> {
    node.address().ok_or_else(|| {
        anyhow!(
            "node {} is a {} without a static address",
            node.name,
            node.role
        )
    })
}

/// Go duration text as kubeadm prints it (`8760h0m0s`).
fn hours(days: u32) -> String {
    format!("{}h0m0s", u64::from(days) * 24)
}

fn taints(node: &Node) -> Value {
    let list: Vec<Value> = node
        .taints
        .iter()
        .map(|t: &Taint| {
            let mut m = json!({"key": t.key, "effect": t.effect});
            if let Some(v) = &t.value {
                m["value"] = json!(v);
            }
            m
        })
        .collect();
    // Always a list: kubeadm reads a missing `taints` on a control-plane node
    // as "add the default control-plane taint"; `[]` means none.
    Value::Array(list)
}

/// Component flags as v1beta4 wants them: a list of `{name, value}`.
fn extra_args(args: &[(&str, String)]) -> Value {
    Value::Array(
        args.iter()
            .map(|(k, val)| json!({"name": k, "value": val}))
            .collect(),
    )
}

/// `nodeRegistration`, shared by init and join.
fn node_registration(cluster: &Cluster, node: &Node) -> Value {
    let mut reg = json!({
        "name": node.name.as_str(),
        "criSocket": cluster.runtime.cri_socket(),
        "taints": taints(node),
        "imagePullPolicy": "IfNotPresent",
    });
    let mut args = Vec::new();
    // Pin the kubelet to the spec's address: with several interfaces (or a
    // VIP on lan0) the kubelet's own guess can pick the wrong one.
    if let Some(ip) = node.address() {
        args.push(("node-ip", ip.to_string()));
    }
    // Labels the kubelet may set itself are set at registration; that is the
    // only way a worker (no admin credentials) gets its labels. The rest
    // (masters only, see spec validation) the labels-taints step applies.
    let own: Vec<String> = node
        .labels
        .iter()
        .filter(|(k, _)| kubelet_may_set_label(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !own.is_empty() {
        args.push(("node-labels", own.join(",")));
    }
    if !args.is_empty() {
        reg["kubeletExtraArgs"] = extra_args(&args);
    }
    reg
}

/// Lifetime of the join token: as long as the leaf certificates, so a node
/// whose image was built months ago still joins. Masters renew it before it
/// runs out (hakube-firstboot's bootstrap-token step).
pub fn token_ttl(cluster: &Cluster) -> String {
    hours(cluster.certificates.leaf_validity.days)
}

/// kubeadm's timeouts (v1beta4 `timeouts`, in InitConfiguration and
/// JoinConfiguration), longer than its defaults (4m, 4m, 1m, 2m, 5m, 5m): a
/// node forms the cluster on its own at first boot, on hardware nobody
/// chose for speed, and a kubeadm run that gives up leaves the node for a
/// human. The 1m API-call default is what failed first: under QEMU's TCG the
/// fresh API server took longer than that to answer kubeadm's first
/// ClusterRoleBinding POST. hakube-firstboot's own waits bound the whole.
fn timeouts() -> Value {
    json!({
        "controlPlaneComponentHealthCheck": "10m0s",
        "kubeletHealthCheck": "10m0s",
        "kubernetesAPICall": "5m0s",
        "etcdAPICall": "5m0s",
        "tlsBootstrap": "10m0s",
        "discovery": "10m0s",
    })
}

/// Leader election of the controller-manager and the scheduler, longer than
/// the defaults (lease 15 s, renew deadline 10 s, retry 2 s). Each exits
/// when it cannot renew its lease in time, and under load the API server can
/// take longer than that to answer: on a first boot under QEMU's TCG both
/// restarted six and four times in 17 minutes, and the controller-manager
/// never ran long enough to sign cluster-info for the join token, so the
/// worker's join failed. A lost lease costs a restart and a full re-list,
/// which loads the API server further. OpenShift runs its controller-manager
/// with a 137 s lease for the same reason. The cost: after a master dies,
/// another takes over these two after up to 60 s instead of 15 s (pods keep
/// running meanwhile; only new scheduling and reconciliation wait).
fn leader_election() -> Vec<(&'static str, String)> {
    vec![
        ("leader-elect-lease-duration", "60s".to_string()),
        ("leader-elect-renew-deadline", "40s".to_string()),
        ("leader-elect-retry-period", "5s".to_string()),
    ]
}

/// The static pods a master's kubeadm writes, by kubeadm's patch target
/// name (also the container's name): etcd only with stacked etcd.
fn control_plane_components(cluster: &Cluster) -> Vec<&'static str> {
    let mut v = vec![
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ];
    if cluster.etcd_topology == EtcdTopology::Stacked {
        v.push("etcd");
    }
    v
}

/// Stacked etcd's CPU request (kubeadm writes 100m); see [`static_pod_patches`].
pub const ETCD_CPU_REQUEST: &str = "500m";

/// Consecutive liveness failures (10 s apart) before the kubelet kills a
/// control-plane container; kubeadm writes 8.
pub const LIVENESS_FAILURES: u32 = 30;

/// How long the API server's /livez (and so its liveness probe) waits for
/// etcd's health check; the default is 2 s, and the probe's own timeout 15 s.
const ETCD_HEALTHCHECK_TIMEOUT: &str = "10s";

/// kubeadm patches (strategic merge, one file per component) that make the
/// control plane's liveness probes tolerant of a slow node: 5 minutes of
/// failed checks before a restart instead of 80 s. A restart never cures
/// slowness: a restarted API server re-lists everything, which loads etcd
/// further, and its /livez failed whenever etcd took over 2 s to answer its
/// health check (kubernetes/kubernetes#98557, #111290; the API server's
/// `etcd-healthcheck-timeout` is raised too). On a first boot under QEMU's
/// TCG the API server was killed six times in 20 minutes and the cluster
/// never settled. Readiness is left as kubeadm writes it, so haproxy still
/// takes a slow API server out of rotation within seconds; only the restart
/// waits. Startup probes need no patch: kubeadm sizes them from the
/// `controlPlaneComponentHealthCheck` timeout ([`timeouts`]).
///
/// Stacked etcd's patch also raises its CPU request from kubeadm's 100m to
/// [`ETCD_CPU_REQUEST`]: under cgroup v2 the request is the container's CPU
/// weight, and with 100m a saturated master gave etcd about a seventh of
/// what the pods got (the API server asks for 250m, the controller-manager
/// for 200m, and the kubelet and the runtime outside the pods weigh more
/// still). In the forms runs under TCG etcd then took up to 40 s to apply a
/// write, every lease renewal behind it timed out, and the
/// controller-manager and the scheduler lost their leases and restarted,
/// over and over.
pub fn static_pod_patches(cluster: &Cluster) -> Vec<(String, String)> {
    control_plane_components(cluster)
        .into_iter()
        .map(|name| {
            let mut container = json!({
                "name": name,
                "livenessProbe": {"failureThreshold": LIVENESS_FAILURES},
            });
            let mut why = "a liveness probe tolerant of a slow node";
            if name == "etcd" {
                container["resources"] = json!({"requests": {"cpu": ETCD_CPU_REQUEST}});
                why = "a liveness probe tolerant of a slow node and a CPU\n# request that keeps etcd from starving when the node is saturated";
            }
            let patch = json!({"spec": {"containers": [container]}});
            let text = format!(
                "# kubeadm patch (strategic merge) of the {name} static pod, written by\n\
                 # hakube-build render: {why}.\n{}",
                yaml::to_yaml(&patch)
            );
            (format!("{name}+strategic.yaml"), text)
        })
        .collect()
}

/// kubeadm's phase that deploys kube-proxy. With the node-local load
/// balancer, `kubeadm init` skips it and hakube-firstboot runs it on its own
/// with [`kube_proxy_addon_config`], so kube-proxy talks to the API through
/// 127.0.0.1 from its first start: pointing it there afterwards meant a
/// rollout restart of kube-proxy while the new control plane was busiest,
/// and a CNI starting meanwhile could not reach the API through the
/// `kubernetes` Service (flannel exited on it and went into back-off).
pub const KUBE_PROXY_PHASE: &str = "addon/kube-proxy";

fn init_configuration(cluster: &Cluster, node: &Node, creds: &JoinCredentials) -> Result<Value> {
    let mut doc = local_init_configuration(cluster, node)?;
    doc["bootstrapTokens"] = json!([{
        "token": creds.token,
        "description": format!("hakube join token of cluster {}", cluster.name),
        "ttl": token_ttl(cluster),
        "usages": ["signing", "authentication"],
        "groups": ["system:bootstrappers:kubeadm:default-node-token"],
    }]);
    if cluster.local_lb.enabled {
        doc["skipPhases"] = json!([KUBE_PROXY_PHASE]);
    }
    Ok(doc)
}

/// The InitConfiguration without the join token: this node's registration,
/// API endpoint, patches and timeouts.
fn local_init_configuration(cluster: &Cluster, node: &Node) -> Result<Value> {
    let ip = master_address(node)?;
    Ok(json!({
        "apiVersion": cluster.kubernetes_version.kubeadm_api(),
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": ip.to_string(), "bindPort": APISERVER_PORT},
        "nodeRegistration": node_registration(cluster, node),
        "patches": {"directory": PATCHES_DIR},
        "timeouts": timeouts(),
    }))
}

fn cluster_configuration(cluster: &Cluster) -> Value {
    let v = &cluster.kubernetes_version;
    let mut sans = vec![cluster.endpoint.host.clone(), "127.0.0.1".to_string()];
    for san in &cluster.api_server_extra_sans {
        let s = san.to_string();
        if !sans.contains(&s) {
            sans.push(s);
        }
    }
    let etcd = match cluster.etcd_topology {
        // kubeadm's defaults already put the node name, its address,
        // localhost, 127.0.0.1 and ::1 into the etcd server/peer certificates;
        // per-master SANs cannot go into this cluster-wide document.
        EtcdTopology::Stacked => json!({"local": {"dataDir": "/var/lib/etcd"}}),
        EtcdTopology::External => {
            let endpoints: Vec<String> = cluster
                .etcd_member_nodes()
                .filter_map(|n| n.address())
                .map(|ip| format!("https://{ip}:2379"))
                .collect();
            json!({"external": {
                "endpoints": endpoints,
                "caFile": format!("{PKI_DIR}/etcd/ca.crt"),
                "certFile": format!("{PKI_DIR}/apiserver-etcd-client.crt"),
                "keyFile": format!("{PKI_DIR}/apiserver-etcd-client.key"),
            }})
        }
    };
    let mut doc = json!({
        "apiVersion": v.kubeadm_api(),
        "kind": "ClusterConfiguration",
        "kubernetesVersion": v.tag(),
        "clusterName": cluster.name.as_str(),
        "controlPlaneEndpoint": cluster.endpoint.host_port(),
        "certificatesDir": PKI_DIR,
        "imageRepository": "registry.k8s.io",
        "networking": {
            "podSubnet": cluster.networking.pod_cidr.to_string(),
            "serviceSubnet": cluster.networking.service_cidr.to_string(),
            "dnsDomain": cluster.networking.dns_domain,
        },
        "apiServer": {
            "certSANs": sans,
            "extraArgs": extra_args(&[(
                "etcd-healthcheck-timeout",
                ETCD_HEALTHCHECK_TIMEOUT.to_string(),
            )]),
        },
        "controllerManager": {"extraArgs": extra_args(&[
            vec![("flex-volume-plugin-dir", VOLUME_PLUGIN_DIR.to_string())],
            leader_election(),
        ].concat())},
        "scheduler": {"extraArgs": extra_args(&leader_election())},
        "etcd": etcd,
    });
    let certs = &cluster.certificates;
    doc["encryptionAlgorithm"] = json!(certs.key_algorithm.kubeadm_name());
    // What `kubeadm certs renew` uses later; match the spec's validity.
    doc["certificateValidityPeriod"] = json!(hours(certs.leaf_validity.days));
    doc["caCertificateValidityPeriod"] = json!(hours(certs.ca_validity.days));
    doc
}

/// KubeletConfiguration v1beta1 (k8s.io/kubelet config/v1beta1 of the
/// release). The nodes run cgroup v2 only: `failCgroupV1` (default true since
/// 1.35, KEP-5573) is written out so a node booted on cgroup v1 fails loudly
/// rather than by a default changing, and kubeadm's preflight
/// (system-validators' CgroupsValidator) refuses cgroup v1 the same way.
/// The systemd driver matches containerd's `SystemdCgroup` and CRI-O's
/// `cgroup_manager`.
///
/// Graceful node shutdown: on any shutdown or reboot hakube does not drain
/// itself (a user's `systemctl reboot`, a power button, the host stopping
/// the VM with an ACPI shutdown) the kubelet holds a logind inhibitor and
/// terminates pods in two rounds, regular pods first, then critical ones
/// (CoreDNS, kube-proxy, the CNI, the static control plane), so their
/// preStop hooks and endpoints removal happen before the node goes. The
/// kubelet raises logind's InhibitDelayMaxSec itself (a drop-in under
/// /etc/systemd/logind.conf.d, which the node's writable /etc takes).
fn kubelet_configuration(cluster: &Cluster) -> Value {
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "systemd",
        "failCgroupV1": true,
        "clusterDNS": [cluster.networking.cluster_dns_ip().to_string()],
        "clusterDomain": cluster.networking.dns_domain,
        "rotateCertificates": true,
        "shutdownGracePeriod": "60s",
        "shutdownGracePeriodCriticalPods": "20s",
        "failSwapOn": true,
        "volumePluginDir": VOLUME_PLUGIN_DIR,
    })
}

fn kube_proxy_configuration(cluster: &Cluster) -> Value {
    json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": cluster.networking.pod_cidr.to_string(),
    })
}

/// `init.yaml` for the init node.
pub fn init_config(cluster: &Cluster, node: &Node, creds: &JoinCredentials) -> Result<String> {
    let docs = [
        init_configuration(cluster, node, creds)?,
        cluster_configuration(cluster),
        kubelet_configuration(cluster),
        kube_proxy_configuration(cluster),
    ];
    Ok(header(cluster, node, "kubeadm init") + &yaml::documents(&docs))
}

/// `kube-proxy.yaml` for the init node when the node-local load balancer is
/// on (`None` otherwise): what `kubeadm init phase addon kube-proxy` deploys
/// kube-proxy from. It is init.yaml with two differences: the
/// ClusterConfiguration's `controlPlaneEndpoint` is the local balancer
/// (kubeadm writes it into kube-proxy's kubeconfig, and every Kubernetes
/// node runs that balancer), and it carries no join token. kubeadm uploads
/// nothing from it: the cluster's stored configuration keeps the real
/// endpoint.
pub fn kube_proxy_addon_config(cluster: &Cluster, node: &Node) -> Result<Option<String>> {
    if !cluster.local_lb.enabled {
        return Ok(None);
    }
    let mut cluster_doc = cluster_configuration(cluster);
    cluster_doc["controlPlaneEndpoint"] = json!(format!("127.0.0.1:{}", cluster.local_lb.port));
    let docs = [
        local_init_configuration(cluster, node)?,
        cluster_doc,
        kube_proxy_configuration(cluster),
    ];
    Ok(Some(
        header(cluster, node, "kubeadm init phase addon kube-proxy") + &yaml::documents(&docs),
    ))
}

/// `join.yaml` for any Kubernetes node (masters join as control-plane nodes).
pub fn join_config(cluster: &Cluster, node: &Node, creds: &JoinCredentials) -> Result<String> {
    let mut doc = json!({
        "apiVersion": cluster.kubernetes_version.kubeadm_api(),
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": cluster.endpoint.host_port(),
                "token": creds.token,
                "caCertHashes": [creds.ca_cert_hash],
            },
            "tlsBootstrapToken": creds.token,
        },
        "nodeRegistration": node_registration(cluster, node),
        "timeouts": timeouts(),
    });
    if node.role == Role::Master {
        // No certificateKey: masters carry the shared CA and SA keys already.
        let ip = master_address(node)?;
        doc["controlPlane"] = json!({
            "localAPIEndpoint": {"advertiseAddress": ip.to_string(), "bindPort": APISERVER_PORT},
        });
        doc["patches"] = json!({"directory": PATCHES_DIR});
    }
    Ok(header(cluster, node, "kubeadm join") + &yaml::to_yaml(&doc))
}

fn header(cluster: &Cluster, node: &Node, verb: &str) -> String {
    format!(
        "# {verb} configuration for node {} of cluster {} (Kubernetes {}).\n\
         # Written by hakube-build render; used by hakube-firstboot.\n",
        node.name, cluster.name, cluster.kubernetes_version
    )
}
