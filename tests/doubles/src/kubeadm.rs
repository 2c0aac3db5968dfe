//! TEST DOUBLE of kubeadm: `init`, `join`, `reset`, `token`, `version`.

use crate::schema::{self, ClusterConfiguration, InitConfiguration, JoinConfiguration};
use crate::tools::{load_state, save_state};
use crate::{fail, write, Env, Outcome, BANNER};
use serde_yaml_ng::Value;

/// Flags kubeadm lets you combine with `--config`; anything else is
/// "can not mix '--config' with arguments [...]", as in the real tool.
const MIXABLE_WITH_CONFIG: &[&str] = &[
    "config",
    "ignore-preflight-errors",
    "skip-phases",
    "dry-run",
    "v",
    "upload-certs",
    "skip-token-print",
    "kubeconfig",
    "rootfs",
    "cert-dir",
];

const VALUE_FLAGS: &[&str] = &[
    "config",
    "ignore-preflight-errors",
    "skip-phases",
    "v",
    "cri-socket",
    "node-name",
    "certificate-key",
    "token",
    "discovery-token-ca-cert-hash",
    "apiserver-advertise-address",
    "apiserver-bind-port",
    "kubeconfig",
    "rootfs",
    "ttl",
    "description",
    "o",
    "output",
    "cert-dir",
];
const BOOL_FLAGS: &[&str] = &[
    "dry-run",
    "upload-certs",
    "skip-token-print",
    "control-plane",
    "discovery-token-unsafe-skip-ca-verification",
    "f",
    "force",
    "print-join-command",
];

#[derive(Debug, Default)]
struct Parsed {
    positional: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

impl Parsed {
    fn get(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }
}

fn parse(args: &[String]) -> Result<Parsed, (String, i32)> {
    let mut p = Parsed::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(stripped) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            p.positional.push(a.clone());
            continue;
        };
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (stripped.to_string(), None),
        };
        if VALUE_FLAGS.contains(&name.as_str()) {
            let v = match inline {
                Some(v) => v,
                None => match it.next() {
                    Some(v) => v.clone(),
                    None => return Err((format!("flag needs an argument: --{name}"), 1)),
                },
            };
            p.flags.push((name, Some(v)));
        } else if BOOL_FLAGS.contains(&name.as_str()) {
            p.flags.push((name, inline));
        } else {
            return Err((format!("unknown flag: --{name}"), 1));
        }
    }
    Ok(p)
}

pub fn run(args: &[String], env: &Env) -> Outcome {
    let p = parse(args)?;
    let sub: Vec<&str> = p.positional.iter().map(String::as_str).collect();
    match sub.as_slice() {
        ["version"] => match p.get("o").or(p.get("output")) {
            Some("short") => Ok(format!("{}\n", env.version)),
            None => Ok(format!(
                "kubeadm version: &version.Info{{GitVersion:\"{}\", Platform:\"linux/amd64\"}} # {BANNER}\n",
                env.version
            )),
            Some(o) => fail(format!("invalid output format: {o}")),
        },
        ["init"] => init(&p, env),
        ["init", "phase", phase @ ..] => init_phase(phase, &p, env),
        ["join"] | ["join", _] => join(&p, env),
        ["reset"] => reset(&p, env),
        ["token", "list"] => token_list(env),
        ["token", "create"] | ["token", "create", _] => token_create(&p, sub.get(2).copied(), env),
        _ => fail(format!("{BANNER}: kubeadm: unsupported command {sub:?}")),
    }
}

fn check_mixing(p: &Parsed) -> Result<(), (String, i32)> {
    if !p.has("config") {
        return Ok(());
    }
    let bad: Vec<&str> = p
        .flags
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !MIXABLE_WITH_CONFIG.contains(n))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        fail(format!("can not mix '--config' with arguments {bad:?}"))
    }
}

/// The documents of a kubeadm config file.
#[derive(Debug, Default)]
pub struct Config {
    pub api: String,
    pub init: Option<InitConfiguration>,
    pub cluster: Option<ClusterConfiguration>,
    pub join: Option<JoinConfiguration>,
    pub kubelet: Option<Value>,
    pub kube_proxy: Option<Value>,
}

