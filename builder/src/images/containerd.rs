//! The node's own containerd, run on the build host to make the node's image
//! store (see [`super::store`]): a private daemon with its own root, state,
//! sockets and configuration in a work directory, driven with its own `ctr`.
//!
//! The daemon runs in a private mount namespace (`unshare --mount
//! --propagation private`): unpacking a layer mounts the snapshot (a bind
//! mount for the first layer, overlay for the others; containerd's
//! `diff/apply/apply_linux.go` and `mount.WithTempMount`), and a build killed
//! mid-unpack must not leave those mounts in the host's namespace. The
//! namespace dies with the daemon.
//!
//! The pure parts (the configuration, reading `ctr`'s listings, checking
//! them against the images wanted) are tested without a daemon; the daemon
//! itself is tested with the real containerd in
//! `builder/tests/images_store.rs`.

use crate::artifacts::{catalog, install, ResolvedArtifact};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The namespace containerd's CRI plugin serves images from.
pub const NAMESPACE: &str = "k8s.io";
/// The snapshotter the node's containerd uses (its CRI default; hakube's
/// config.toml does not change it).
pub const SNAPSHOTTER: &str = "overlayfs";
/// containerd's CRI reports an image with this label as pinned
/// (`internal/cri/labels`: `PinnedImageLabelKey`/`PinnedImageLabelValue`;
/// `internal/cri/store/image`: `Pinned: i.Labels[PinnedImageLabelKey] ==
/// PinnedImageLabelValue`), and the kubelet's image garbage collector skips
/// pinned images (`pkg/kubelet/images/image_gc_manager.go`, `freeSpace`:
/// "Skip pinned images").
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned";
pub const PINNED_VALUE: &str = "pinned";

/// Plugins the store work does not need: the CRI (it would want CNI, a
/// sandbox image and runc), NRI, the sandbox controllers, the other
/// snapshotters (each would leave an empty directory in the root), tracing
/// and the opt plugin's /opt/containerd. Names as containerd 2.3 registers
/// them (`ctr plugins ls`); a name the daemon does not know is ignored.
pub const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.differ.v1.erofs",
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",
    "io.containerd.mount-handler.v1.erofs",
    "io.containerd.nri.v1.nri",
    "io.containerd.podsandbox.controller.v1.podsandbox",
    "io.containerd.sandbox.controller.v1.shim",
    "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.erofs",
    "io.containerd.snapshotter.v1.native",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
];

/// Where one daemon keeps everything, all under one work directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub state: PathBuf,
    pub grpc: PathBuf,
    pub ttrpc: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Paths {
    pub fn under(dir: &Path) -> Paths {
        Paths {
            root: dir.join("root"),
            state: dir.join("state"),
            grpc: dir.join("state/containerd.sock"),
            ttrpc: dir.join("state/containerd.sock.ttrpc"),
            config: dir.join("config.toml"),
            log: dir.join("containerd.log"),
        }
    }
}

/// The daemon's config.toml (version 3, containerd 2.x).
pub fn render_config(p: &Paths) -> String {
    let disabled: Vec<String> = DISABLED_PLUGINS.iter().map(|n| format!("'{n}'")).collect();
    format!(
        "# hakube-build: the image store of a node, made on the build host.\n\
         version = 3\n\
         root = '{root}'\n\
         state = '{state}'\n\
         disabled_plugins = [{disabled}]\n\
         \n\
         [grpc]\n  address = '{grpc}'\n\
         \n\
         [ttrpc]\n  address = '{ttrpc}'\n",
        root = p.root.display(),
        state = p.state.display(),
        disabled = disabled.join(", "),
        grpc = p.grpc.display(),
        ttrpc = p.ttrpc.display(),
    )
}

/// `containerd` and `ctr` of the node's containerd release.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub containerd: PathBuf,
    pub ctr: PathBuf,
}

