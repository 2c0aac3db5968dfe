//! Crash safety of `hakube-build`, tested on the real process: it is killed
//! with SIGKILL (its whole process group: mmdebstrap, tar, mkfs.erofs,
//! qemu-img with it) at every stage boundary and at random points inside the
//! long stages (mmdebstrap, erofs, var, GPT disk, qcow2). Kill points come
//! from watching the build's own stage lines on stderr (`==> STAGE`); the
//! product has no test hook.
//!
//! After every kill:
//! - no file exists under a final name unless it is complete: every
//!   non-hidden file in the output directory is bit-identical to the
//!   uninterrupted build's; the cache holds only complete entries;
//! - what is left is private (0700 work directories) and is swept by the next
//!   build;
//! - the state directory holds no temporary file.
//!
//! At the end, the next build succeeds and its qcow2 is bit-identical to the
//! uninterrupted build's, and the state directory is byte-for-byte what it
//! was. A second part kills `hakube-build render` while it creates a new state
//! directory. Also lists every file of the build and checks its mode.
//!
//! Needs root (mmdebstrap), Debian's archive (one cold base build), and a test
//! mirror (HAKUBE_TEST_MIRROR, else tests/make-mirror makes one). The seed of
//! the random kill points is printed; HAKUBE_CRASH_SEED=N repeats a run.

#[path = "common/firstboot.rs"]
mod firstboot;
#[path = "common/registry.rs"]
mod registry;
use firstboot::firstboot_bin;
use rand::{Rng, SeedableRng};
use registry::registry_args;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const EPOCH: &str = "1700000000";
const NODE: &str = "worker-1";
const CLUSTER: &str = "hakube";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Env {
    dir: PathBuf,
    mirror: PathBuf,
    firstboot: PathBuf,
}

impl Env {
    fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `hakube-build --profile worker --node worker-1` into `out`, in its own
    /// process group, stderr piped.
    fn build(&self, out: &Path, json: bool) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hakube-build"));
        c.args(["--profile", "worker", "--node", NODE])
            .arg("--artifacts")
            .arg(&self.mirror)
            .arg("--cache-dir")
            .arg(self.cache())
            .arg("--state")
            .arg(self.state())
            .arg("--lock")
            .arg(self.dir.join("hakube.lock"))
            .arg("--firstboot-bin")
            .arg(&self.firstboot)
            .arg("--out")
            .arg(out)
            .args(registry_args())
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env_remove("HAKUBE_CACHE_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if json {
            c.arg("--json");
        }
        c
    }
}

