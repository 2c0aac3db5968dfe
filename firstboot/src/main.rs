use clap::Parser;
use hakube_firstboot::cli::{Cli, Command};
use hakube_firstboot::system::{NetProbe, ProcessRunner, SystemClock, Systemctl};
use hakube_firstboot::{
    etcd_client_for, exit_code, health, health_gate, real_env, run, status, update,
};
use std::path::Path;
use std::time::Duration;

fn main() {
    let cli = Cli::parse();
    let runner = ProcessRunner;
    let svc = Systemctl { runner: &runner };
    let probe = NetProbe {
        timeout: Duration::from_secs(5),
    };
    let clock = SystemClock;
    let with_env =
        |root: &Path,
         wait: Option<u64>,
         f: &dyn Fn(&hakube_firstboot::steps::Env) -> anyhow::Result<String>| {
            // A bad profile must fail before anything is started.
            hakube_firstboot::load_profile(root)?;
            let etcd = etcd_client_for(root)?;
            let env = real_env(root, wait, &runner, &svc, &etcd, &probe, &clock);
            f(&env)
        };
    let result = match cli.command {
        Command::Run(a) => with_env(&a.root.root, a.wait_timeout, &|env| {
            run(env, a.retry.as_deref()).map(|()| String::new())
        }),
        Command::Status(a) => status(
            &a.root.root,
            a.json,
            &update::platform(&a.root.root, &runner, &clock),
        ),
        Command::Health(a) if a.gate => with_env(&a.root.root, Some(0), &|env| {
            health_gate(
                env,
                &update::platform(&a.root.root, &runner, &clock),
                a.no_reboot,
            )
        }),
        Command::Health(a) => with_env(&a.root.root, Some(0), &|env| {
            health(env).map(|s| format!("healthy: {s}\n"))
        }),
        Command::Upgrade(a) => update::upgrade(
            &update::platform(&a.root.root, &runner, &clock),
            &a.source,
            a.no_reboot,
        ),
        Command::Certs(a) if a.renew => with_env(&a.root.root, Some(0), &|env| {
            hakube_firstboot::certs::renew(env, &hakube_firstboot::load_profile(&env.root)?)
        }),
        Command::Certs(a) => {
            let held = hakube_firstboot::certs::held(&a.root.root, time::OffsetDateTime::now_utc());
            if a.json {
                serde_json::to_string_pretty(&held)
                    .map(|s| s + "\n")
                    .map_err(Into::into)
            } else {
                Ok(hakube_firstboot::certs::to_text(&held))
            }
        }
        Command::Rollback(a) => update::rollback(
            &update::platform(&a.root.root, &runner, &clock),
            a.no_reboot,
        ),
    };
    match result {
        Ok(out) => print!("{out}"),
        Err(err) => {
            eprintln!("hakube-firstboot: error: {err:#}");
            std::process::exit(exit_code(&err));
        }
    }
}
