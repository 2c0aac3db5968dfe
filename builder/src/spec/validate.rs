//! Cross-field checks on a resolved cluster. Returns warnings; refusals are
//! [`SpecError`]s naming the field.

use super::model::*;
use super::resolve::Ctx;
use super::SpecError;
use hakube_node_profile::{EtcdTopology, Role};

pub(crate) fn check(ctx: &Ctx, c: &Cluster) -> Result<Vec<String>, SpecError> {
    let mut warnings = Vec::new();
    if c.masters().next().is_none() {
        return Err(ctx.err(
            "nodes",
            "has no node with role master: at least one master expected",
        ));
    }
    // TODO(spec helper): the full list of checks from issue 2.
    let members = c.etcd_member_nodes().count();
    if c.etcd_topology == EtcdTopology::External && members == 0 {
        return Err(ctx.err("etcd.topology", "is external but no node has role etcd"));
    }
    if members % 2 == 0 {
        warnings.push(format!(
            "etcd has {members} members: an odd count is recommended (an even count tolerates no more failures than one less)"
        ));
    }
    let _ = Role::Master;
    Ok(warnings)
}