/// Parses a multi-document kubeadm config strictly.
pub fn parse_config(text: &str) -> Result<Config, String> {
    let mut cfg = Config::default();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = <Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| format!("document {i}: {e}"))?;
        if value.is_null() {
            continue;
        }
        let api = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if api.is_empty() || kind.is_empty() {
            return Err(format!(
                "document {i}: Object 'apiVersion' and 'Kind' are missing"
            ));
        }
        let strict = |e: serde_yaml_ng::Error| format!("strict decoding error: {kind}: {e}");
        match (api.as_str(), kind.as_str()) {
            (schema::V1BETA3 | schema::V1BETA4, k) => {
                if !cfg.api.is_empty() && cfg.api != api.as_str() {
                    return Err(format!("mixed kubeadm API versions {} and {api}", cfg.api));
                }
                cfg.api = api.clone();
                match k {
                    "InitConfiguration" => {
                        cfg.init = Some(serde_yaml_ng::from_value(value).map_err(strict)?)
                    }
                    "ClusterConfiguration" => {
                        cfg.cluster = Some(serde_yaml_ng::from_value(value).map_err(strict)?)
                    }
                    "JoinConfiguration" => {
                        cfg.join = Some(serde_yaml_ng::from_value(value).map_err(strict)?)
                    }
                    // kubeadm init/join skip these with a warning (v1beta4 defines them).
                    "ResetConfiguration" | "UpgradeConfiguration" if api == schema::V1BETA4 => {
                        eprintln!("[config] WARNING: Ignored configuration document with GroupVersionKind {api}, Kind={k}");
                    }
                    other => {
                        return Err(format!(
                            "no kind \"{other}\" is registered for version \"{api}\""
                        ))
                    }
                }
            }
            (schema::KUBELET_API, "KubeletConfiguration") => {
                if let Some(d) = value.get("cgroupDriver").and_then(Value::as_str) {
                    if d != "systemd" && d != "cgroupfs" {
                        return Err(format!("KubeletConfiguration: invalid cgroupDriver {d:?}"));
                    }
                }
                cfg.kubelet = Some(value)
            }
            (schema::KUBEPROXY_API, "KubeProxyConfiguration") => cfg.kube_proxy = Some(value),
            (a, k) => {
                return Err(format!("no kind \"{k}\" is registered for version \"{a}\""));
            }
        }
    }
    schema::check_version_fields(
        &cfg.api,
        cfg.init.as_ref(),
        cfg.cluster.as_ref(),
        cfg.join.as_ref(),
    )?;
    Ok(cfg)
}

fn read_config(p: &Parsed, env: &Env) -> Result<Option<Config>, (String, i32)> {
    let Some(path) = p.get("config") else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(env.host(path))
        .map_err(|e| (format!("unable to read config from {path:?}: {e}"), 1))?;
    parse_config(&text)
        .map(Some)
        .map_err(|e| (format!("{path}: {e}"), 1))
}

/// Requires a PEM file of the given kind at `path` (tool-absolute).
fn need_pem(env: &Env, path: &str, what: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(env.host(path))
        .map_err(|e| format!("couldn't load {what} at {path}: {e}"))?;
    let marker = if what.contains("key") {
        "PRIVATE KEY-----"
    } else {
        "-----BEGIN CERTIFICATE-----"
    };
    if what == "public key" {
        if !text.contains("-----BEGIN PUBLIC KEY-----") {
            return Err(format!("{path} is not a PEM public key"));
        }
    } else if !text.contains(marker) {
        return Err(format!("{path} is not a PEM {what}"));
    }
    Ok(())
}

fn exists(env: &Env, path: &str) -> bool {
    env.host(path).exists()
}

/// What `kubeadm init` needs already in place (hakube bakes every certificate).
pub fn check_init_files(cfg: &Config, env: &Env) -> Result<(), String> {
    let cluster = cfg.cluster.clone().unwrap_or_default();
    let dir = cluster
        .certificates_dir
        .clone()
        .unwrap_or_else(|| "/etc/kubernetes/pki".to_string());
    let f = |n: &str| format!("{}/{n}", dir.trim_end_matches('/'));
    need_pem(env, &f("ca.crt"), "certificate")?;
    if !exists(env, &f("ca.key")) {
        // External CA mode: every certificate the CA key would sign must be there.
        for n in [
            "apiserver.crt",
            "apiserver-kubelet-client.crt",
            "front-proxy-client.crt",
        ] {
            need_pem(env, &f(n), "certificate")
                .map_err(|e| format!("external CA mode (no ca.key): {e}"))?;
        }
        for n in [
            "apiserver.key",
            "apiserver-kubelet-client.key",
            "front-proxy-client.key",
        ] {
            need_pem(env, &f(n), "private key")
                .map_err(|e| format!("external CA mode (no ca.key): {e}"))?;
        }
    } else {
        need_pem(env, &f("ca.key"), "private key")?;
    }
    need_pem(env, &f("front-proxy-ca.crt"), "certificate")?;
    if exists(env, &f("sa.key")) || exists(env, &f("sa.pub")) {
        need_pem(env, &f("sa.key"), "private key")?;
        need_pem(env, &f("sa.pub"), "public key")?;
    }
    match cluster.etcd.as_ref().and_then(|e| e.external.as_ref()) {
        Some(ext) => {
            if ext.endpoints.is_empty() {
                return Err("etcd.external.endpoints: Required value".into());
            }
            for e in &ext.endpoints {
                if !(e.starts_with("https://") || e.starts_with("http://")) {
                    return Err(format!("etcd.external.endpoints: Invalid value: {e:?}: URL scheme must be http or https"));
                }
            }
            let tls = [&ext.ca_file, &ext.cert_file, &ext.key_file];
            let any_https = ext.endpoints.iter().any(|e| e.starts_with("https://"));
            if any_https && tls.iter().any(|f| f.is_none()) {
                return Err(
                    "etcd.external: caFile, certFile and keyFile are required for https endpoints"
                        .into(),
                );
            }
            if let Some(p) = &ext.ca_file {
                need_pem(env, p, "certificate")
                    .map_err(|e| format!("etcd.external.caFile: {e}"))?;
            }
            if let Some(p) = &ext.cert_file {
                need_pem(env, p, "certificate")
                    .map_err(|e| format!("etcd.external.certFile: {e}"))?;
            }
            if let Some(p) = &ext.key_file {
                need_pem(env, p, "private key")
                    .map_err(|e| format!("etcd.external.keyFile: {e}"))?;
            }
        }
        None => need_pem(env, &f("etcd/ca.crt"), "certificate")?,
    }
    Ok(())
}

