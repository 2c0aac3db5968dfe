//! Command line of `hakube-firstboot`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "hakube-firstboot",
    version,
    about = "Forms the cluster at first boot: runs the steps of this node's role from its profile",
    long_about = "Forms the cluster at first boot, with no SSH: reads this node's profile \
(/etc/hakube/node.json), runs the steps of its role (etcd member, first master, other master, \
worker) and records each in a journal (/var/lib/hakube/firstboot/journal.json) so that a power \
cut resumes where it stopped. Run by hakube-firstboot.service.\n\n\
Exit status: 0 success, 1 a step failed (see `status`), 2 bad input (missing or invalid profile)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every step not yet done (what hakube-firstboot.service does at boot).
    Run(RunArgs),
    /// Print the role and each step's state, timings, attempts and last error.
    Status(StatusArgs),
    /// Exit 0 only when this node's role is healthy (etcd: member healthy and
    /// cluster in quorum; Kubernetes: kubelet active and this Node Ready).
    Health(HealthArgs),
    /// Install a newer OS version from an update bundle into the other root
    /// slot (systemd-sysupdate), with a boot entry that has 3 tries, and reboot.
    Upgrade(UpgradeArgs),
    /// Boot the other root slot from now on: marks the booted version's entry
    /// bad, so systemd-boot picks the other one, and reboots.
    Rollback(RollbackArgs),
    /// List the certificates this node holds with their expiry; with
    /// --renew, renew those due (what hakube-certs.timer runs daily).
    Certs(CertsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    #[command(flatten)]
    pub root: RootArg,

    /// On a master: renew every leaf kubeadm manages that has less than a
    /// third of its lifetime left (`kubeadm certs renew`, keeping subject
    /// and SANs), then restart the static pods that read them, one at a
    /// time, each healthy before the next.
    #[arg(long)]
    pub renew: bool,

    /// Print JSON instead of a table (without --renew).
    #[arg(long, conflicts_with = "renew")]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub root: RootArg,

    /// Boot health gate (hakube-boot-assess.service): on a boot that is on
    /// trial after an update, wait up to the profile's healthDeadlineSeconds
    /// for health; if it does not come, mark the boot entry bad and reboot,
    /// so that the previous slot boots. Does nothing on an uncounted boot.
    #[arg(long)]
    pub gate: bool,

    /// With --gate: mark the entry bad but do not reboot.
    #[arg(long, requires = "gate")]
    pub no_reboot: bool,
}

#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub root: RootArg,

    /// The update bundle: a directory or an http(s) URL holding SHA256SUMS
    /// and the files it lists (hakube-build writes it under update/VERSION/).
    #[arg(value_name = "SOURCE")]
    pub source: String,

    /// Install, but do not reboot.
    #[arg(long)]
    pub no_reboot: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub root: RootArg,

    /// Switch, but do not reboot.
    #[arg(long)]
    pub no_reboot: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RootArg {
    /// Root of the node's filesystem; every path of the profile is taken under it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub root: RootArg,

    /// Give up waiting for other nodes (etcd peers, the API endpoint) after
    /// this many seconds. Default: wait as long as it takes, logging every minute.
    #[arg(long, value_name = "SECONDS")]
    pub wait_timeout: Option<u64>,

    /// Mark STEP pending again before running, after an operator has cleaned
    /// up what it left (e.g. `kubeadm reset -f` before retrying kubeadm-init).
    #[arg(long, value_name = "STEP")]
    pub retry: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub root: RootArg,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_explains_every_flag() {
        let mut cmd = Cli::command();
        for sub in ["run", "status", "health", "upgrade", "rollback"] {
            let help = cmd
                .find_subcommand_mut(sub)
                .unwrap()
                .render_long_help()
                .to_string();
            assert!(help.contains("--root"), "{sub}: {help}");
            assert!(help.contains("every path of the profile"), "{sub}: {help}");
        }
        let run = cmd
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            run.contains("--wait-timeout") && run.contains("--retry"),
            "{run}"
        );
    }
}