/// Sends `sig` (`KILL`, or `0` to probe) to process group `pgid` with
/// kill(1); whether some process of the group received it.
fn killpg(pgid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Where to kill: when stderr shows `==> STAGE`, after `delay`.
#[derive(Debug, Clone)]
struct KillAt {
    stage: String,
    delay: Duration,
}

/// Runs `cmd`, kills its process group at `at`, returns its stderr. Panics
/// if the build ends before the kill point: the point was not reached.
fn run_and_kill(mut cmd: Command, at: &KillAt) -> String {
    let mut child = cmd.spawn().expect("starting hakube-build");
    let pgid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let marker = format!("==> {}", at.stage);
    let mut log = String::new();
    let mut seen: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let wait = match seen {
            Some(t) => (t + at.delay).saturating_duration_since(Instant::now()),
            None => Duration::from_millis(50),
        };
        if seen.is_some() && wait.is_zero() {
            break;
        }
        match rx.recv_timeout(wait.min(Duration::from_millis(50))) {
            Ok(line) => {
                if seen.is_none() && line == marker {
                    seen = Some(Instant::now());
                }
                log.push_str(&line);
                log.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                panic!("hakube-build ended ({status}) before the kill point {at:?}:\n{log}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "no kill point {at:?} in 15 minutes:\n{log}"
        );
    }
    assert!(
        killpg(pgid, "KILL"),
        "killing the build's process group {pgid}"
    );
    child.wait().unwrap();
    // Every process of the group is gone before anything is inspected.
    let until = Instant::now() + Duration::from_secs(30);
    while killpg(pgid, "0") {
        assert!(
            Instant::now() < until,
            "processes of group {pgid} survive SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(rx);
    let _ = reader.join();
    log
}

fn run_ok(mut cmd: Command) -> (String, String) {
    let out = cmd.output().expect("starting hakube-build");
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "hakube-build failed ({}):\n{e}",
        out.status
    );
    (o, e)
}

fn sha256(p: &Path) -> String {
    hakube_build::image::fsutil::sha256_file(p).unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Every path under `root` (relative), sorted.
fn walk(root: &Path) -> Vec<PathBuf> {
    if !root.exists() {
        return Vec::new();
    }
    hakube_build::image::fsutil::walk_sorted(root).unwrap()
}

fn is_hidden(rel: &Path) -> bool {
    rel.components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
}

/// Hash of every regular file under `root`.
fn tree_hashes(root: &Path) -> BTreeMap<PathBuf, String> {
    walk(root)
        .into_iter()
        .filter(|r| root.join(r).is_file())
        .map(|r| {
            let h = output_hash(root, &r);
            (r, h)
        })
        .collect()
}

/// The hash of an output file of a build into `root`, comparable across
/// output directories: a libvirt domain (and the manifest) name the disk by
/// absolute path, so
/// `root` is taken out of them before hashing.
fn output_hash(root: &Path, rel: &Path) -> String {
    let p = root.join(rel);
    if rel.extension().is_some_and(|e| e == "xml" || e == "json") {
        let text = fs::read_to_string(&p).unwrap();
        let text = text.replace(&root.display().to_string(), "@OUT@");
        hakube_build::image::fsutil::sha256_bytes(text.as_bytes())
    } else {
        sha256(&p)
    }
}

/// The invariants that must hold after any kill.
fn check_after_kill(env: &Env, out: &Path, reference: &BTreeMap<PathBuf, String>, what: &str) {
    // No mount of the killed build (mmdebstrap's /dev, /sys, /proc) survives
    // it in this, the host's, mount namespace.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = env.dir.display().to_string();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&dir)).collect();
    assert!(left.is_empty(), "{what}: mounts left behind: {left:#?}");
    let dir = out.join(CLUSTER);
    for rel in walk(&dir) {
        let p = dir.join(&rel);
        if is_hidden(&rel) {
            // A work directory of the killed build (in the output directory
            // or in update/): private, swept later.
            let name = rel.file_name().unwrap().to_string_lossy();
            let parent_hidden = rel.parent().is_some_and(is_hidden);
            if name.starts_with('.') && !parent_hidden {
                assert!(p.is_dir(), "{what}: {} is a stray file", p.display());
                assert_eq!(mode(&p), 0o700, "{what}: {} is not private", p.display());
            }
            continue;
        }
        if p.is_dir() {
            // A directory under a final name (the update bundle's) is one the
            // complete build has too; its files are checked one by one.
            assert!(
                reference.keys().any(|k| k.starts_with(&rel)),
                "{what}: unexpected final directory {}",
                p.display()
            );
            continue;
        }
        let want = reference
            .get(&rel)
            .unwrap_or_else(|| panic!("{what}: unexpected final name {}", p.display()));
        assert_eq!(
            &output_hash(&dir, &rel),
            want,
            "{what}: {} is not complete",
            p.display()
        );
    }
    // Cache entries under final names are complete: each base tar has its
    // metadata and lists; each OS root directory has its metadata.
    let rootfs = env.cache().join("rootfs");
    for rel in walk(&rootfs) {
        let name = rel.to_string_lossy().into_owned();
        if is_hidden(&rel) {
            continue;
        }
        if let Some(key) = name.strip_suffix(".json") {
            let tar = rootfs.join(format!("{key}.tar"));
            assert!(tar.is_file(), "{what}: {name} without its tar");
            let t = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
            assert!(
                t.status.success(),
                "{what}: {} is not a whole tar",
                tar.display()
            );
        }
    }
    let osroot = env.cache().join("osroot");
    for e in fs::read_dir(&osroot).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            let meta = e.path().join("meta.json");
            assert!(meta.is_file(), "{what}: OS root {name} has no meta.json");
            let m: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(&meta).unwrap()).unwrap();
            let erofs = e.path().join("root.erofs");
            assert_eq!(
                m["erofs_sha256"]
                    .as_str()
                    .expect("meta.json names erofs_sha256"),
                sha256(&erofs),
                "{what}: OS root {name}: root.erofs is not the one its metadata names"
            );
        }
    }
    // The state directory was complete before these builds: nothing in it
    // may have changed (a build only reads it once it is complete).
    for rel in walk(&env.state()) {
        let n = rel.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            n == ".lock" || !n.starts_with('.'),
            "{what}: temporary {} in a complete state directory",
            rel.display()
        );
    }
}

/// No work directory or temporary is left anywhere a build writes.
fn check_no_leftovers(env: &Env, out: &Path) {
    for dir in [
        out.join(CLUSTER),
        out.join(CLUSTER).join("update"),
        env.cache().join("rootfs"),
        env.cache().join("osroot"),
    ] {
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{} still holds {left:?}", dir.display());
    }
}