fn preflight_file(env: &Env, p: &Parsed, path: &str) -> Result<(), (String, i32)> {
    let id = format!("FileAvailable-{}", path.replace('/', "-"));
    let ignored = p
        .get("ignore-preflight-errors")
        .map(|v| {
            v.split(',')
                .any(|x| x.eq_ignore_ascii_case("all") || x.eq_ignore_ascii_case(&id))
        })
        .unwrap_or(false);
    if exists(env, path) && !ignored {
        return fail(format!(
            "[preflight] Some fatal errors occurred:\n\t[ERROR {id}]: {path} already exists"
        ));
    }
    Ok(())
}

fn kubeconfig(user: &str, server: &str) -> String {
    format!(
        "# {BANNER}: kubeconfig written by the kubeadm test double\napiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n    certificate-authority: /etc/kubernetes/pki/ca.crt\n    server: {server}\ncontexts:\n- name: {user}@kubernetes\n  context:\n    cluster: kubernetes\n    user: {user}\ncurrent-context: {user}@kubernetes\nusers:\n- name: {user}\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n"
    )
}

fn write_kubelet_files(env: &Env, cfg: &Config, node: &str) -> Result<(), (String, i32)> {
    let kubelet = match &cfg.kubelet {
        Some(v) => serde_yaml_ng::to_string(v).unwrap_or_default(),
        None => format!(
            "apiVersion: {}\nkind: KubeletConfiguration\ncgroupDriver: systemd\n",
            schema::KUBELET_API
        ),
    };
    write(
        env,
        "/var/lib/kubelet/config.yaml",
        &format!("# {BANNER}\n{kubelet}"),
    )?;
    write(
        env,
        "/var/lib/kubelet/kubeadm-flags.env",
        &format!("KUBELET_KUBEADM_ARGS=\"--hostname-override={node}\"\n"),
    )
}

fn write_control_plane(env: &Env, local_etcd: bool) -> Result<(), (String, i32)> {
    let mut parts = vec![
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ];
    if local_etcd {
        parts.push("etcd");
    }
    for c in parts {
        write(
            env,
            &format!("/etc/kubernetes/manifests/{c}.yaml"),
            &format!("# {BANNER}: placeholder static pod written by the kubeadm test double\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {c}\n  namespace: kube-system\n  labels:\n    hakube.io/test-double: \"true\"\n"),
        )?;
    }
    Ok(())
}

/// kubeadm's CA pin: `sha256:` + SHA-256 of the certificate's DER
/// SubjectPublicKeyInfo. `None` when the file is not a parseable certificate
/// (the double's own tests use placeholder PEMs).
pub fn ca_pin(pem_text: &str) -> Option<String> {
    use sha2::{Digest, Sha256};
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Some(format!("sha256:{}", hex::encode(Sha256::digest(spki))))
}

/// What a joining node learns from the cluster-info ConfigMap, checked as
/// kubeadm's token discovery does: the token must be one the cluster knows
/// (cluster-info carries a JWS signature per token id) and the CA there must
/// match one of the pins.
fn check_discovery(
    st: &serde_json::Value,
    bt: &schema::BootstrapTokenDiscovery,
    token: &str,
) -> Result<(), (String, i32)> {
    let id = token.split('.').next().unwrap_or("");
    if let Some(tokens) = st["tokens"].as_array() {
        let same_id = |t: &&serde_json::Value| {
            t["token"].as_str().and_then(|v| v.split('.').next()) == Some(id)
        };
        match tokens.iter().find(same_id) {
            None => return fail(format!("couldn't validate the identity of the API Server: could not find a JWS signature in the cluster-info ConfigMap for token ID \"{id}\"")),
            Some(t) if t["token"] != token => return fail("couldn't validate the identity of the API Server: failed to verify JWS signature of received cluster info object, can't trust this API Server"),
            Some(_) => {}
        }
    }
    if let Some(pin) = st["clusterInfo"]["caCertHash"].as_str() {
        if bt.unsafe_skip_ca_verification != Some(true)
            && !bt.ca_cert_hashes.iter().any(|h| h == pin)
        {
            return fail(format!("couldn't validate the identity of the API Server: cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{pin}\" are pinned"));
        }
    }
    Ok(())
}

fn node_name(reg: Option<&schema::NodeRegistration>) -> String {
    reg.and_then(|r| r.name.clone())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into())
}

