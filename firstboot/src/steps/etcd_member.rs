//! External etcd member: form the cluster, or join the running one as a
//! replacement (remove the stale member of the same name if quorum allows,
//! add as learner, start with initial-cluster-state existing, promote).
//! Never deletes keys.

use super::{log, Ctx};
use crate::etcd::{member_label, quorum, voting_health, Member};
use crate::etcd_config::{write_effective, Start, EFFECTIVE_PATH};
use anyhow::{Context, Result};
use hakube_node_profile::EtcdMember;

/// Type=notify: etcd notifies systemd only once it has quorum, which with
/// peers booting minutes later outlasts any start timeout. Started without
/// blocking; [`wait_member_healthy`] then waits as long as peers take.
pub const UNIT: &str = "etcd.service";

pub fn etcd_member(ctx: &mut Ctx) -> Result<String> {
    let me = ctx
        .profile
        .own_etcd_member()
        .with_context(|| {
            format!(
                "node profile: etcdMembers has no member named {}",
                ctx.profile.node_name
            )
        })?
        .clone();
    let template = ctx
        .profile
        .paths
        .etcd_config
        .clone()
        .context("node profile: paths.etcdConfig is missing")?;
    let data = ctx.path(&ctx.profile.paths.etcd_data_dir);
    let peers = peer_endpoints(ctx, &me);

    // A member with data is an existing member (a reboot, or a crash after
    // it first started): etcd ignores initial-cluster* then; just run it.
    if data.join("member").is_dir() {
        if !ctx.env.root.join(EFFECTIVE_PATH).exists() {
            write_effective(&ctx.env.root, &template, &Start::New)?;
        }
        ctx.env.svc.start_no_block(UNIT)?;
        // An earlier attempt may have stopped between starting the learner
        // and promoting it.
        let promoted = match ctx.env.etcd.member_list(&peers) {
            Ok(list) => match list.iter().find(|m| is_mine(m, &me) && m.is_learner) {
                Some(l) => {
                    promote(ctx, &me, &peers, l.id)?;
                    ", promoted its learner"
                }
                None => "",
            },
            Err(_) => "",
        };
        wait_member_healthy(ctx, &me)?;
        return Ok(format!(
            "data in {} present: started the existing member{promoted}",
            data.display()
        ));
    }

    // Empty data dir. Do peers already run a cluster?
    let members = match ctx.env.etcd.member_list(&peers) {
        Ok(m) => m,
        Err(e) => {
            log(&format!(
                "no etcd peer answers ({e:#}): forming the cluster with initial-cluster-state new"
            ));
            write_effective(&ctx.env.root, &template, &Start::New)?;
            ctx.env.svc.start_no_block(UNIT)?;
            wait_member_healthy(ctx, &me)?;
            return Ok(
                "formed: initial-cluster-state new, member healthy, cluster in quorum".into(),
            );
        }
    };
    join_running(ctx, &me, &template, &peers, members)
}

/// Client URLs of the other members in the profile.
fn peer_endpoints(ctx: &Ctx, me: &EtcdMember) -> Vec<String> {
    ctx.profile
        .etcd_members
        .iter()
        .filter(|m| m.name != me.name)
        .map(|m| m.client_url.clone())
        .collect()
}

fn is_mine(m: &Member, me: &EtcdMember) -> bool {
    m.peer_urls.contains(&me.peer_url) || (!m.name.is_empty() && m.name == me.name)
}

