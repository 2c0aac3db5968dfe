//! Steps every node runs on its own: identity, container runtime, load
//! balancer and VIP.

use super::Ctx;
use crate::system::{run_checked, Cmd};
use anyhow::{Context, Result};
use hakube_node_profile::EndpointMode;

/// Hostname as in the profile (set it if the image left another), and the
/// profile's static address present on an interface.
pub fn identity(ctx: &mut Ctx) -> Result<String> {
    let want = ctx.profile.node_name.clone();
    let out = run_checked(ctx.env.cmd, &Cmd::new("hostname"))?;
    let mut did = Vec::new();
    if out.stdout.trim() != want {
        run_checked(
            ctx.env.cmd,
            &Cmd::new("hostnamectl").args(["set-hostname", &want]),
        )
        .with_context(|| format!("setting the hostname to {want}"))?;
        did.push(format!(
            "hostname set to {want} (was {:?})",
            out.stdout.trim()
        ));
    } else {
        did.push(format!("hostname {want}"));
    }
    if let Some(addr) = ctx.profile.address {
        let want = addr.to_string();
        let cmd = Cmd::new("ip").args(["-j", "-4", "addr", "show"]);
        // networkd may still be configuring the link right after
        // network-online; give it the local wait, then say what is there.
        ctx.wait_for(
            &format!("address {want} on an interface"),
            Some(ctx.env.waits.local),
            || {
                let out = ctx.env.cmd.run(&cmd).map_err(|e| format!("{e:#}"))?;
                let found = local_addresses(&out.stdout);
                if found.contains(&want) {
                    Ok(())
                } else {
                    Err(format!(
                        "interfaces have [{}]; the profile wants {want} (see /etc/systemd/network/10-hakube.network)",
                        found.join(", ")
                    ))
                }
            },
        )?;
        did.push(format!("address {want}"));
    }
    Ok(did.join(", "))
}

/// IPv4 addresses in `ip -j addr show` output.
pub fn local_addresses(json: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let Some(s) = a["local"].as_str() {
                out.push(s.to_string());
            }
        }
    }
    out
}

/// Starts the container runtime and waits for its CRI socket. Also checks
/// that the kubeadm configs name that socket: kubeadm refuses `--cri-socket`
/// together with `--config`, so the config is where it must be.
pub fn container_runtime(ctx: &mut Ctx) -> Result<String> {
    let rt = ctx.profile.runtime;
    let socket_uri = rt.cri_socket();
    let socket_path = socket_uri.trim_start_matches("unix://");
    let p = &ctx.profile.paths;
    for cfg in [&p.kubeadm_config, &p.kubeadm_join_config]
        .into_iter()
        .flatten()
    {
        let path = ctx.path(cfg);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading kubeadm config {}", path.display()))?;
        if !text.contains(socket_path) {
            anyhow::bail!(
                "kubeadm config {} does not name the {} socket {socket_uri} (nodeRegistration.criSocket); \
                 the image was rendered for another runtime: rebuild it",
                path.display(),
                rt.as_str()
            );
        }
    }
    // Queued, not waited for: under a slow first boot (TCG, a loaded host)
    // containerd's READY can come after its unit's start timeout; systemd then
    // restarts it, and the socket below is what kubeadm needs.
    ctx.env.svc.start_no_block(rt.unit())?;
    let sock = ctx.path(socket_path);
    ctx.wait_for(
        &format!("{} socket {}", rt.as_str(), sock.display()),
        Some(ctx.env.waits.local),
        || {
            if sock.exists() {
                Ok(())
            } else if !ctx.env.svc.is_active(rt.unit()) {
                Err(format!("{} is not active (yet)", rt.unit()))
            } else {
                Err("socket not there yet".to_string())
            }
        },
    )?;
    Ok(format!("{} up, socket {socket_uri}", rt.unit()))
}

/// haproxy: the node-local API load balancer on 127.0.0.1:<localLb.port>
/// and, on masters in vip mode, the endpoint listener behind the VIP.
pub fn load_balancer(ctx: &mut Ctx) -> Result<String> {
    ctx.env.svc.start("haproxy.service")?;
    let p = ctx.profile;
    let listen = if p.local_lb.enabled {
        format!("127.0.0.1:{}", p.local_lb.port)
    } else {
        format!("127.0.0.1:{}", p.endpoint.port)
    };
    ctx.wait_for(
        &format!("haproxy listening on {listen}"),
        Some(ctx.env.waits.local),
        || {
            if ctx.env.probe.tcp_open(&listen) {
                Ok(())
            } else {
                Err("connection refused".to_string())
            }
        },
    )?;
    Ok(format!("haproxy.service up, listening on {listen}"))
}

/// keepalived holds the VIP (vip mode, masters).
pub fn vip(ctx: &mut Ctx) -> Result<String> {
    debug_assert_eq!(ctx.profile.endpoint.mode, EndpointMode::Vip);
    ctx.env.svc.start("keepalived.service")?;
    let unit = "keepalived.service";
    ctx.wait_for(&format!("{unit} active"), Some(ctx.env.waits.local), || {
        if ctx.env.svc.is_active(unit) {
            Ok(())
        } else {
            Err("not active".to_string())
        }
    })?;
    Ok(format!(
        "keepalived.service up for VIP {}",
        ctx.profile.endpoint.host
    ))
}