/// Extracts the release's binaries into `dir` (as they are laid into the OS
/// root: the catalogue's layout of the artifact).
pub fn extract(art: &ResolvedArtifact, dir: &Path) -> Result<Binaries> {
    let layout = catalog::layout_for(&art.name, &art.version)
        .with_context(|| format!("artifact {} is not in the catalogue", art.name))?;
    let written = install::install(art, &layout, dir, None).with_context(|| {
        format!(
            "extracting containerd v{} into {}",
            art.version,
            dir.display()
        )
    })?;
    let find = |name: &str| {
        written
            .iter()
            .find(|p| p.file_name().is_some_and(|f| f == name))
            .map(|p| dir.join(p))
            .ok_or_else(|| anyhow!("containerd v{}'s release has no {name}", art.version))
    };
    Ok(Binaries {
        containerd: find("containerd")?,
        ctr: find("ctr")?,
    })
}

/// A running daemon; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    child: Option<Child>,
    ctr: PathBuf,
    pub paths: Paths,
}

/// How long the daemon may take to answer, and to stop.
const START_LIMIT: Duration = Duration::from_secs(60);
const STOP_LIMIT: Duration = Duration::from_secs(30);

impl Daemon {
    /// Starts containerd with `paths` and [`render_config`]'s configuration
    /// and waits until its socket answers.
    pub fn start(bins: &Binaries, paths: Paths) -> Result<Daemon> {
        let config = render_config(&paths);
        Daemon::start_with(bins, paths, &config)
    }

    /// [`Daemon::start`] with another configuration (which must name
    /// `paths`' root, state and sockets); the tests start the CRI this way.
    pub fn start_with(bins: &Binaries, paths: Paths, config: &str) -> Result<Daemon> {
        for d in [&paths.root, &paths.state] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(&paths.config, config)
            .with_context(|| format!("writing {}", paths.config.display()))?;
        let log = std::fs::File::create(&paths.log)
            .with_context(|| format!("creating {}", paths.log.display()))?;
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private"])
            .arg(&bins.containerd)
            .arg("--config")
            .arg(&paths.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // No unpigz from the host: the bytes unpacked are the same, but
            // the node's containerd is what the build runs, nothing else.
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (in a private mount namespace with unshare(1), util-linux)",
                    bins.containerd.display()
                )
            })?;
        let mut d = Daemon {
            child: Some(child),
            ctr: bins.ctr.clone(),
            paths,
        };
        d.wait_ready()?;
        Ok(d)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "containerd exited ({status}) before it answered on {}: {}",
                    self.paths.grpc.display(),
                    self.log_tail()
                );
            }
            if self.paths.grpc.exists() && self.ctr_raw(&["version"]).is_ok() {
                return Ok(());
            }
            if start.elapsed() > START_LIMIT {
                bail!(
                    "containerd did not answer on {} within {:?}: {}",
                    self.paths.grpc.display(),
                    START_LIMIT,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.paths.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("its log ({}) ends:\n{tail}", self.paths.log.display())
    }

    fn ctr_raw(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.ctr)
            .arg("--address")
            .arg(&self.paths.grpc)
            .args(["--namespace", NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.ctr.display()))?;
        if !out.status.success() {
            bail!(
                "`ctr {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ctr --address SOCK --namespace k8s.io ARGS...`, its stdout.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        self.ctr_raw(args)
            .with_context(|| format!("the build's containerd ({})", self.log_tail()))
    }

    /// Imports one archive, unpacks it for [`SNAPSHOTTER`] and labels the
    /// image pinned for the CRI ([`PINNED_LABEL`]).
    pub fn import_pinned(&self, archive: &Path) -> Result<()> {
        let a = archive.to_string_lossy();
        let label = format!("{PINNED_LABEL}={PINNED_VALUE}");
        self.ctr(&[
            "images",
            "import",
            "--local",
            "--platform",
            "linux/amd64",
            "--snapshotter",
            SNAPSHOTTER,
            "--label",
            &label,
            &a,
        ])
        .map(|_| ())
    }

    /// `ctr images ls`, read.
    pub fn images(&self) -> Result<Vec<Listed>> {
        parse_images_ls(&self.ctr(&["images", "ls"])?)
    }

    /// `ctr snapshots ls` of [`SNAPSHOTTER`], read.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        parse_snapshots_ls(&self.ctr(&["snapshots", "--snapshotter", SNAPSHOTTER, "ls"])?)
    }

    /// SIGTERM, then SIGKILL after [`STOP_LIMIT`]; an error when it had to
    /// be killed (its databases may not be closed cleanly).
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if start.elapsed() < STOP_LIMIT => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "containerd did not stop within {STOP_LIMIT:?} of SIGTERM and was killed: {}",
                        self.log_tail()
                    );
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            tracing::warn!("{e:#}");
        }
    }
}