fn init(p: &Parsed, env: &Env) -> Outcome {
    check_mixing(p)?;
    let cfg = read_config(p, env)?.unwrap_or_default();
    if cfg.join.is_some() {
        return fail("kubeadm init: the config holds a JoinConfiguration; InitConfiguration/ClusterConfiguration expected");
    }
    preflight_file(env, p, "/etc/kubernetes/manifests/kube-apiserver.yaml")?;
    check_init_files(&cfg, env).map_err(|e| (format!("error execution phase certs: {e}"), 1))?;
    let reg = cfg.init.as_ref().and_then(|i| i.node_registration.as_ref());
    let node = node_name(reg);
    let cluster = cfg.cluster.clone().unwrap_or_default();
    let endpoint = cluster
        .control_plane_endpoint
        .clone()
        .unwrap_or_else(|| "127.0.0.1:6443".into());
    let server = format!("https://{endpoint}");
    if p.has("dry-run") {
        return Ok(format!("[dry-run] {BANNER}: would initialise {node}\n"));
    }
    for (file, user) in [
        ("admin.conf", "kubernetes-admin"),
        ("super-admin.conf", "kubernetes-super-admin"),
        ("controller-manager.conf", "system:kube-controller-manager"),
        ("scheduler.conf", "system:kube-scheduler"),
        ("kubelet.conf", &format!("system:node:{node}")),
    ] {
        let path = format!("/etc/kubernetes/{file}");
        if !exists(env, &path) {
            write(env, &path, &kubeconfig(user, &server))?;
        }
    }
    let local_etcd = cluster
        .etcd
        .as_ref()
        .and_then(|e| e.external.as_ref())
        .is_none();
    write_control_plane(env, local_etcd)?;
    write_kubelet_files(env, &cfg, &node)?;
    if let Some(mut st) = load_state(env)? {
        st["etcd"] = if local_etcd { "local" } else { "external" }.into();
        let tokens: Vec<serde_json::Value> = cfg
            .init
            .as_ref()
            .map(|i| {
                i.bootstrap_tokens
                    .iter()
                    .map(|t| serde_json::json!({"token": t.token, "ttl": t.ttl}))
                    .collect()
            })
            .unwrap_or_default();
        st["tokens"] = tokens.into();
        let ca_dir = cluster
            .certificates_dir
            .clone()
            .unwrap_or_else(|| "/etc/kubernetes/pki".to_string());
        let ca = std::fs::read_to_string(env.host(&format!("{ca_dir}/ca.crt"))).unwrap_or_default();
        if let Some(pin) = ca_pin(&ca) {
            st["clusterInfo"] = serde_json::json!({"caCertHash": pin, "server": server});
        }
        crate::tools::add_node(&mut st, &node, true);
        crate::tools::add_kube_proxy(&mut st, &server);
        save_state(env, &st)?;
    }
    Ok(format!(
        "Your Kubernetes control-plane has initialized successfully! ({BANNER})\n"
    ))
}

/// `kubeadm init phase` commands (Kubernetes 1.31), as `phase/subphase`.
const INIT_PHASES: &[&str] = &[
    "preflight",
    "certs/all",
    "kubeconfig/all",
    "etcd/local",
    "control-plane/all",
    "kubelet-start",
    "upload-config/all",
    "upload-config/kubeadm",
    "upload-config/kubelet",
    "upload-certs",
    "mark-control-plane",
    "bootstrap-token",
    "kubelet-finalize/all",
    "kubelet-finalize/enable-client-cert-rotation",
    "kubelet-finalize/experimental-cert-rotation",
    "addon/all",
    "addon/coredns",
    "addon/kube-proxy",
    "show-join-command",
];

/// The phases that finish an init against a running control plane; the
/// double checks the config and what each phase needs, and records the
/// API objects they create.
fn init_phase(phase: &[&str], p: &Parsed, env: &Env) -> Outcome {
    let name = phase.join("/");
    if !INIT_PHASES.contains(&name.as_str()) {
        return fail(format!(
            "{BANNER}: kubeadm init phase: unknown or unsupported phase {name:?}"
        ));
    }
    check_mixing(p)?;
    let cfg = read_config(p, env)?.unwrap_or_default();
    if cfg.join.is_some() {
        return fail("kubeadm init phase: the config holds a JoinConfiguration; InitConfiguration/ClusterConfiguration expected");
    }
    let needs_api = [
        "upload-config",
        "mark-control-plane",
        "bootstrap-token",
        "addon",
    ];
    let mut st = if needs_api.contains(&phase[0]) {
        if !exists(env, "/etc/kubernetes/admin.conf") {
            return fail(format!(
                "error execution phase {name}: couldn't load /etc/kubernetes/admin.conf"
            ));
        }
        Some(load_state(env)?.ok_or((format!("error execution phase {name}: dial tcp 127.0.0.1:6443: connect: connection refused"), 1))?)
    } else {
        None
    };
    match phase[0] {
        "kubelet-finalize" if !exists(env, "/etc/kubernetes/kubelet.conf") => {
            return fail(format!(
                "error execution phase {name}: /etc/kubernetes/kubelet.conf: no such file or directory"
            ))
        }
        "addon" if name != "addon/coredns" => {
            let endpoint = cfg
                .cluster
                .as_ref()
                .and_then(|c| c.control_plane_endpoint.clone())
                .unwrap_or_else(|| "127.0.0.1:6443".into());
            if let Some(st) = st.as_mut() {
                crate::tools::add_kube_proxy(st, &format!("https://{endpoint}"));
            }
        }
        "bootstrap-token" => {
            if let Some(st) = st.as_mut() {
                let mut tokens = st["tokens"].as_array().cloned().unwrap_or_default();
                for t in cfg.init.iter().flat_map(|i| &i.bootstrap_tokens) {
                    if !tokens.iter().any(|x| x["token"] == t.token.as_str()) {
                        tokens.push(serde_json::json!({"token": t.token, "ttl": t.ttl}));
                    }
                }
                st["tokens"] = tokens.into();
            }
        }
        _ => {}
    }
    if let Some(st) = &st {
        save_state(env, st)?;
    }
    Ok(format!("[{name}] done ({BANNER})\n"))
}

