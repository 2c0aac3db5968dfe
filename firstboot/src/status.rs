//! `hakube-firstboot status`: the journal as a table or JSON.

use crate::journal::{Journal, StepRecord, StepState};
use hakube_node_profile::NodeProfile;
use serde::Serialize;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status<'a> {
    pub node: &'a str,
    pub role: &'a str,
    pub init_node: bool,
    pub journal: String,
    /// `done` when every step is done, else the state of the first step that is not.
    pub overall: &'static str,
    pub steps: &'a [StepRecord],
    pub notes: &'a std::collections::BTreeMap<String, String>,
}

pub fn status<'a>(p: &'a NodeProfile, j: &'a Journal) -> Status<'a> {
    let overall = j
        .data
        .steps
        .iter()
        .find(|s| s.state != StepState::Done)
        .map(|s| s.state.as_str())
        .unwrap_or("done");
    Status {
        node: &p.node_name,
        role: p.role.as_str(),
        init_node: p.init_node,
        journal: j.path().display().to_string(),
        overall,
        steps: &j.data.steps,
        notes: &j.data.notes,
    }
}

pub fn to_json(s: &Status) -> String {
    let mut out = serde_json::to_string_pretty(s).unwrap_or_default();
    out.push('\n');
    out
}

pub fn to_text(s: &Status) -> String {
    let mut out = format!(
        "node {} ({}{}): {}\njournal {}\n\n",
        s.node,
        s.role,
        if s.init_node { ", init node" } else { "" },
        s.overall,
        s.journal
    );
    out.push_str(&format!(
        "{:<20} {:<8} {:<26} {:>9} {:>8}  {}\n",
        "STEP", "STATE", "STARTED", "DURATION", "ATTEMPTS", "OUTCOME"
    ));
    for r in s.steps {
        out.push_str(&format!(
            "{:<20} {:<8} {:<26} {:>9} {:>8}  {}\n",
            r.name,
            r.state.as_str(),
            r.started.as_deref().unwrap_or("-"),
            r.duration_ms
                .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            r.attempts,
            r.outcome.as_deref().unwrap_or("")
        ));
    }
    for r in s.steps.iter().filter(|r| r.last_error.is_some()) {
        out.push_str(&format!(
            "\nlast error of {} ({}):\n{}\n",
            r.name,
            r.state.as_str(),
            r.last_error.as_deref().unwrap_or_default()
        ));
    }
    out
}