/// One line of `ctr images ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub digest: String,
    pub labels: BTreeMap<String, String>,
}

impl Listed {
    pub fn pinned(&self) -> bool {
        self.labels.get(PINNED_LABEL).map(String::as_str) == Some(PINNED_VALUE)
    }
}

/// Reads `ctr images ls`: `REF TYPE DIGEST SIZE PLATFORMS LABELS`, columns
/// padded with spaces; SIZE holds a space (`312.0 KiB`), LABELS is `-` or
/// `k=v,k=v`.
pub fn parse_images_ls(text: &str) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || (i == 0 && line.starts_with("REF")) {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let digest = f
            .iter()
            .find(|x| x.starts_with("sha256:"))
            .ok_or_else(|| anyhow!("`ctr images ls` line {}: no digest in {line:?}", i + 1))?;
        let last = f.last().copied().unwrap_or("-");
        let labels = if last == "-" || !last.contains('=') {
            BTreeMap::new()
        } else {
            last.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        out.push(Listed {
            name: f[0].to_string(),
            digest: digest.to_string(),
            labels,
        });
    }
    Ok(out)
}

/// One line of `ctr snapshots ls`: `KEY PARENT KIND`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub key: String,
    pub parent: Option<String>,
    pub kind: String,
}

pub fn parse_snapshots_ls(text: &str) -> Result<Vec<Snapshot>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || (i == 0 && line.starts_with("KEY")) {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let (key, parent, kind) = match f.as_slice() {
            [k, kind] => (k, None, kind),
            [k, p, kind] => (k, Some(p.to_string()), kind),
            _ => bail!(
                "`ctr snapshots ls` line {}: expected KEY [PARENT] KIND, got {line:?}",
                i + 1
            ),
        };
        out.push(Snapshot {
            key: key.to_string(),
            parent,
            kind: kind.to_string(),
        });
    }
    Ok(out)
}