fn join_running(
    ctx: &mut Ctx,
    me: &EtcdMember,
    template: &str,
    peers: &[String],
    members: Vec<Member>,
) -> Result<String> {
    let mut did = Vec::new();
    let mine = members.iter().find(|m| is_mine(m, me)).cloned();
    let learner_id = match mine {
        // Listed from the initial formation and never started: the others
        // formed without us (we booted late). Static bootstrap still holds.
        Some(m) if !m.has_started() && !m.is_learner => {
            log(&format!(
                "peers answer and list {} as a member that never started: starting with initial-cluster-state new",
                member_label(&m)
            ));
            write_effective(&ctx.env.root, template, &Start::New)?;
            ctx.env.svc.start_no_block(UNIT)?;
            wait_member_healthy(ctx, me)?;
            return Ok("joined the forming cluster late (initial-cluster-state new)".into());
        }
        // Added as a learner by an earlier attempt that did not finish.
        Some(m) if !m.has_started() && m.is_learner => {
            did.push(format!(
                "found own learner {:x} from an earlier attempt",
                m.id
            ));
            m.id
        }
        Some(stale) => {
            remove_stale(ctx, me, &stale, &members, peers)?;
            did.push(format!("removed stale member {}", member_label(&stale)));
            add_learner(ctx, me, peers, &mut did)?
        }
        None => add_learner(ctx, me, peers, &mut did)?,
    };

    let members = ctx
        .env
        .etcd
        .member_list(peers)
        .context("listing etcd members after adding this node")?;
    let initial_cluster = initial_cluster(ctx, me, learner_id, &members);
    write_effective(
        &ctx.env.root,
        template,
        &Start::Existing {
            initial_cluster: initial_cluster.clone(),
        },
    )?;
    ctx.env.svc.start_no_block(UNIT)?;
    did.push(format!(
        "started with initial-cluster-state existing ({initial_cluster})"
    ));

    promote(ctx, me, peers, learner_id)?;
    did.push("promoted".into());
    wait_member_healthy(ctx, me)?;
    Ok(did.join("; "))
}

/// Promotes the learner once it has caught up; etcd refuses until then.
fn promote(ctx: &Ctx, me: &EtcdMember, peers: &[String], learner_id: u64) -> Result<()> {
    let etcd = ctx.env.etcd;
    ctx.wait_for(
        &format!("learner {} to catch up and be promoted", me.name),
        Some(ctx.env.waits.promote),
        || match etcd.member_promote(peers, learner_id) {
            Ok(()) => Ok(()),
            Err(e) => {
                // An earlier attempt may have promoted it already.
                let promoted = etcd
                    .member_list(peers)
                    .map(|l| l.iter().any(|m| m.id == learner_id && !m.is_learner))
                    .unwrap_or(false);
                if promoted {
                    Ok(())
                } else {
                    Err(format!("{e:#}"))
                }
            }
        },
    )
}

fn add_learner(ctx: &Ctx, me: &EtcdMember, peers: &[String], did: &mut Vec<String>) -> Result<u64> {
    let etcd = ctx.env.etcd;
    // etcd refuses membership changes for a few seconds after members
    // (re)connect ("unhealthy cluster"); and an add whose answer was lost
    // must not be repeated: look for our learner before trying again.
    let id = ctx
        .wait_for(
            &format!("etcd to accept {} as a learner", me.name),
            Some(ctx.env.waits.local),
            || match etcd.member_add_learner(peers, std::slice::from_ref(&me.peer_url)) {
                Ok((id, _)) => Ok(id),
                Err(e) => etcd
                    .member_list(peers)
                    .ok()
                    .and_then(|l| {
                        l.into_iter()
                            .find(|m| is_mine(m, me) && m.is_learner && !m.has_started())
                    })
                    .map(|m| m.id)
                    .ok_or_else(|| format!("{e:#}")),
            },
        )
        .with_context(|| format!("adding {} ({}) as an etcd learner", me.name, me.peer_url))?;
    log(&format!("added {} as learner {id:x}", me.name));
    did.push(format!("added as learner {id:x}"));
    Ok(id)
}

