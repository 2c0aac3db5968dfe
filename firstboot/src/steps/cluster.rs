//! After kubeadm: point clients at the node-local load balancer, apply the
//! CNI, label and taint, keep the join token alive.

use super::{log, Ctx};
use crate::journal::{write_atomic, write_atomic_mode};
use crate::system::{rfc3339, run_checked, Cmd};
use anyhow::{Context, Result};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;

const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
const KUBE_PROXY_CM: &str = "var/lib/hakube/firstboot/kube-proxy-configmap.json";

fn kubectl(ctx: &Ctx) -> Cmd {
    kubectl_with(&ctx.path(ADMIN_CONF))
}

/// kubectl with `kubeconfig`'s credentials.
pub(crate) fn kubectl_with(kubeconfig: &std::path::Path) -> Cmd {
    kubectl_bare()
        .arg("--kubeconfig")
        .arg(kubeconfig.to_string_lossy())
}

/// `kubectl` with nothing chosen yet (the caller names server and
/// credentials).
pub(crate) fn kubectl_bare() -> Cmd {
    let mut c = Cmd::new("kubectl");
    // Its discovery cache defaults to $HOME/.kube/cache, on the read-only root.
    c.env
        .push(("KUBECACHEDIR".into(), "/var/cache/kubectl".into()));
    c
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
        // It holds (or points at) the kubelet's client key: 0600, as kubeadm writes it.
        write_atomic_mode(&path, new.as_bytes(), 0o600)?;
        ctx.env.svc.restart("kubelet.service")?;
        did.push(format!("kubelet now uses {server}"));
    } else {
        did.push(format!("kubelet already uses {server}"));
    }
    if ctx.initialises() {
        let get = kubectl(ctx).args([
            "-n",
            "kube-system",
            "get",
            "configmap",
            "kube-proxy",
            "-o",
            "json",
        ]);
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
                &kubectl(ctx)
                    .args(["replace", "-f"])
                    .arg(file.to_string_lossy()),
            )?;
            run_checked(
                ctx.env.cmd,
                &kubectl(ctx).args([
                    "-n",
                    "kube-system",
                    "rollout",
                    "restart",
                    "daemonset",
                    "kube-proxy",
                ]),
            )?;
            did.push(format!("kube-proxy now uses {server}"));
        } else {
            did.push(format!("kube-proxy already uses {server}"));
        }
    }
    Ok(did.join(", "))
}

/// The CNI manifest, applied server-side: calico's carries CRDs too large
/// for the last-applied annotation of a client-side apply. Re-running is
/// safe (`--force-conflicts` takes back fields another manager changed).
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
        &kubectl(ctx)
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(file.to_string_lossy()),
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
    Ok(format!(
        "{} labels, {} taints",
        p.labels.len(),
        p.taints.len()
    ))
}

/// `abcdef.0123456789abcdef`, as kubeadm and the API server accept.
pub fn valid_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
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

/// A Go duration as kubeadm prints one (`8760h0m0s`, `24h`, `90m`).
pub fn parse_go_duration(s: &str) -> Option<time::Duration> {
    let mut total = 0i64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().ok()?;
        num.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
    }
    (num.is_empty() && total > 0).then(|| time::Duration::seconds(total))
}

/// The join token's lifetime: the profile's, else the init config's.
fn lifetime(ctx: &Ctx) -> time::Duration {
    let from_init = || {
        let init = ctx.path(ctx.profile.paths.kubeadm_config.as_deref()?);
        token_ttl(&std::fs::read_to_string(init).ok()?)
    };
    ctx.profile
        .bootstrap_token_ttl
        .clone()
        .or_else(from_init)
        .and_then(|t| parse_go_duration(&t))
        .unwrap_or(time::Duration::hours(24))
}

/// Go duration text of whole seconds (`8760h0m0s`), as kubeadm takes it.
fn go_duration(d: time::Duration) -> String {
    let s = d.whole_seconds().max(0);
    format!("{}h{}m{}s", s / 3600, s % 3600 / 60, s % 60)
}

/// Journal note: when the join token expires (RFC 3339), as last seen.
pub const TOKEN_EXPIRES: &str = "bootstrap-token.expires";

