//! Generic pieces of the cluster harness: interrupt handling, bounded waits,
//! bounded commands, and the artifacts kept when a scenario fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: i32) {
    INTERRUPTED.store(sig, Ordering::SeqCst);
}

/// SIGINT/SIGTERM set a flag that every wait checks: the wait panics, so the
/// harness's drops tear everything down. SA_RESETHAND: a second signal
/// terminates at once (QEMU still dies with us: parent-death signal).
pub fn install_signal_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let act = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESETHAND,
            SigSet::empty(),
        );
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: the handler only stores into an atomic.
            unsafe { sigaction(sig, &act) }.expect("installing a signal handler");
        }
    });
}

/// Has SIGINT/SIGTERM arrived?
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst) != 0
}

/// Panics when SIGINT/SIGTERM arrived (unwinding runs the teardown).
pub fn check_interrupt() {
    let sig = INTERRUPTED.load(Ordering::SeqCst);
    if sig != 0 {
        panic!("interrupted by signal {sig}: tearing down VMs, namespace and temp files");
    }
}

/// Sleeps in short slices so an interrupt is noticed within a second.
pub fn sleep(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupt();
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(500)));
    }
}

/// Polls `probe` every `every` until it returns Ok or `limit` passes; the
/// error names what was awaited, the limit and the probe's last answer.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<(T, Duration), String> {
    let start = Instant::now();
    loop {
        check_interrupt();
        let last = match probe() {
            Ok(v) => return Ok((v, start.elapsed())),
            Err(e) => e,
        };
        if start.elapsed() >= limit {
            return Err(format!(
                "{what}: not within {} s; last answer: {last}",
                limit.as_secs()
            ));
        }
        sleep(every);
    }
}

/// Runs `cmd` for at most `limit` (killed after), stdout and stderr to
/// files in `dir`; Ok(stdout) on exit 0, else Err(what happened + output).
pub fn run_bounded(cmd: &mut Command, limit: Duration, dir: &Path) -> Result<String, String> {
    let out = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    let err = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.reopen().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(err.reopen().map_err(|e| e.to_string())?))
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let start = Instant::now();
    let status = loop {
        if INTERRUPTED.load(Ordering::SeqCst) != 0 || start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            check_interrupt();
            return Err(format!(
                "{cmd:?}: killed after {} s: {}",
                limit.as_secs(),
                std::fs::read_to_string(err.path()).unwrap_or_default()
            ));
        }
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("{cmd:?}: {e}")),
        }
    };
    let stdout = std::fs::read_to_string(out.path()).unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{cmd:?} exited {status}: {stdout}{}",
            std::fs::read_to_string(err.path()).unwrap_or_default()
        ))
    }
}

/// Where a failed scenario's logs go: `target/e2e-artifacts/<scenario>-<unix time>/`.
pub fn artifacts_dir(scenario: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    target.join("e2e-artifacts").join(format!("{scenario}-{t}"))
}

/// Copies the files of `work` whose names end in one of `suffixes` into `dest`.
pub fn keep_files(work: &Path, suffixes: &[&str], dest: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dest)?;
    let mut n = 0;
    for e in std::fs::read_dir(work)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if suffixes.iter().any(|s| name.ends_with(s)) && e.file_type()?.is_file() {
            std::fs::copy(e.path(), dest.join(&name))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Deletes `<prefix><pid>-*` namespaces left by a run whose process is gone
/// (one killed with SIGKILL cannot clean up after itself).
pub fn sweep_stale_netns(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            eprintln!("e2e: deleting stale network namespace {name}");
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}
