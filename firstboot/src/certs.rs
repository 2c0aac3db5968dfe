//! The certificates a node holds and when each expires, for `status`: a
//! leaf nearing its end is seen long before the component using it stops.
//! Read from the files the components read (kubeconfigs' embedded or
//! referenced client certificates included), never from the journal.

use anyhow::{Context, Result};
use base64::Engine as _;
use serde::Serialize;
use std::path::Path;
use time::OffsetDateTime;

/// Where a node's certificates live: (name, path, is a CA). Absent files
/// are not this node's (each role holds its own subset).
const PEM_FILES: &[(&str, &str, bool)] = &[
    ("ca", "/etc/kubernetes/pki/ca.crt", true),
    ("ca", "/etc/hakube/pki/ca.crt", true),
    (
        "front-proxy-ca",
        "/etc/kubernetes/pki/front-proxy-ca.crt",
        true,
    ),
    ("etcd-ca", "/etc/kubernetes/pki/etcd/ca.crt", true),
    ("apiserver", "/etc/kubernetes/pki/apiserver.crt", false),
    (
        "apiserver-kubelet-client",
        "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
        false,
    ),
    (
        "apiserver-etcd-client",
        "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        false,
    ),
    (
        "front-proxy-client",
        "/etc/kubernetes/pki/front-proxy-client.crt",
        false,
    ),
    ("etcd-server", "/etc/kubernetes/pki/etcd/server.crt", false),
    ("etcd-peer", "/etc/kubernetes/pki/etcd/peer.crt", false),
    (
        "etcd-healthcheck-client",
        "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
        false,
    ),
    (
        "kubelet-client",
        "/var/lib/kubelet/pki/kubelet-client-current.pem",
        false,
    ),
];

/// Kubeconfigs whose client certificate is embedded (`client-certificate-data`).
const KUBECONFIGS: &[(&str, &str)] = &[
    ("admin.conf", "/etc/kubernetes/admin.conf"),
    ("super-admin.conf", "/etc/kubernetes/super-admin.conf"),
    (
        "controller-manager.conf",
        "/etc/kubernetes/controller-manager.conf",
    ),
    ("scheduler.conf", "/etc/kubernetes/scheduler.conf"),
];

/// The validity of the certificate `name` (one of [`PEM_FILES`] or
/// [`KUBECONFIGS`]) under `root`; `None` when the node has no such file.
fn validity_of(root: &Path, name: &str) -> Option<Result<(OffsetDateTime, OffsetDateTime)>> {
    if let Some((_, path, _)) = PEM_FILES
        .iter()
        .find(|(n, p, _)| *n == name && crate::steps::under(root, p).exists())
    {
        let file = crate::steps::under(root, path);
        return Some(
            std::fs::read(&file)
                .map_err(Into::into)
                .and_then(|b| validity(&b)),
        );
    }
    let (_, path) = KUBECONFIGS.iter().find(|(n, _)| *n == name)?;
    let file = crate::steps::under(root, path);
    file.exists().then(|| {
        std::fs::read_to_string(&file)
            .map_err(Into::into)
            .and_then(|t| kubeconfig_cert(root, &t))
            .and_then(|b| validity(&b))
    })
}

/// One certificate and its expiry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub name: String,
    pub path: String,
    pub ca: bool,
    /// RFC 3339; empty when it could not be read (`error` says why).
    pub not_after: String,
    /// Whole days left (negative: expired).
    pub days_left: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The validity (not before, not after) of the first certificate in `pem`.
pub fn validity(pem: &[u8]) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    let v = cert.validity();
    Ok((v.not_before.to_datetime(), v.not_after.to_datetime()))
}

/// The expiry of the first certificate in `pem`.
pub fn not_after(pem: &[u8]) -> Result<OffsetDateTime> {
    validity(pem).map(|(_, end)| end)
}

/// The client certificate of a kubeconfig: embedded, or the file it names.
fn kubeconfig_cert(root: &Path, text: &str) -> Result<Vec<u8>> {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).context("not YAML")?;
    let user = &v["users"][0]["user"];
    if let Some(data) = user["client-certificate-data"].as_str() {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("client-certificate-data is not base64");
    }
    let file = user["client-certificate"]
        .as_str()
        .context("no client certificate (data or file) in users[0]")?;
    std::fs::read(crate::steps::under(root, file)).with_context(|| format!("reading {file}"))
}

