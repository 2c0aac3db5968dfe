//! Host tools the build runs (mmdebstrap, mkfs.erofs, mke2fs, ...), behind a
//! small trait so presence is checked first and a missing tool is named with
//! the Debian package that provides it.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A host program and the Debian package that ships it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const MMDEBSTRAP: Tool = Tool {
    program: "mmdebstrap",
    package: "mmdebstrap",
};
pub const MKFS_EROFS: Tool = Tool {
    program: "mkfs.erofs",
    package: "erofs-utils",
};
pub const MKE2FS: Tool = Tool {
    program: "mke2fs",
    package: "e2fsprogs",
};
pub const DEBUGFS: Tool = Tool {
    program: "debugfs",
    package: "e2fsprogs",
};
pub const MKFS_VFAT: Tool = Tool {
    program: "mkfs.vfat",
    package: "dosfstools",
};
pub const MCOPY: Tool = Tool {
    program: "mcopy",
    package: "mtools",
};
pub const MMD: Tool = Tool {
    program: "mmd",
    package: "mtools",
};
pub const QEMU_IMG: Tool = Tool {
    program: "qemu-img",
    package: "qemu-utils",
};
pub const TAR: Tool = Tool {
    program: "tar",
    package: "tar",
};
/// Copies the containerd image store into a var stage (`cp -a` keeps the
/// overlay whiteouts, xattrs, owners and hard links).
pub const CP: Tool = Tool {
    program: "cp",
    package: "coreutils",
};
/// The build's containerd runs in a private mount namespace.
pub const UNSHARE: Tool = Tool {
    program: "unshare",
    package: "util-linux",
};

/// Every tool a build needs once the base root filesystem is cached.
pub const ASSEMBLY_TOOLS: &[Tool] = &[
    MKFS_EROFS, MKE2FS, DEBUGFS, MKFS_VFAT, MCOPY, MMD, QEMU_IMG, TAR, CP, UNSHARE,
];

/// One invocation: program, arguments, extra environment.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub tool: Tool,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
}

impl Invocation {
    pub fn new(tool: Tool) -> Self {
        Invocation {
            tool,
            args: Vec::new(),
            env: Vec::new(),
        }
    }
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(it.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.push((k.to_string(), v.into()));
        self
    }
    /// The command line as a user would type it, for error messages.
    pub fn display(&self) -> String {
        let mut s = self.tool.program.to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// Runs host tools. The fake in tests records invocations.
pub trait Runner {
    /// Where `tool` is, or `None` when it is not installed.
    fn locate(&self, tool: Tool) -> Option<PathBuf>;
    /// Runs the invocation to completion; returns its stdout. Fails with the
    /// command line and the end of its stderr when it exits non-zero.
    fn run(&self, inv: &Invocation) -> Result<Vec<u8>>;

    /// Fails naming every missing tool and its Debian package.
    fn require(&self, tools: &[Tool]) -> Result<()> {
        let missing: Vec<String> = tools
            .iter()
            .filter(|t| self.locate(**t).is_none())
            .map(|t| format!("{} (Debian package {})", t.program, t.package))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut pkgs: Vec<&str> = tools
            .iter()
            .filter(|t| self.locate(**t).is_none())
            .map(|t| t.package)
            .collect();
        pkgs.sort_unstable();
        pkgs.dedup();
        bail!(
            "missing host tools: {}; install them with: apt-get install {}",
            missing.join(", "),
            pkgs.join(" ")
        )
    }
}

/// Runs tools from `PATH` (plus the sbin directories, where mkfs tools live
/// and which a non-root `PATH` often lacks).
#[derive(Debug, Default, Clone)]
pub struct HostRunner;

fn search_path() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = PathBuf::from(extra);
        if !dirs.contains(&p) {
            dirs.push(p);
        }
    }
    dirs
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl Runner for HostRunner {
    fn locate(&self, tool: Tool) -> Option<PathBuf> {
        search_path()
            .into_iter()
            .map(|d| d.join(tool.program))
            .find(|p| is_executable(p))
    }

    fn run(&self, inv: &Invocation) -> Result<Vec<u8>> {
        let Some(path) = self.locate(inv.tool) else {
            self.require(&[inv.tool])?;
            unreachable!("require fails for a missing tool");
        };
        tracing::debug!(command = %inv.display(), "running");
        let out = Command::new(&path)
            .args(&inv.args)
            .envs(inv.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("starting {}", inv.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(25).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} failed ({}):\n{}",
                inv.display(),
                out.status,
                tail.join("\n")
            );
        }
        Ok(out.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Missing;
    impl Runner for Missing {
        fn locate(&self, tool: Tool) -> Option<PathBuf> {
            (tool.program == "tar").then(|| PathBuf::from("/bin/tar"))
        }
        fn run(&self, _inv: &Invocation) -> Result<Vec<u8>> {
            unreachable!()
        }
    }

    #[test]
    fn missing_tools_are_named_with_their_package() {
        let err = Missing
            .require(&[MKFS_EROFS, TAR, MCOPY, MMD, QEMU_IMG])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mkfs.erofs (Debian package erofs-utils)"),
            "{err}"
        );
        assert!(
            err.contains("qemu-img (Debian package qemu-utils)"),
            "{err}"
        );
        assert!(
            err.contains("apt-get install erofs-utils mtools qemu-utils"),
            "{err}"
        );
        assert!(!err.contains("tar (Debian"), "{err}");
    }

    #[test]
    fn host_runner_reports_failures_with_the_command() {
        let sh = Tool {
            program: "sh",
            package: "dash",
        };
        let out = HostRunner
            .run(&Invocation::new(sh).args(["-c", "echo out"]))
            .unwrap();
        assert_eq!(out, b"out\n");
        let err = HostRunner
            .run(&Invocation::new(sh).args(["-c", "echo boom >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sh -c echo boom"), "{err}");
        assert!(err.contains("boom"), "{err}");
    }
}