fn join(p: &Parsed, env: &Env) -> Outcome {
    check_mixing(p)?;
    let cfg = match read_config(p, env)? {
        Some(c) => c,
        None => {
            // Flag form: kubeadm join HOST:PORT --token T --discovery-token-ca-cert-hash H
            if p.positional.len() != 2 {
                return fail("kubeadm join: an API server endpoint or --config is required");
            }
            let token = p
                .get("token")
                .ok_or(("kubeadm join: --token is required".to_string(), 1))?;
            schema::check_token(token).map_err(|e| (e, 1))?;
            if p.get("discovery-token-ca-cert-hash").is_none()
                && !p.has("discovery-token-unsafe-skip-ca-verification")
            {
                return fail("discovery.bootstrapToken: Invalid value: using token-based discovery without caCertHashes can be unsafe");
            }
            Config::default()
        }
    };
    if cfg.init.is_some() {
        return fail(
            "kubeadm join: the config holds an InitConfiguration; JoinConfiguration expected",
        );
    }
    let j = cfg.join.clone().unwrap_or_default();
    if let Some(bt) = &j.discovery.bootstrap_token {
        let token = bt
            .token
            .as_deref()
            .or(j.discovery.tls_bootstrap_token.as_deref())
            .unwrap_or("");
        schema::check_token(token)
            .map_err(|e| (format!("discovery.bootstrapToken.token: {e}"), 1))?;
        if bt.api_server_endpoint.as_deref().unwrap_or("").is_empty() {
            return fail("discovery.bootstrapToken.apiServerEndpoint: Required value");
        }
        if bt.ca_cert_hashes.is_empty() && bt.unsafe_skip_ca_verification != Some(true) {
            return fail("discovery.bootstrapToken.caCertHashes: Invalid value: using token-based discovery without caCertHashes can be unsafe. Set unsafeSkipCAVerification as true in your kubeadm config file or pass --discovery-token-unsafe-skip-ca-verification flag to continue");
        }
        for h in &bt.ca_cert_hashes {
            let ok = h
                .strip_prefix("sha256:")
                .is_some_and(|x| x.len() == 64 && x.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return fail(format!("discovery.bootstrapToken.caCertHashes: invalid hash {h:?}: sha256:<64 hex> expected"));
            }
        }
        if let Some(st) = load_state(env)? {
            check_discovery(&st, bt, token)?;
        }
    } else if let Some(file) = &j.discovery.file {
        if !exists(env, &file.kube_config_path) {
            return fail(format!(
                "couldn't load the discovery file {}",
                file.kube_config_path
            ));
        }
    } else if p.has("config") {
        return fail("discovery: Invalid value: bootstrapToken or file must be set");
    }
    preflight_file(env, p, "/etc/kubernetes/kubelet.conf")?;
    let control_plane = j.control_plane.is_some() || p.has("control-plane");
    if control_plane
        && j.control_plane
            .as_ref()
            .and_then(|c| c.certificate_key.as_ref())
            .is_none()
    {
        // Without a certificateKey nothing is downloaded: the shared certificates must be in place
        // (kubeadm's SharedCertificateExists: with stacked etcd also the etcd CA, whose key signs
        // this member's etcd server and peer certificates). The cluster's etcd mode comes from
        // the "API server" (kubeadm reads it from the kubeadm-config ConfigMap).
        let local_etcd = load_state(env)?
            .map(|s| s["etcd"] != "external")
            .unwrap_or(true);
        let mut shared = vec![
            ("ca.crt", "certificate"),
            ("ca.key", "private key"),
            ("sa.key", "private key"),
            ("sa.pub", "public key"),
            ("front-proxy-ca.crt", "certificate"),
            ("front-proxy-ca.key", "private key"),
        ];
        if local_etcd {
            shared.extend([
                ("etcd/ca.crt", "certificate"),
                ("etcd/ca.key", "private key"),
            ]);
        }
        for (n, what) in shared {
            need_pem(env, &format!("/etc/kubernetes/pki/{n}"), what).map_err(|e| {
                (
                    format!("error execution phase control-plane-prepare/certs: {e}"),
                    1,
                )
            })?;
        }
    }
    let node = node_name(j.node_registration.as_ref());
    if p.has("dry-run") {
        return Ok(format!("[dry-run] {BANNER}: would join {node}\n"));
    }
    let server = j
        .discovery
        .bootstrap_token
        .as_ref()
        .and_then(|b| b.api_server_endpoint.clone())
        .or_else(|| p.positional.get(1).cloned())
        .unwrap_or_default();
    write(
        env,
        "/etc/kubernetes/kubelet.conf",
        &kubeconfig(&format!("system:node:{node}"), &format!("https://{server}")),
    )?;
    let mut st = load_state(env)?;
    if control_plane {
        let local_etcd = st.as_ref().map(|s| s["etcd"] != "external").unwrap_or(true);
        write_control_plane(env, local_etcd)?;
        write(
            env,
            "/etc/kubernetes/admin.conf",
            &kubeconfig("kubernetes-admin", &format!("https://{server}")),
        )?;
    }
    write_kubelet_files(env, &cfg, &node)?;
    if let Some(s) = st.as_mut() {
        crate::tools::add_node(s, &node, control_plane);
        save_state(env, s)?;
    }
    Ok(format!("This node has joined the cluster ({BANNER})\n"))
}