/// Every certificate this node holds under `root`, CAs first, with its
/// expiry relative to `now`.
pub fn held(root: &Path, now: OffsetDateTime) -> Vec<Held> {
    let mut out = Vec::new();
    let mut push = |name: &str, path: &str, ca: bool, read: Result<OffsetDateTime>| {
        out.push(match read {
            Ok(t) => Held {
                name: name.into(),
                path: path.into(),
                ca,
                not_after: crate::system::rfc3339(t),
                days_left: (t - now).whole_days(),
                error: None,
            },
            Err(e) => Held {
                name: name.into(),
                path: path.into(),
                ca,
                not_after: String::new(),
                days_left: 0,
                error: Some(format!("{e:#}")),
            },
        })
    };
    for (name, path, ca) in PEM_FILES {
        let file = crate::steps::under(root, path);
        if file.exists() {
            push(
                name,
                path,
                *ca,
                std::fs::read(&file)
                    .map_err(Into::into)
                    .and_then(|b| not_after(&b)),
            );
        }
    }
    for (name, path) in KUBECONFIGS {
        let file = crate::steps::under(root, path);
        if file.exists() {
            let read = std::fs::read_to_string(&file)
                .map_err(Into::into)
                .and_then(|t| kubeconfig_cert(root, &t))
                .and_then(|b| not_after(&b));
            push(name, path, false, read);
        }
    }
    out.sort_by_key(|h| !h.ca);
    out
}

/// `status`'s table of them.
pub fn to_text(certs: &[Held]) -> String {
    let mut s = format!(
        "{:<26} {:<22} {:>6}  {}\n",
        "CERTIFICATE", "EXPIRES", "DAYS", "FILE"
    );
    for c in certs {
        let name = if c.ca {
            format!("{} (CA)", c.name)
        } else {
            c.name.clone()
        };
        match &c.error {
            Some(e) => s.push_str(&format!(
                "{name:<26} {:<22} {:>6}  {}: {e}\n",
                "unreadable", "-", c.path
            )),
            None => s.push_str(&format!(
                "{name:<26} {:<22} {:>6}  {}\n",
                c.not_after, c.days_left, c.path
            )),
        }
    }
    s
}

/// The leaves `kubeadm certs renew` renews on a master (its names), each
/// with the static pods that read it and must restart to take the new one.
/// The kubelet's client certificate is not among them: the kubelet rotates
/// it itself (`rotateCertificates`).
const RENEWABLE: &[(&str, &[&str])] = &[
    ("etcd-server", &["etcd"]),
    ("etcd-peer", &["etcd"]),
    ("etcd-healthcheck-client", &[]),
    ("apiserver", &["kube-apiserver"]),
    ("apiserver-kubelet-client", &["kube-apiserver"]),
    ("apiserver-etcd-client", &["kube-apiserver"]),
    ("front-proxy-client", &["kube-apiserver"]),
    ("controller-manager.conf", &["kube-controller-manager"]),
    ("scheduler.conf", &["kube-scheduler"]),
    ("admin.conf", &[]),
    ("super-admin.conf", &[]),
];

/// The order static pods restart in: etcd first (the API server needs it),
/// then the API server, then its clients.
const RESTART_ORDER: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// A leaf is renewed once less than this share of its lifetime is left
/// (a third: 4 months of a year, 8 hours of a day), so a timer that runs
/// daily, or a node that was off for a while, still renews in time.
pub const RENEW_WHEN_LEFT: f64 = 1.0 / 3.0;

/// How long a restarted component may take to be healthy again.
const RESTART_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether a certificate valid `from`..`to` is due for renewal at `now`.
pub fn due(from: OffsetDateTime, to: OffsetDateTime, now: OffsetDateTime) -> bool {
    let life = (to - from).as_seconds_f64().max(1.0);
    (to - now).as_seconds_f64() < life * RENEW_WHEN_LEFT
}