/// The cluster's join token exists and stays valid: checked on every boot of
/// every master. Re-created with the same value when it has gone, and its
/// expiration pushed to now + its lifetime once less than half of that is
/// left, so an image built long ago, or rebuilt today, still joins. The
/// baked leaf certificates bound how long a built image can join; the
/// builder tells that date and re-issues leaves that near it.
pub fn bootstrap_token(ctx: &mut Ctx) -> Result<String> {
    let Some(file) = ctx.profile.paths.bootstrap_token.clone() else {
        return Ok("skipped: the profile names no bootstrap token file".into());
    };
    let path = ctx.path(&file);
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the bootstrap token {}", path.display()))?;
    let token = token.trim().to_string();
    if !valid_token(&token) {
        anyhow::bail!(
            "bootstrap token file {}: expected [a-z0-9]{{6}}.[a-z0-9]{{16}}",
            path.display()
        );
    }
    let id = token[..6].to_string();
    let secret = format!("bootstrap-token-{id}");
    let ttl = lifetime(ctx);
    let get = kubectl(ctx).args([
        "-n",
        "kube-system",
        "get",
        "secret",
        &secret,
        "-o",
        "go-template={{with .data.expiration}}{{base64decode .}}{{end}}",
    ]);
    let runner = ctx.env.cmd;
    // Right after boot the API server may not answer yet.
    let found = ctx.wait_for(
        &format!("the API server to answer for secret {secret}"),
        Some(ctx.env.waits.local),
        || {
            let out = runner.run(&get).map_err(|e| format!("{e:#}"))?;
            if out.success() {
                Ok(Some(out.stdout.trim().to_string()))
            } else if out.combined().contains("NotFound") {
                Ok(None)
            } else {
                Err(out.combined())
            }
        },
    )?;
    let now = ctx.env.clock.now();
    let new_expiry = now + ttl;
    let outcome = match found {
        None => {
            let create = Cmd::new("kubeadm")
                .args(["token", "create"])
                .secret_arg(&token)
                .args(["--ttl", &go_duration(ttl), "--kubeconfig"])
                .arg(ctx.path(ADMIN_CONF).to_string_lossy());
            run_checked(ctx.env.cmd, &create)?;
            ctx.journal.set_note(TOKEN_EXPIRES, &rfc3339(new_expiry))?;
            format!(
                "token {id} re-created with ttl {}, expires {}",
                go_duration(ttl),
                rfc3339(new_expiry)
            )
        }
        Some(exp) if exp.is_empty() => format!("token {id} present, never expires"),
        Some(exp) => {
            let expires = time::OffsetDateTime::parse(&exp, &Rfc3339).with_context(|| {
                format!("secret {secret}: expiration {exp:?} is not an RFC 3339 time")
            })?;
            if expires - now >= ttl / 2_i32 {
                ctx.journal.set_note(TOKEN_EXPIRES, &rfc3339(expires))?;
                format!(
                    "token {id} valid until {}; renewed once less than {} days are left",
                    rfc3339(expires),
                    (ttl / 2_i32).whole_days()
                )
            } else {
                let patch = serde_json::json!({"stringData": {"expiration": rfc3339(new_expiry)}});
                run_checked(
                    ctx.env.cmd,
                    &kubectl(ctx)
                        .args([
                            "-n",
                            "kube-system",
                            "patch",
                            "secret",
                            &secret,
                            "--type",
                            "merge",
                            "-p",
                        ])
                        .arg(patch.to_string()),
                )
                .with_context(|| format!("renewing the join token {id}"))?;
                ctx.journal.set_note(TOKEN_EXPIRES, &rfc3339(new_expiry))?;
                format!(
                    "token {id} renewed: it expired or was to expire {}, now expires {}",
                    rfc3339(expires),
                    rfc3339(new_expiry)
                )
            }
        }
    };
    log(&outcome);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        for good in ["abcdef.0123456789abcdef", "a1b2c3.zzzzzzzzzzzzzzzz"] {
            assert!(valid_token(good), "{good}");
        }
        for bad in [
            "",
            "abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde!",
            "abcdef:0123456789abcdef",
        ] {
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
