//! After kubeadm: point clients at the node-local load balancer, apply the
//! CNI, label and taint, keep the join token alive.

use super::Ctx;
use crate::journal::write_atomic;
use crate::system::{run_checked, Cmd};
use anyhow::{Context, Result};
use serde::Deserialize;

const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
const KUBE_PROXY_CM: &str = "var/lib/hakube/firstboot/kube-proxy-configmap.json";

fn kubectl(ctx: &Ctx) -> Cmd {
    Cmd::new("kubectl")
        .arg("--kubeconfig")
        .arg(ctx.path(ADMIN_CONF).to_string_lossy())
}

/// Replaces the `server:` of every cluster in a kubeconfig. Returns `None`
/// when nothing changes.
pub fn repoint_kubeconfig(text: &str, server: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("server:") {
            if rest.trim() != server {
                let indent = &line[..line.len() - trimmed.len()];
                out.push_str(&format!("{indent}server: {server}\n"));
                changed = true;
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    changed.then_some(out)
}

/// kubelet (all Kubernetes nodes) and kube-proxy (cluster-wide, from the
/// node that initialised) talk to the API through haproxy on 127.0.0.1.
pub fn local_lb_clients(ctx: &mut Ctx) -> Result<String> {
    let server = format!("https://127.0.0.1:{}", ctx.profile.local_lb.port);
    let mut did = Vec::new();
    let path = ctx.path(&ctx.profile.paths.kubelet_kubeconfig);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the kubelet kubeconfig {}", path.display()))?;
    if let Some(new) = repoint_kubeconfig(&text, &server) {
        write_atomic(&path, new.as_bytes())?;
        ctx.env.svc.restart("kubelet.service")?;
        did.push(format!("kubelet now uses {server}"));
    } else {
        did.push(format!("kubelet already uses {server}"));
    }
    if ctx.initialises() {
        let get = kubectl(ctx).args(["-n", "kube-system", "get", "configmap", "kube-proxy", "-o", "json"]);
        let out = run_checked(ctx.env.cmd, &get)?;
        let mut cm: serde_json::Value = serde_json::from_str(&out.stdout)
            .context("parsing the kube-proxy configmap from kubectl")?;
        let conf = cm["data"]["kubeconfig.conf"]
            .as_str()
            .context("the kube-proxy configmap has no data.kubeconfig.conf")?
            .to_string();
        if let Some(new) = repoint_kubeconfig(&conf, &server) {
            cm["data"]["kubeconfig.conf"] = serde_json::Value::from(new);
            let file = ctx.env.root.join(KUBE_PROXY_CM);
            let body = serde_json::to_string_pretty(&cm).context("serialising the configmap")?;
            write_atomic(&file, body.as_bytes())?;
            run_checked(
                ctx.env.cmd,
                &kubectl(ctx).args(["replace", "-f"]).arg(file.to_string_lossy()),
            )?;
            run_checked(
                ctx.env.cmd,
                &kubectl(ctx).args(["-n", "kube-system", "rollout", "restart", "daemonset", "kube-proxy"]),
            )?;
            did.push(format!("kube-proxy now uses {server}"));
        } else {
            did.push(format!("kube-proxy already uses {server}"));
        }
    }
    Ok(did.join(", "))
}

/// The CNI manifest (kubectl apply is idempotent).
pub fn cni(ctx: &mut Ctx) -> Result<String> {
    if !ctx.initialises() {
        return Ok("skipped: joined an existing cluster".into());
    }
    let Some(m) = ctx.profile.paths.cni_manifest.clone() else {
        return Ok("skipped: the profile names no CNI manifest".into());
    };
    let file = ctx.path(&m);
    run_checked(
        ctx.env.cmd,
        &kubectl(ctx).args(["apply", "-f"]).arg(file.to_string_lossy()),
    )
    .context("applying the CNI manifest")?;
    Ok(format!("applied {m}"))
}

/// Labels and taints of the profile, through the admin kubeconfig.
pub fn labels_taints(ctx: &mut Ctx) -> Result<String> {
    let p = ctx.profile;
    if p.labels.is_empty() && p.taints.is_empty() {
        return Ok("none in the profile".into());
    }
    let node = &p.node_name;
    if !p.labels.is_empty() {
        let cmd = kubectl(ctx)
            .args(["label", "node", node, "--overwrite"])
            .args(p.labels.iter().map(|(k, v)| format!("{k}={v}")));
        run_checked(ctx.env.cmd, &cmd)?;
    }
    for t in &p.taints {
        let spec = match &t.value {
            Some(v) => format!("{}={v}:{}", t.key, t.effect),
            None => format!("{}:{}", t.key, t.effect),
        };
        run_checked(
            ctx.env.cmd,
            &kubectl(ctx).args(["taint", "node", node, &spec, "--overwrite"]),
        )?;
    }
    Ok(format!("{} labels, {} taints", p.labels.len(), p.taints.len()))
}

/// `abcdef.0123456789abcdef`, as kubeadm and the API server accept.
pub fn valid_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    matches!(t.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

/// TTL of the first bootstrap token in the InitConfiguration, as render
/// wrote it (the spec's leaf validity).
pub fn token_ttl(init_yaml: &str) -> Option<String> {
    for doc in serde_yaml_ng::Deserializer::from_str(init_yaml) {
        let Ok(v) = serde_yaml_ng::Value::deserialize(doc) else {
            continue;
        };
        if v["kind"].as_str() == Some("InitConfiguration") {
            if let Some(ttl) = v["bootstrapTokens"][0]["ttl"].as_str() {
                return Some(ttl.to_string());
            }
        }
    }
    None
}



/// The cluster's join token exists (re-created with the same value if it
/// expired or was deleted, so nodes built long ago still join).
pub fn bootstrap_token(ctx: &mut Ctx) -> Result<String> {
    if !ctx.initialises() {
        return Ok("skipped: joined an existing cluster".into());
    }
    let Some(file) = ctx.profile.paths.bootstrap_token.clone() else {
        return Ok("skipped: the profile names no bootstrap token file".into());
    };
    let path = ctx.path(&file);
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the bootstrap token {}", path.display()))?;
    let token = token.trim();
    if !valid_token(token) {
        anyhow::bail!(
            "bootstrap token file {}: expected [a-z0-9]{{6}}.[a-z0-9]{{16}}",
            path.display()
        );
    }
    let id = &token[..6];
    let get = kubectl(ctx).args(["-n", "kube-system", "get", "secret", &format!("bootstrap-token-{id}")]);
    if ctx.env.cmd.run(&get)?.success() {
        return Ok(format!("token {id} present"));
    }
    let init = ctx.path(ctx.profile.paths.kubeadm_config.as_deref().unwrap_or_default());
    let ttl = std::fs::read_to_string(&init)
        .ok()
        .and_then(|t| token_ttl(&t))
        .unwrap_or_else(|| "24h0m0s".to_string());
    let create = Cmd::new("kubeadm")
        .args(["token", "create", token, "--ttl", &ttl, "--kubeconfig"])
        .arg(ctx.path(ADMIN_CONF).to_string_lossy());
    run_checked(ctx.env.cmd, &create)?;
    Ok(format!("token {id} re-created with ttl {ttl}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        for good in ["abcdef.0123456789abcdef", "a1b2c3.zzzzzzzzzzzzzzzz"] {
            assert!(valid_token(good), "{good}");
        }
        for bad in ["", "abcdef", "ABCDEF.0123456789abcdef", "abcde.0123456789abcdef", "abcdef.0123456789abcde!", "abcdef:0123456789abcdef"] {
            assert!(!valid_token(bad), "{bad}");
        }
    }

    #[test]
    fn kubeconfig_repointed() {
        let kc = "clusters:\n- cluster:\n    certificate-authority-data: X\n    server: https://10.0.0.10:8443\n  name: k\n";
        let out = repoint_kubeconfig(kc, "https://127.0.0.1:7443").unwrap();
        assert!(out.contains("    server: https://127.0.0.1:7443\n"));
        assert!(!out.contains("10.0.0.10"));
        assert_eq!(repoint_kubeconfig(&out, "https://127.0.0.1:7443"), None);
    }

    #[test]
    fn ttl_from_init_config() {
        let y = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: abcdef.0123456789abcdef\n  ttl: 8760h0m0s\n";
        assert_eq!(token_ttl(y).as_deref(), Some("8760h0m0s"));
        assert_eq!(token_ttl("kind: JoinConfiguration\n"), None);
    }
}