/// Every image of `want` (name, amd64 manifest digest) is listed with that
/// digest and pinned; the error names each one that is not.
pub fn check_listed(listed: &[Listed], want: &[(String, String)]) -> Result<()> {
    let by_name: BTreeMap<&str, &Listed> = listed.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut problems = Vec::new();
    for (name, digest) in want {
        match by_name.get(name.as_str()) {
            None => problems.push(format!("{name} is missing")),
            Some(l) if l.digest != *digest => {
                problems.push(format!("{name} has digest {}, not {digest}", l.digest))
            }
            Some(l) if !l.pinned() => problems.push(format!(
                "{name} is not labelled {PINNED_LABEL}={PINNED_VALUE}"
            )),
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn config_names_only_the_work_directory_and_disables_the_cri() {
        let p = Paths::under(Path::new("/w/x"));
        let c = render_config(&p);
        assert!(c.contains("\nversion = 3\n"), "{c}");
        assert!(c.contains("root = '/w/x/root'\n"), "{c}");
        assert!(c.contains("state = '/w/x/state'\n"), "{c}");
        assert!(
            c.contains("[grpc]\n  address = '/w/x/state/containerd.sock'\n"),
            "{c}"
        );
        assert!(
            c.contains("[ttrpc]\n  address = '/w/x/state/containerd.sock.ttrpc'\n"),
            "{c}"
        );
        assert!(c.contains("'io.containerd.grpc.v1.cri'"), "{c}");
        assert!(c.contains("'io.containerd.internal.v1.opt'"), "{c}");
        assert!(
            !c.contains("'io.containerd.snapshotter.v1.overlayfs'"),
            "{c}"
        );
        // Nothing outside the work directory.
        for line in c.lines().filter(|l| l.contains("'/")) {
            assert!(line.contains("'/w/x/"), "{line}");
        }
    }

    /// Captured from containerd v2.3.7's `ctr -n k8s.io images ls` (two
    /// images imported as the store stage does, one without the label).
    const LS: &str = include_str!("../../tests/fixtures/ctr/images-ls.txt");

    #[test]
    fn reads_ctr_images_ls() {
        let l = parse_images_ls(LS).unwrap();
        assert!(l.len() >= 2, "{l:?}");
        for i in &l {
            assert!(
                i.digest.starts_with("sha256:") && i.digest.len() == 71,
                "{i:?}"
            );
            assert!(i.name.contains('/') && i.name.contains(':'), "{i:?}");
        }
        assert!(l.iter().any(|i| i.pinned()), "{l:?}");
        assert!(l.iter().any(|i| !i.pinned()), "{l:?}");
        let text = "REF TYPE DIGEST SIZE PLATFORMS LABELS\n\
            registry.k8s.io/pause:3.10.2 application/vnd.oci.image.manifest.v1+json \
            sha256:aa 312.0 KiB linux/amd64 io.cri-containerd.pinned=pinned,x=y\n\
            registry.k8s.io/x:1 application/vnd.oci.image.manifest.v1+json sha256:bb 1.0 MiB linux/amd64 -\n";
        let l = parse_images_ls(text).unwrap();
        assert_eq!(l[0].name, "registry.k8s.io/pause:3.10.2");
        assert_eq!(l[0].digest, "sha256:aa");
        assert!(l[0].pinned());
        assert_eq!(l[0].labels["x"], "y");
        assert!(!l[1].pinned());
        assert!(parse_images_ls("REF TYPE\nno digest here\n").is_err());
        assert!(parse_images_ls("REF TYPE DIGEST SIZE PLATFORMS LABELS\n")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn reads_ctr_snapshots_ls() {
        let s = parse_snapshots_ls(
            "KEY                                                                     PARENT                                                                  KIND\n\
             sha256:aaa                                                                                                                                       Committed\n\
             sha256:bbb                                                              sha256:aaa                                                              Committed\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].parent, None);
        assert_eq!(s[1].parent.as_deref(), Some("sha256:aaa"));
        assert!(s.iter().all(|s| s.kind == "Committed"));
        assert!(parse_snapshots_ls("KEY PARENT KIND\na b c d\n").is_err());
    }

    #[test]
    fn check_names_every_image_that_is_wrong() {
        let pinned = |n: &str, d: &str| Listed {
            name: n.into(),
            digest: d.into(),
            labels: [(PINNED_LABEL.to_string(), PINNED_VALUE.to_string())].into(),
        };
        let want = vec![
            ("r/a:1".to_string(), D1.to_string()),
            ("r/b:1".to_string(), D2.to_string()),
        ];
        check_listed(&[pinned("r/a:1", D1), pinned("r/b:1", D2)], &want).unwrap();
        let e = check_listed(&[pinned("r/a:1", D2)], &want)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("r/a:1 has digest {D2}, not {D1}")),
            "{e}"
        );
        assert!(e.contains("r/b:1 is missing"), "{e}");
        let mut unpinned = pinned("r/b:1", D2);
        unpinned.labels.clear();
        let e = check_listed(&[pinned("r/a:1", D1), unpinned], &want)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "r/b:1 is not labelled io.cri-containerd.pinned=pinned");
    }
}