/// `hakube-firstboot certs renew` (hakube-certs.timer, daily): on a master,
/// every leaf kubeadm manages that is due ([`due`]) is renewed with
/// `kubeadm certs renew` (which keeps each certificate's subject and SANs
/// and signs with the CA keys the master holds), then the static pods that
/// read them restart one at a time, each healthy before the next. Workers
/// hold no leaf but the kubelet's, which the kubelet rotates; etcd nodes
/// hold no CA key (their leaves are re-issued by a rebuild).
pub fn renew(env: &crate::steps::Env, p: &hakube_node_profile::NodeProfile) -> Result<String> {
    use hakube_node_profile::Role;
    match p.role {
        Role::Worker => {
            return Ok("nothing to renew on a worker: the kubelet rotates its own client certificate\n".into())
        }
        Role::Etcd => {
            return Ok("nothing renewed here: an etcd node holds no CA key; `hakube-build` re-issues its \
                       leaves within 30 days of their expiry, and the rebuilt image is installed as an OS update \
                       or a reimage\n"
                .into())
        }
        Role::Master => {}
    }
    if !env.path(&p.paths.kubelet_kubeconfig).exists() {
        return Ok(
            "nothing renewed: this master has not joined or formed its cluster yet\n".into(),
        );
    }
    let now = env.clock.now();
    let mut renewed = Vec::new();
    let mut restart: Vec<&str> = Vec::new();
    let mut next: Option<(OffsetDateTime, &str)> = None;
    for (name, components) in RENEWABLE {
        let Some(v) = validity_of(&env.root, name) else {
            continue;
        };
        let (from, to) = v.with_context(|| format!("reading the {name} certificate"))?;
        if !due(from, to, now) {
            let at = to - (to - from) * RENEW_WHEN_LEFT;
            if next.is_none_or(|(t, _)| at < t) {
                next = Some((at, name));
            }
            continue;
        }
        let cmd = crate::system::Cmd::new("kubeadm").args(["certs", "renew", name]);
        crate::system::run_checked(env.cmd, &cmd)
            .with_context(|| format!("renewing {name} (expires {})", crate::system::rfc3339(to)))?;
        crate::steps::log(&format!(
            "renewed {name} (it expired {})",
            crate::system::rfc3339(to)
        ));
        renewed.push(name.to_string());
        restart.extend(components.iter().copied());
    }
    for component in RESTART_ORDER.iter().filter(|c| restart.contains(c)) {
        restart_static_pod(env, p, component)?;
    }
    let next = match next {
        Some((t, name)) => format!("; next due: {name} from {}", crate::system::rfc3339(t)),
        None => String::new(),
    };
    Ok(if renewed.is_empty() {
        format!("no certificate due for renewal{next}\n")
    } else {
        format!(
            "renewed {}; restarted {}{next}\n",
            renewed.join(", "),
            if restart.is_empty() {
                "nothing".to_string()
            } else {
                RESTART_ORDER
                    .iter()
                    .filter(|c| restart.contains(c))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    })
}

/// Stops `component`'s running container (the kubelet starts it again from
/// its manifest, reading the renewed files) and waits until a new one runs
/// and, for etcd and the API server, answers healthy.
fn restart_static_pod(
    env: &crate::steps::Env,
    p: &hakube_node_profile::NodeProfile,
    component: &str,
) -> Result<()> {
    let crictl = || {
        crate::system::Cmd::new("crictl")
            .arg("--runtime-endpoint")
            .arg(p.runtime.cri_socket())
    };
    let running = || -> Result<Vec<String>> {
        let out = crate::system::run_checked(
            env.cmd,
            &crictl().args([
                "ps",
                "--state",
                "Running",
                "--name",
                &format!("^{component}$"),
                "-q",
            ]),
        )?;
        Ok(out.stdout.split_whitespace().map(str::to_string).collect())
    };
    let before = running()?;
    for id in &before {
        crate::system::run_checked(env.cmd, &crictl().args(["stop", id]))
            .with_context(|| format!("stopping {component} ({id})"))?;
    }
    let start = env.clock.now();
    loop {
        let now_running = running()?;
        let fresh = now_running.iter().any(|id| !before.contains(id));
        let healthy = fresh
            && match component {
                "etcd" => p
                    .own_etcd_member()
                    .is_none_or(|m| env.etcd.endpoint_healthy(&m.client_url)),
                "kube-apiserver" => {
                    crate::health::api_server_ready(env, p, crate::health::kubelet_kubectl(env, p))
                        .is_ok()
                }
                _ => true,
            };
        if healthy {
            crate::steps::log(&format!(
                "{component} restarted with the renewed certificates"
            ));
            return Ok(());
        }
        if (env.clock.now() - start).unsigned_abs() >= RESTART_LIMIT {
            anyhow::bail!(
                "{component} did not come back healthy within {}s of its restart after the renewal \
                 (`crictl ps -a --name {component}`, `crictl logs` say why)",
                RESTART_LIMIT.as_secs()
            );
        }
        env.clock.sleep(std::time::Duration::from_secs(5));
    }
}