/// Every file of a build and its mode: images 0600 (they hold the node's
/// keys), the XML and manifest 0644; the OS update bundle (the cluster's OS
/// root, kernel, initrd and entry: no node file, no secret) in one directory
/// per version, writable by its owner only; the state directory 0700/0600.
fn check_modes(env: &Env, out: &Path) {
    let dir = out.join(CLUSTER);
    let files: Vec<String> = walk(&dir).iter().map(|r| r.display().to_string()).collect();
    let (update, node): (Vec<&String>, Vec<&String>) =
        files.iter().partition(|f| f.starts_with("update"));
    assert_eq!(
        node,
        ["manifest.json", "worker-1.qcow2", "worker-1.xml"],
        "the node files of a build"
    );
    let version = update
        .iter()
        .find_map(|f| f.strip_prefix("update/").filter(|v| !v.contains('/')))
        .unwrap_or_else(|| panic!("no update/<version> directory in {files:?}"));
    let mut names: Vec<String> = update
        .iter()
        .filter_map(|f| f.strip_prefix(&format!("update/{version}/")))
        .map(|n| n.replace(version, "V"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 5, "the update bundle's files: {names:?}");
    assert_eq!(
        names[..4],
        [
            "SHA256SUMS",
            "hakube_V.conf",
            "hakube_V.initrd",
            "hakube_V.vmlinuz"
        ],
        "the update bundle's files"
    );
    assert!(
        names[4].starts_with("hakube_V_") && names[4].ends_with(".root.erofs"),
        "the update bundle's root image: {}",
        names[4]
    );
    for f in &update {
        assert_eq!(
            mode(&dir.join(f)) & 0o022,
            0,
            "{f} is writable by others than its owner"
        );
    }
    assert_eq!(mode(&dir.join("worker-1.qcow2")), 0o600);
    assert_eq!(mode(&dir.join("worker-1.xml")), 0o644);
    assert_eq!(mode(&dir.join("manifest.json")), 0o644);
    assert_eq!(mode(&env.state()), 0o700);
    for rel in walk(&env.state()) {
        let p = env.state().join(&rel);
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
}

#[test]
fn killed_builds_leave_no_partial_file_and_the_next_build_is_bit_identical() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the crash test needs root (mmdebstrap)"
    );
    let seed: u64 = std::env::var("HAKUBE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("crash_safety: seed {seed} (HAKUBE_CRASH_SEED={seed} repeats these kill points)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::Builder::new()
        .prefix("hakube-crash-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let mirror = match std::env::var_os("HAKUBE_TEST_MIRROR") {
        Some(m) => PathBuf::from(m),
        None => {
            let m = tmp.path().join("mirror");
            let st = Command::new(repo().join("tests/make-mirror"))
                .arg(&m)
                .status()
                .unwrap();
            assert!(st.success(), "tests/make-mirror failed");
            m
        }
    };
    let env = Env {
        dir: tmp.path().to_path_buf(),
        mirror,
        firstboot: firstboot_bin(),
    };
    let out = tmp.path().join("out");
    let t0 = Instant::now();

    // 1. Inside mmdebstrap, on a cold cache.
    let at = KillAt {
        stage: "base rootfs (mmdebstrap, cached)".into(),
        delay: Duration::from_millis(rng.random_range(2_000..20_000)),
    };
    run_and_kill(env.build(&out, false), &at);
    check_after_kill(&env, &out, &BTreeMap::new(), &format!("{at:?}"));
    assert!(
        walk(&env.cache().join("rootfs"))
            .iter()
            .all(|r| is_hidden(r)),
        "a base killed inside mmdebstrap left a cache entry"
    );
    let state_before = tree_hashes(&env.state());

    // 2. The uninterrupted build: the reference, and the stage list.
    let reference_out = tmp.path().join("reference");
    let (json, _) = run_ok(env.build(&reference_out, true));
    let result: serde_json::Value = serde_json::from_str(&json).unwrap();
    check_modes(&env, &reference_out);
    check_no_leftovers(&env, &reference_out);
    let reference = tree_hashes(&reference_out.join(CLUSTER));
    let qcow2 = reference[Path::new("worker-1.qcow2")].clone();
    assert_eq!(tree_hashes(&env.state()), state_before, "the state changed");
    let stages: Vec<(String, f64)> = result["timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["seconds"].as_f64().unwrap(),
            )
        })
        .collect();
    let os_key = result["cache"]["osRootKey"].as_str().unwrap().to_string();
    eprintln!(
        "crash_safety: reference build after {:.0}s: {} stages",
        t0.elapsed().as_secs_f64(),
        stages.len()
    );

    // 3. Every stage boundary, then random points inside the long stages.
    let mut points: Vec<KillAt> = stages
        .iter()
        .map(|(s, _)| KillAt {
            stage: s.clone(),
            delay: Duration::ZERO,
        })
        .collect();
    for (stage, secs) in &stages {
        let long = ["OS root erofs", "var partition", "GPT disk", "qcow2"]
            .iter()
            .any(|k| stage.contains(k));
        if long {
            let f: f64 = rng.random_range(0.1..0.9);
            points.push(KillAt {
                stage: stage.clone(),
                delay: Duration::from_secs_f64(secs * f),
            });
        }
    }
    for at in &points {
        if at.stage.starts_with("OS root erofs") && !at.delay.is_zero() {
            // Make the OS root cold, so the kill lands inside mkfs.erofs & co.
            fs::remove_dir_all(env.cache().join("osroot").join(&os_key)).unwrap();
        }
        let what = format!("killed at {} + {:?}", at.stage, at.delay);
        run_and_kill(env.build(&out, false), at);
        check_after_kill(&env, &out, &reference, &what);
        eprintln!(
            "crash_safety: {what}: ok ({:.0}s)",
            t0.elapsed().as_secs_f64()
        );
    }

    // 4. The next build succeeds, sweeps what the kills left, and gives the
    // same bytes; the state directory is what it was.
    run_ok(env.build(&out, false));
    check_no_leftovers(&env, &out);
    check_modes(&env, &out);
    let after = tree_hashes(&out.join(CLUSTER));
    assert_eq!(after[Path::new("worker-1.qcow2")], qcow2, "qcow2 differs");
    assert_eq!(after, reference);
    assert_eq!(tree_hashes(&env.state()), state_before, "the state changed");
    eprintln!(
        "crash_safety: {} kill points in {:.0}s",
        points.len() + 1,
        t0.elapsed().as_secs_f64()
    );
}

