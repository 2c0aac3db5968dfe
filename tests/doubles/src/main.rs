//! TEST DOUBLE for kubeadm, kubelet, kubectl and crictl. NOT the real tools.
//!
//! The real binaries cannot be obtained on the machines hakube is developed
//! on, so tests/make-mirror installs this one binary under those four names
//! in a local test mirror. It dispatches on argv[0] (or on its first argument
//! when called as `hakube-test-double TOOL ...`), checks its arguments and the
//! config files it is handed as strictly as the real tool (unknown fields,
//! unknown API versions, missing certificates fail), writes the files later
//! steps rely on, and records every invocation as a JSON line in
//! `$HAKUBE_DOUBLE_LOG` (default /var/log/hakube-test-double.log).
//! Paths it touches are taken relative to `$HAKUBE_DOUBLE_ROOT` (default /).
//! The hakube product never downloads, ships or falls back to this binary.

mod kubeadm;
mod schema;
mod tools;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const BANNER: &str = "hakube TEST DOUBLE (not the real tool)";
/// What `version` answers; the double does not know which release it stands in for.
pub const DEFAULT_VERSION: &str = "v1.37.2";

/// Everything a command needs from its surroundings.
pub struct Env {
    pub root: PathBuf,
    pub state: Option<PathBuf>,
    pub version: String,
}

impl Env {
    fn from_process() -> Env {
        Env {
            root: std::env::var_os("HAKUBE_DOUBLE_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/")),
            state: std::env::var_os("HAKUBE_DOUBLE_STATE").map(PathBuf::from),
            version: std::env::var("HAKUBE_DOUBLE_VERSION")
                .unwrap_or_else(|_| DEFAULT_VERSION.to_string()),
        }
    }

    /// Where `path` (as the tool was given it) lives: absolute paths under
    /// the root, relative ones from the working directory like the real tools.
    /// An absolute path already under the root is taken as it is: a caller
    /// that itself works on a node tree (`hakube-firstboot run --root DIR`
    /// in tests) hands out paths inside DIR, which on a node are the same file.
    pub fn host(&self, path: &str) -> PathBuf {
        if self.root != Path::new("/") && Path::new(path).starts_with(&self.root) {
            PathBuf::from(path)
        } else if path.starts_with('/') {
            self.root.join(path.trim_start_matches('/'))
        } else {
            PathBuf::from(path)
        }
    }
}

/// The outcome of one command: stdout text, or an error message and exit code.
pub type Outcome = Result<String, (String, i32)>;

pub fn fail<T>(msg: impl Into<String>) -> Result<T, (String, i32)> {
    Err((msg.into(), 1))
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let base = argv
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let (tool, args): (String, Vec<String>) = if base == "hakube-test-double" {
        match argv.get(1) {
            Some(t) => (t.clone(), argv[2..].to_vec()),
            None => {
                eprintln!(
                    "{BANNER}: usage: hakube-test-double kubeadm|kubelet|kubectl|crictl ARGS..."
                );
                std::process::exit(2);
            }
        }
    } else {
        (base, argv[1..].to_vec())
    };
    let env = Env::from_process();
    let outcome = run(&tool, &args, &env);
    record(&tool, &args, &env, &outcome);
    match outcome {
        Ok(out) => {
            print!("{out}");
            if tool == "kubelet" && !args.iter().any(|a| a == "--version" || a == "version") {
                tools::kubelet_wait();
            }
        }
        Err((msg, code)) => {
            eprintln!("{msg}");
            std::process::exit(code);
        }
    }
}

pub fn run(tool: &str, args: &[String], env: &Env) -> Outcome {
    match tool {
        "kubeadm" => kubeadm::run(args, env),
        "kubelet" => tools::kubelet(args, env),
        "kubectl" => tools::kubectl(args, env),
        "crictl" => tools::crictl(args, env),
        other => Err((format!("{BANNER}: unknown tool {other:?}"), 2)),
    }
}

/// Appends `{tool, argv, cwd, ok, error, files: {path: sha256}}` to the log.
fn record(tool: &str, args: &[String], env: &Env, outcome: &Outcome) {
    let log = std::env::var_os("HAKUBE_DOUBLE_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/log/hakube-test-double.log"));
    // Hash every file named by --config / -f / --kubeconfig, so tests can see
    // exactly which configuration each call was handed.
    let mut files = serde_json::Map::new();
    for w in args.windows(2) {
        if matches!(
            w[0].as_str(),
            "--config" | "-f" | "--filename" | "--kubeconfig"
        ) {
            let hash = std::fs::read(env.host(&w[1]))
                .map(|b| hex::encode(Sha256::digest(&b)))
                .unwrap_or_else(|_| "missing".into());
            files.insert(w[1].clone(), hash.into());
        }
    }
    for a in args {
        if let Some(p) = a.strip_prefix("--config=") {
            let hash = std::fs::read(env.host(p))
                .map(|b| hex::encode(Sha256::digest(&b)))
                .unwrap_or_else(|_| "missing".into());
            files.insert(p.to_string(), hash.into());
        }
    }
    let line = serde_json::json!({
        "double": true,
        "tool": tool,
        "argv": args,
        "cwd": std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
        "ok": outcome.is_ok(),
        "error": outcome.as_ref().err().map(|e| e.0.clone()),
        "files": files,
    });
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Writes a file under the root, creating parents.
pub fn write(env: &Env, path: &str, contents: &str) -> Result<(), (String, i32)> {
    let p = env.host(path);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| (format!("creating {}: {e}", d.display()), 1))?;
    }
    std::fs::write(&p, contents).map_err(|e| (format!("writing {}: {e}", p.display()), 1))
}

/// The value of `--flag VALUE` or `--flag=VALUE`.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    let eq = format!("{name}=");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == name {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix(&eq) {
            return Some(v.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_under_the_root_once() {
        let env = Env {
            root: PathBuf::from("/tmp/node"),
            state: None,
            version: DEFAULT_VERSION.into(),
        };
        let want = PathBuf::from("/tmp/node/etc/hakube/kubeadm/init.yaml");
        assert_eq!(env.host("/etc/hakube/kubeadm/init.yaml"), want);
        assert_eq!(env.host("/tmp/node/etc/hakube/kubeadm/init.yaml"), want);
        // A sibling whose name merely starts like the root is not under it.
        assert_eq!(
            env.host("/tmp/node2/x"),
            PathBuf::from("/tmp/node/tmp/node2/x")
        );
        assert_eq!(env.host("rel/x"), PathBuf::from("rel/x"));
        let slash = Env {
            root: PathBuf::from("/"),
            ..env
        };
        assert_eq!(slash.host("/etc/x"), PathBuf::from("/etc/x"));
    }
}