/// Removes this node's previous incarnation, only if the remaining voting
/// members keep quorum. Otherwise refuses and says what it found.
fn remove_stale(
    ctx: &Ctx,
    me: &EtcdMember,
    stale: &Member,
    members: &[Member],
    peers: &[String],
) -> Result<()> {
    let etcd = ctx.env.etcd;
    if !stale.is_learner {
        if let Err(why) = quorum_without(ctx, stale, members) {
            anyhow::bail!(
                "refusing to replace etcd member {stale}: this node's data dir {data} is empty, so it is a \
                 replaced or reimaged member, but removing the old member would leave {why}. \
                 Nothing was changed. Bring the other members back (check etcd.service on them) and reboot \
                 this node or run `hakube-firstboot run`; if they are lost for good, restore the cluster \
                 from a snapshot (etcdctl snapshot restore) instead.",
                stale = member_label(stale),
                data = ctx.path(&ctx.profile.paths.etcd_data_dir).display(),
            );
        }
    }
    ctx.wait_for(
        &format!("etcd to remove stale member {}", member_label(stale)),
        Some(ctx.env.waits.local),
        || match etcd.member_remove(peers, stale.id) {
            Ok(()) => Ok(()),
            Err(e) => match etcd.member_list(peers) {
                // removed by an attempt whose answer was lost
                Ok(l) if !l.iter().any(|m| m.id == stale.id) => Ok(()),
                _ => Err(format!("{e:#}")),
            },
        },
    )
    .with_context(|| {
        format!(
            "removing stale etcd member {} ({})",
            member_label(stale),
            me.name
        )
    })
}

/// Would the voting members other than `stale` hold quorum? Re-checked for
/// up to `waits.settle`, so a leader election does not cause a refusal.
/// `Err` describes what was found.
pub fn quorum_without(ctx: &Ctx, stale: &Member, members: &[Member]) -> Result<(), String> {
    let rest: Vec<Member> = members
        .iter()
        .filter(|m| m.id != stale.id)
        .cloned()
        .collect();
    let etcd = ctx.env.etcd;
    let check = || {
        let (voters, healthy, down) = voting_health(etcd, &rest);
        let need = quorum(voters);
        let found = format!(
            "{} healthy of {voters} voting members, below the quorum of {need}. Healthy: [{}]. Not healthy: [{}]",
            healthy.len(),
            healthy.join(", "),
            down.join(", ")
        );
        if healthy.len() >= need {
            log(&format!(
                "removing {} keeps quorum: {} of {voters} remaining voting members healthy",
                member_label(stale),
                healthy.len()
            ));
            Ok(())
        } else {
            Err(found)
        }
    };
    match ctx.wait_for(
        &format!(
            "quorum of the etcd members other than {}",
            member_label(stale)
        ),
        Some(ctx.env.waits.settle),
        check,
    ) {
        Ok(()) => Ok(()),
        Err(_) => check(),
    }
}

/// `name=peerURL,...` for every member, naming this node's new entry.
fn initial_cluster(ctx: &Ctx, me: &EtcdMember, my_id: u64, members: &[Member]) -> String {
    let mut parts = Vec::new();
    for m in members {
        let name = if m.id == my_id {
            me.name.clone()
        } else if !m.name.is_empty() {
            m.name.clone()
        } else {
            ctx.profile
                .etcd_members
                .iter()
                .find(|p| m.peer_urls.contains(&p.peer_url))
                .map(|p| p.name.clone())
                .unwrap_or_default()
        };
        for u in &m.peer_urls {
            parts.push(format!("{name}={u}"));
        }
    }
    parts.join(",")
}

/// This member answers a linearizable read and the cluster has quorum.
pub fn wait_member_healthy(ctx: &Ctx, me: &EtcdMember) -> Result<()> {
    let etcd = ctx.env.etcd;
    let own = vec![me.client_url.clone()];
    // Formation needs the other members up too, so this waits on remote nodes.
    ctx.wait_for(
        &format!("etcd member {} healthy and the cluster in quorum", me.name),
        ctx.env.waits.remote,
        || {
            if !etcd.endpoint_healthy(&me.client_url) {
                return Err(format!(
                    "{} does not answer health reads yet",
                    me.client_url
                ));
            }
            let members = etcd.member_list(&own).map_err(|e| format!("{e:#}"))?;
            let (voters, healthy, down) = voting_health(etcd, &members);
            if healthy.len() >= quorum(voters) {
                Ok(())
            } else {
                Err(format!(
                    "{} of {voters} voting members healthy; down: {}",
                    healthy.len(),
                    down.join(", ")
                ))
            }
        },
    )
}