/// `hakube-build render` killed at random moments while it creates a new
/// state directory: what is left holds only complete files, and the next
/// render completes it; two later renders are identical.
#[test]
fn killed_state_creation_leaves_only_complete_secrets() {
    let seed: u64 = std::env::var("HAKUBE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("state crash: seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let render = |state: &Path, out: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hakube-build"));
        c.arg("render")
            .arg("--state")
            .arg(state)
            .arg("--out")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        c
    };
    // How long creating a state directory and rendering takes here: the
    // kill points are spread over that whole time.
    let t = Instant::now();
    let full = render(&tmp.path().join("state-full"), &tmp.path().join("out-full"))
        .output()
        .unwrap();
    assert!(
        full.status.success(),
        "{}",
        String::from_utf8_lossy(&full.stderr)
    );
    let whole = t.elapsed().as_millis() as u64;
    for i in 0..6 {
        let state = tmp.path().join(format!("state-{i}"));
        let out = tmp.path().join(format!("out-{i}"));
        let mut child = render(&state, &out).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(5..whole.max(10))));
        killpg(child.id(), "KILL");
        child.wait().unwrap();
        // Left now: complete files under final names (a `.tmp-*` being
        // written when the kill came is not a final name).
        for rel in walk(&state) {
            let p = state.join(&rel);
            let n = rel.file_name().unwrap().to_string_lossy().into_owned();
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&p), want, "{}", p.display());
            if n.ends_with(".key") || n.ends_with(".crt") {
                let text = fs::read_to_string(&p).unwrap();
                assert!(
                    text.starts_with("-----BEGIN ") && text.trim_end().ends_with("-----"),
                    "{} is not a whole PEM file",
                    p.display()
                );
            }
        }
        for rel in walk(&out) {
            let n = rel.to_string_lossy().into_owned();
            if !is_hidden(&rel) && rel.components().count() == 1 && out.join(&rel).is_dir() {
                assert_eq!(mode(&out.join(&rel)), 0o700, "render tree {n} not private");
            }
        }
        let files = walk(&state)
            .iter()
            .filter(|r| state.join(r).is_file())
            .count();
        let trees = walk(&out)
            .iter()
            .filter(|r| r.components().count() == 1)
            .count();
        eprintln!("state crash {i}: killed with {files} state files and {trees} outputs written");
        // The next render completes the state; renders are then identical.
        let again = out.clone();
        let third = tmp.path().join(format!("third-{i}"));
        for o in [&again, &third] {
            let r = render(&state, o).output().unwrap();
            assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        }
        assert_eq!(tree_hashes(&again), tree_hashes(&third));
        for rel in walk(&state) {
            let n = rel.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                n == ".lock" || !n.starts_with('.'),
                "temporary {n} not swept"
            );
        }
        for rel in walk(&out) {
            assert!(
                !is_hidden(&rel),
                "render temporary {} not swept",
                rel.display()
            );
        }
        assert_eq!(mode(&again), 0o700);
        assert_eq!(mode(&again.join("master-1")), 0o700);
        assert_eq!(mode(&again.join("master-1.ign")), 0o600);
        let key = again.join("master-1/etc/kubernetes/pki/ca.key");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