fn reset(p: &Parsed, env: &Env) -> Outcome {
    if !(p.has("f") || p.has("force")) {
        return fail("kubeadm reset: refusing to prompt for confirmation in a test; pass -f");
    }
    for f in [
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/super-admin.conf",
        "/etc/kubernetes/kubelet.conf",
        "/etc/kubernetes/controller-manager.conf",
        "/etc/kubernetes/scheduler.conf",
        "/var/lib/kubelet/config.yaml",
        "/var/lib/kubelet/kubeadm-flags.env",
    ] {
        let _ = std::fs::remove_file(env.host(f));
    }
    let _ = std::fs::remove_dir_all(env.host("/etc/kubernetes/manifests"));
    Ok(format!("[reset] {BANNER}: node reset\n"))
}

fn token_list(env: &Env) -> Outcome {
    let Some(st) = load_state(env)? else {
        return fail("failed to list bootstrap tokens: Get \"https://127.0.0.1:6443/api/v1/namespaces/kube-system/secrets\": dial tcp 127.0.0.1:6443: connect: connection refused");
    };
    let mut out = String::from("TOKEN                     TTL         EXPIRES   USAGES                   DESCRIPTION   EXTRA GROUPS\n");
    for t in st["tokens"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "{}   {}   <none>    authentication,signing   <none>        system:bootstrappers:kubeadm:default-node-token\n",
            t["token"].as_str().unwrap_or(""),
            t["ttl"].as_str().unwrap_or("24h")
        ));
    }
    Ok(out)
}

