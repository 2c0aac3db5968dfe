//! The edges of the world firstboot touches: programs, systemd, network
//! probes and time. Each is a small trait so the steps can be driven by fakes
//! (see [`crate::fakes`]); the real implementations here are deliberately thin.

use anyhow::{Context, Result};
use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::Duration;
use time::OffsetDateTime;

/// A program to run: name or path, arguments and extra environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Cmd {
    pub fn new(program: &str) -> Cmd {
        Cmd {
            program: program.to_string(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }
    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }
    pub fn args<I, S>(mut self, a: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }
    /// Program and arguments joined by spaces, for logs and fakes.
    pub fn line(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

/// What a program returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code; -1 when killed by a signal.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(stdout: &str) -> Output {
        Output {
            status: 0,
            stdout: stdout.to_string(),
            stderr: String::new(),
        }
    }
    pub fn fail(status: i32, stderr: &str) -> Output {
        Output {
            status,
            stdout: String::new(),
            stderr: stderr.to_string(),
        }
    }
    pub fn success(&self) -> bool {
        self.status == 0
    }
    /// stdout and stderr together, for error messages that quote a tool.
    pub fn combined(&self) -> String {
        let mut s = self.stdout.trim_end().to_string();
        if !self.stderr.trim().is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(self.stderr.trim_end());
        }
        s
    }
}

/// Runs programs. `Err` only when the program could not be started at all.
pub trait CommandRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output>;
}

/// Runs a command and fails, quoting the tool's own output, unless it exits 0.
pub fn run_checked(runner: &dyn CommandRunner, cmd: &Cmd) -> Result<Output> {
    let out = runner
        .run(cmd)
        .with_context(|| format!("starting `{cmd}`"))?;
    if !out.success() {
        anyhow::bail!(
            "`{cmd}` exited with status {}; its output:\n{}",
            out.status,
            indent(&out.combined())
        );
    }
    Ok(out)
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (nothing)".to_string();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The real runner: `std::process::Command`, output captured.
pub struct ProcessRunner;

impl CommandRunner for ProcessRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output> {
        let out = Command::new(&cmd.program)
            .args(&cmd.args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .output()
            .with_context(|| format!("running {}", cmd.program))?;
        Ok(Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// The few systemd operations firstboot needs.
pub trait ServiceManager {
    /// `systemctl enable --now`-like: enabled for the next boots, started now.
    fn start(&self, unit: &str) -> Result<()>;
    /// Like [`ServiceManager::start`], but only queues the start job: for a
    /// unit whose readiness the caller waits for itself, so a slow start that
    /// trips the unit's own start timeout (and its Restart=) is not fatal.
    fn start_queued(&self, unit: &str) -> Result<()> {
        self.start(unit)
    }
    fn restart(&self, unit: &str) -> Result<()>;
    fn is_active(&self, unit: &str) -> bool;
}

/// systemd through `systemctl`, run by a [`CommandRunner`].
pub struct Systemctl<'a> {
    pub runner: &'a dyn CommandRunner,
}

impl ServiceManager for Systemctl<'_> {
    fn start(&self, unit: &str) -> Result<()> {
        run_checked(
            self.runner,
            &Cmd::new("systemctl").args(["enable", "--now", unit]),
        )
        .with_context(|| format!("starting {unit}"))?;
        Ok(())
    }
    fn start_queued(&self, unit: &str) -> Result<()> {
        run_checked(
            self.runner,
            &Cmd::new("systemctl").args(["enable", "--now", "--no-block", unit]),
        )
        .with_context(|| format!("starting {unit}"))?;
        Ok(())
    }
    fn restart(&self, unit: &str) -> Result<()> {
        run_checked(self.runner, &Cmd::new("systemctl").args(["restart", unit]))
            .with_context(|| format!("restarting {unit}"))?;
        Ok(())
    }
    fn is_active(&self, unit: &str) -> bool {
        self.runner
            .run(&Cmd::new("systemctl").args(["is-active", "--quiet", unit]))
            .map(|o| o.success())
            .unwrap_or(false)
    }
}

/// Network readiness checks.
pub trait Probe {
    /// True when `url` (https://host:port/path) completes a TLS handshake and
    /// answers anything at all: 200, 401 and 403 all mean "an API server is there".
    fn https_answers(&self, url: &str) -> bool;
    /// True when a TCP connection to `host:port` is accepted.
    fn tcp_open(&self, host_port: &str) -> bool;
}

/// Real probes: reqwest without certificate verification (we only ask
/// whether something speaks TLS+HTTP there; trust comes from kubeadm's CA pinning).
pub struct NetProbe {
    pub timeout: Duration,
}

impl Probe for NetProbe {
    fn https_answers(&self, url: &str) -> bool {
        let client = match reqwest::blocking::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .timeout(self.timeout)
            .build()
        {
            Ok(c) => c,
            Err(_) => return false,
        };
        client.get(url).send().is_ok()
    }
    fn tcp_open(&self, host_port: &str) -> bool {
        let Ok(mut addrs) = host_port.to_socket_addrs() else {
            return false;
        };
        addrs.any(|a| TcpStream::connect_timeout(&a, self.timeout).is_ok())
    }
}

/// Wall clock and sleeping.
pub trait Clock {
    fn now(&self) -> OffsetDateTime;
    fn sleep(&self, d: Duration);
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// RFC 3339 text of a timestamp (UTC).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}
