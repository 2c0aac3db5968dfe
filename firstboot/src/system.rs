//! The edges of the world firstboot touches: programs, systemd, network
//! probes and time. Each is a small trait so the steps can be driven by fakes
//! (see [`crate::fakes`]); the real implementations here are deliberately thin.

use anyhow::{Context, Result};
use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::Duration;
use time::OffsetDateTime;

/// How long a command may run unless it says otherwise. Every tool
/// firstboot runs talks to something that can hang (an API server behind a
/// dead VIP, a wedged runtime); a hung step must fail, saying which command
/// hung, instead of blocking first boot for ever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A program to run: name or path, arguments and extra environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Killed, and reported as failed, after this long.
    pub timeout: Duration,
    /// Arguments that are secrets (a bootstrap token): never shown in an
    /// error, a log or the journal, see [`Cmd::redact`].
    pub secrets: Vec<String>,
}

impl Cmd {
    pub fn new(program: &str) -> Cmd {
        Cmd {
            program: program.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            secrets: Vec::new(),
        }
    }
    pub fn timeout(mut self, d: Duration) -> Cmd {
        self.timeout = d;
        self
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
    /// An argument that is a secret: passed as is, shown as `<redacted>`.
    pub fn secret_arg(mut self, a: impl Into<String>) -> Cmd {
        let a = a.into();
        if !a.is_empty() {
            self.secrets.push(a.clone());
        }
        self.args.push(a);
        self
    }
    /// `text` with every secret argument of this command replaced by
    /// `<redacted>` (a tool may quote its arguments in its error).
    pub fn redact(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), "<redacted>"))
    }
    /// Program and arguments joined by spaces, secrets included: what the
    /// fakes match. Logs and errors use `Display`, which redacts.
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
        f.write_str(&self.redact(&self.line()))
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
            indent(&cmd.redact(&out.combined()))
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

/// The real runner: `std::process::Command`, output captured, killed after
/// the command's timeout (then `Err`, naming the command and what it printed).
pub struct ProcessRunner;

impl CommandRunner for ProcessRunner {
    fn run(&self, cmd: &Cmd) -> Result<Output> {
        use std::io::Read;
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;
        let mut child = Command::new(&cmd.program)
            // Its own process group, so a timeout kills what it started too
            // (a child left holding the pipes would keep us reading).
            .process_group(0)
            .args(&cmd.args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", cmd.program))?;
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let deadline = std::time::Instant::now() + cmd.timeout;
        let status = loop {
            if let Some(st) = child
                .try_wait()
                .with_context(|| format!("waiting for {}", cmd.program))?
            {
                break Some(st);
            }
            if std::time::Instant::now() >= deadline {
                let group = format!("-{}", child.id());
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        match status {
            Some(st) => Ok(Output {
                status: st.code().unwrap_or(-1),
                stdout,
                stderr,
            }),
            None => {
                let so_far = Output {
                    status: -1,
                    stdout,
                    stderr,
                };
                anyhow::bail!(
                    "`{cmd}` did not finish within {}s and was killed; its output so far:\n{}",
                    cmd.timeout.as_secs(),
                    indent(&so_far.combined())
                )
            }
        }
    }
}

/// The few systemd operations firstboot needs.
pub trait ServiceManager {
    /// `systemctl enable --now`-like: enabled for the next boots, started now.
    fn start(&self, unit: &str) -> Result<()>;
    /// Enabled, and its start queued without waiting for it to be ready: for
    /// a Type=notify unit that is ready only once other nodes are (etcd
    /// notifies once it has quorum). The caller waits for readiness itself.
    fn start_no_block(&self, unit: &str) -> Result<()>;
    fn restart(&self, unit: &str) -> Result<()>;
    fn is_active(&self, unit: &str) -> bool;
    /// How many times systemd restarted `unit` by itself since it was last
    /// started (its `NRestarts`); 0 when unknown.
    fn restarts(&self, unit: &str) -> u32;
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
    fn start_no_block(&self, unit: &str) -> Result<()> {
        run_checked(
            self.runner,
            &Cmd::new("systemctl").args(["enable", "--now", "--no-block", unit]),
        )
        .with_context(|| format!("queueing the start of {unit}"))?;
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
    fn restarts(&self, unit: &str) -> u32 {
        self.runner
            .run(&Cmd::new("systemctl").args(["show", "-p", "NRestarts", "--value", unit]))
            .ok()
            .filter(|o| o.success())
            .and_then(|o| o.stdout.trim().parse().ok())
            .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "abcdef.0123456789abcdef";

    #[test]
    fn a_secret_argument_is_passed_but_never_shown() {
        let cmd = Cmd::new("kubeadm")
            .args(["token", "create"])
            .secret_arg(TOKEN)
            .args(["--ttl", "24h"]);
        assert_eq!(cmd.args[2], TOKEN, "the tool gets the secret");
        assert_eq!(cmd.to_string(), "kubeadm token create <redacted> --ttl 24h");
        // kubeadm quotes the token it was given in its own error.
        let runner = crate::fakes::FakeRunner::new();
        runner.on(
            "kubeadm token create",
            Output::fail(1, &format!("error: token {TOKEN:?} already exists")),
        );
        let err = format!("{:#}", run_checked(&runner, &cmd).unwrap_err());
        assert!(!err.contains(TOKEN), "{err}");
        assert!(!err.contains("0123456789abcdef"), "{err}");
        assert!(err.contains("<redacted>"), "{err}");
    }

    #[test]
    fn a_hung_command_is_killed_after_its_timeout_with_its_output() {
        let cmd = Cmd::new("sh")
            .args(["-c", "echo started; sleep 30; echo never"])
            .timeout(Duration::from_millis(500));
        let start = std::time::Instant::now();
        let err = ProcessRunner.run(&cmd).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("did not finish within 0s and was killed"),
            "{msg}"
        );
        assert!(msg.contains("started"), "{msg}");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "it was not killed"
        );
    }

    #[test]
    fn commands_capture_output_and_status() {
        let out = ProcessRunner
            .run(&Cmd::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]))
            .unwrap();
        assert_eq!(
            out,
            Output {
                status: 3,
                stdout: "out\n".into(),
                stderr: "err\n".into()
            }
        );
        assert_eq!(Cmd::new("x").timeout, DEFAULT_TIMEOUT);
    }
}