fn token_create(p: &Parsed, token: Option<&str>, env: &Env) -> Outcome {
    let Some(mut st) = load_state(env)? else {
        return fail("failed to create bootstrap token: dial tcp 127.0.0.1:6443: connect: connection refused");
    };
    let token = token.unwrap_or("abcdef.0123456789abcdef");
    schema::check_token(token).map_err(|e| (e, 1))?;
    let mut tokens = st["tokens"].as_array().cloned().unwrap_or_default();
    if tokens.iter().any(|t| t["token"] == token) {
        return fail(format!("failed to create bootstrap token with name \"bootstrap-token-{}\": secrets already exists", &token[..6]));
    }
    tokens.push(serde_json::json!({"token": token, "ttl": p.get("ttl").unwrap_or("24h")}));
    st["tokens"] = tokens.into();
    save_state(env, &st)?;
    Ok(format!("{token}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_init(extra_cluster: &str, kubelet_args: &str) -> String {
        format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: abcdef.0123456789abcdef\n  ttl: 8760h\nnodeRegistration:\n  name: master-1\n  criSocket: unix:///run/containerd/containerd.sock\n{kubelet_args}---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.31.4\ncontrolPlaneEndpoint: 192.168.122.10:8443\nencryptionAlgorithm: ECDSA-P256\n{extra_cluster}---\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n"
        )
    }

    #[test]
    fn accepts_a_well_formed_v1beta4_config() {
        let cfg = parse_config(&v4_init(
            "apiServer:\n  certSANs: [127.0.0.1]\n  extraArgs:\n  - name: authorization-mode\n    value: Node,RBAC\n",
            "  kubeletExtraArgs:\n  - name: node-ip\n    value: 192.168.122.11\n",
        ))
        .unwrap();
        assert_eq!(cfg.api, schema::V1BETA4);
        assert!(cfg.init.is_some() && cfg.cluster.is_some() && cfg.kubelet.is_some());
    }

    #[test]
    fn rejects_unknown_fields_at_top_level_and_nested() {
        let e = parse_config(&v4_init("controlPlaneEndpointt: x\n", "")).unwrap_err();
        assert!(
            e.contains("unknown field") && e.contains("controlPlaneEndpointt"),
            "{e}"
        );
        let e = parse_config(&v4_init("networking:\n  podCIDR: 10.244.0.0/16\n", "")).unwrap_err();
        assert!(e.contains("unknown field") && e.contains("podCIDR"), "{e}");
    }

    #[test]
    fn kubelet_extra_args_shape_depends_on_the_version() {
        let map_style = "  kubeletExtraArgs:\n    node-ip: 192.168.122.11\n";
        let e = parse_config(&v4_init("", map_style)).unwrap_err();
        assert!(
            e.contains("kubeletExtraArgs") && e.contains("v1beta4"),
            "{e}"
        );
        let v3 = v4_init("", map_style)
            .replace("v1beta4", "v1beta3")
            .replace("encryptionAlgorithm: ECDSA-P256\n", "");
        parse_config(&v3).unwrap();
        let list_in_v3 = v4_init("", "  kubeletExtraArgs:\n  - name: node-ip\n    value: x\n")
            .replace("v1beta4", "v1beta3")
            .replace("encryptionAlgorithm: ECDSA-P256\n", "");
        assert!(parse_config(&list_in_v3).unwrap_err().contains("v1beta3"));
    }

    #[test]
    fn version_specific_fields_and_kinds() {
        let v3 = v4_init("", "").replace("v1beta4", "v1beta3");
        assert!(parse_config(&v3)
            .unwrap_err()
            .contains("encryptionAlgorithm"));
        let e = parse_config(
            &v4_init("", "").replace("kubeadm.k8s.io/v1beta4", "kubeadm.k8s.io/v1beta2"),
        )
        .unwrap_err();
        assert!(e.contains("v1beta2"), "{e}");
        let e = parse_config("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ResetConfigurationX\n")
            .unwrap_err();
        assert!(e.contains("ResetConfigurationX"), "{e}");
        let bad_token =
            v4_init("", "").replace("abcdef.0123456789abcdef", "ABCDEF.0123456789abcdef");
        assert!(parse_config(&bad_token)
            .unwrap_err()
            .contains("bootstrap token"));
    }

    fn pem_cert() -> &'static str {
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    }
    fn pem_key() -> &'static str {
        concat!(
            "-----BEGIN EC PRIVATE",
            " KEY-----\nMHc\n-----END EC PRIVATE",
            " KEY-----\n"
        )
    }

    #[test]
    fn init_needs_the_baked_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env {
            root: dir.path().to_path_buf(),
            state: None,
            version: "v1.31.4".into(),
        };
        let cfg = parse_config(&v4_init("", "")).unwrap();
        let e = check_init_files(&cfg, &env).unwrap_err();
        assert!(e.contains("/etc/kubernetes/pki/ca.crt"), "{e}");
        let pki = dir.path().join("etc/kubernetes/pki");
        std::fs::create_dir_all(pki.join("etcd")).unwrap();
        std::fs::write(pki.join("ca.crt"), pem_cert()).unwrap();
        // No ca.key: external CA mode wants the signed leaves.
        let e = check_init_files(&cfg, &env).unwrap_err();
        assert!(
            e.contains("external CA") && e.contains("apiserver.crt"),
            "{e}"
        );
        std::fs::write(pki.join("ca.key"), pem_key()).unwrap();
        std::fs::write(pki.join("front-proxy-ca.crt"), pem_cert()).unwrap();
        let e = check_init_files(&cfg, &env).unwrap_err();
        assert!(e.contains("etcd/ca.crt"), "{e}");
        std::fs::write(pki.join("etcd/ca.crt"), pem_cert()).unwrap();
        check_init_files(&cfg, &env).unwrap();
        // A key that is not PEM is refused.
        std::fs::write(pki.join("ca.key"), "garbage").unwrap();
        assert!(check_init_files(&cfg, &env).unwrap_err().contains("ca.key"));
    }

    #[test]
    fn external_etcd_files_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env {
            root: dir.path().to_path_buf(),
            state: None,
            version: "v1.31.4".into(),
        };
        let pki = dir.path().join("etc/kubernetes/pki");
        std::fs::create_dir_all(pki.join("etcd")).unwrap();
        for c in [
            "ca.crt",
            "front-proxy-ca.crt",
            "etcd/ca.crt",
            "apiserver-etcd-client.crt",
        ] {
            std::fs::write(pki.join(c), pem_cert()).unwrap();
        }
        std::fs::write(pki.join("ca.key"), pem_key()).unwrap();
        let ext = "etcd:\n  external:\n    endpoints: [https://192.168.122.31:2379]\n    caFile: /etc/kubernetes/pki/etcd/ca.crt\n    certFile: /etc/kubernetes/pki/apiserver-etcd-client.crt\n    keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key\n";
        let cfg = parse_config(&v4_init(ext, "")).unwrap();
        let e = check_init_files(&cfg, &env).unwrap_err();
        assert!(
            e.contains("keyFile") && e.contains("apiserver-etcd-client.key"),
            "{e}"
        );
        std::fs::write(pki.join("apiserver-etcd-client.key"), pem_key()).unwrap();
        check_init_files(&cfg, &env).unwrap();
    }

    #[test]
    fn init_phases_are_known_and_need_the_control_plane() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env {
            root: dir.path().to_path_buf(),
            state: Some(dir.path().join("state.json")),
            version: "v1.31.4".into(),
        };
        std::fs::write(dir.path().join("init.yaml"), v4_init("", "")).unwrap();
        let cfg = dir.path().join("init.yaml").display().to_string();
        let call = |a: &[&str]| {
            let mut v: Vec<String> = ["init", "phase"].iter().map(|s| s.to_string()).collect();
            v.extend(a.iter().map(|s| s.to_string()));
            v.extend(["--config".to_string(), cfg.clone()]);
            run(&v, &env)
        };
        let e = call(&["upload-config", "everything"]).unwrap_err().0;
        assert!(e.contains("upload-config/everything"), "{e}");
        // Before init: no admin.conf, no kubelet.conf.
        assert!(call(&["mark-control-plane"])
            .unwrap_err()
            .0
            .contains("admin.conf"));
        assert!(call(&["kubelet-finalize", "all"])
            .unwrap_err()
            .0
            .contains("kubelet.conf"));
        let pki = dir.path().join("etc/kubernetes/pki");
        std::fs::create_dir_all(pki.join("etcd")).unwrap();
        for c in ["ca.crt", "front-proxy-ca.crt", "etcd/ca.crt"] {
            std::fs::write(pki.join(c), pem_cert()).unwrap();
        }
        std::fs::write(pki.join("ca.key"), pem_key()).unwrap();
        let init = vec!["init".to_string(), "--config".to_string(), cfg.clone()];
        run(&init, &env).unwrap();
        for ph in [
            &["upload-config", "all"][..],
            &["mark-control-plane"],
            &["bootstrap-token"],
            &["kubelet-finalize", "all"],
            &["addon", "all"],
        ] {
            call(ph).unwrap_or_else(|e| panic!("{ph:?}: {}", e.0));
        }
        let mut mixed: Vec<String> = ["init", "phase", "addon", "all", "--node-name", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        mixed.extend(["--config".to_string(), cfg.clone()]);
        assert!(run(&mixed, &env).unwrap_err().0.contains("can not mix"));
    }

    #[test]
    fn stacked_control_plane_join_needs_the_etcd_ca() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let env = Env {
            root: dir.path().to_path_buf(),
            state: Some(state.clone()),
            version: "v1.31.4".into(),
        };
        let join = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ncontrolPlane:\n  localAPIEndpoint:\n    advertiseAddress: 192.168.122.12\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: 192.168.122.10:8443\n    token: abcdef.0123456789abcdef\n    unsafeSkipCAVerification: true\n";
        std::fs::write(dir.path().join("join.yaml"), join).unwrap();
        let pki = dir.path().join("etc/kubernetes/pki");
        std::fs::create_dir_all(pki.join("etcd")).unwrap();
        for c in ["ca.crt", "front-proxy-ca.crt", "etcd/ca.crt"] {
            std::fs::write(pki.join(c), pem_cert()).unwrap();
        }
        for k in ["ca.key", "front-proxy-ca.key", "sa.key"] {
            std::fs::write(pki.join(k), pem_key()).unwrap();
        }
        std::fs::write(
            pki.join("sa.pub"),
            "-----BEGIN PUBLIC KEY-----\nMFk\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let args: Vec<String> = ["join", "--config"]
            .iter()
            .map(|s| s.to_string())
            .chain([dir.path().join("join.yaml").display().to_string()])
            .collect();
        for (etcd, ok) in [("local", false), ("external", true)] {
            std::fs::write(
                &state,
                format!(
                    r#"{{"etcd": "{etcd}", "tokens": [{{"token": "abcdef.0123456789abcdef"}}]}}"#
                ),
            )
            .unwrap();
            let r = run(&args, &env);
            assert_eq!(r.is_ok(), ok, "{etcd}: {r:?}");
            if let Err((e, _)) = r {
                assert!(e.contains("etcd/ca.key"), "{e}");
            }
        }
    }

    #[test]
    fn config_cannot_be_mixed_with_cri_socket() {
        let args: Vec<String> = [
            "init",
            "--config",
            "/x.yaml",
            "--cri-socket",
            "unix:///run/containerd/containerd.sock",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = parse(&args).unwrap();
        assert!(check_mixing(&p).unwrap_err().0.contains("cri-socket"));
        let ok: Vec<String> = [
            "init",
            "--config=/x.yaml",
            "--ignore-preflight-errors=all",
            "--skip-phases",
            "addon/kube-proxy",
            "-v",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        check_mixing(&parse(&ok).unwrap()).unwrap();
        assert!(parse(&["init".into(), "--bogus".into()]).is_err());
    }
}
