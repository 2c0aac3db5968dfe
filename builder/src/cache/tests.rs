//! Pruning on fixture cache directories. Use times are set explicitly and
//! the build's start is passed in, so nothing here depends on the clock.

use super::*;
use std::time::{Duration, UNIX_EPOCH};

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

/// A cache key of repeated `c`.
fn key(c: char) -> String {
    c.to_string().repeat(64)
}

fn set_used(path: &Path, s: u64) {
    File::open(path).unwrap().set_modified(at(s)).unwrap();
}

/// `<dir>/<key>/` with a file of `size` bytes, last used at `used`.
fn dir_entry(dir: &Path, k: &str, size: usize, used: u64) -> PathBuf {
    let e = dir.join(k);
    fs::create_dir_all(&e).unwrap();
    fs::write(e.join("root.erofs"), vec![0u8; size]).unwrap();
    fs::write(e.join("meta.json"), b"{}").unwrap();
    set_used(&e, used);
    e
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

const START: u64 = 2_000_000;

#[test]
fn prune_removes_old_entries_and_keeps_used_newest_and_in_progress_ones() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("osroot");
    fs::create_dir(&dir).unwrap();
    // This build's entry is the oldest of all: still kept.
    dir_entry(&dir, &key('a'), 10, 100);
    for (c, used) in [('b', 200), ('c', 300), ('d', 400), ('e', 500)] {
        dir_entry(&dir, &key(c), 1000, used);
    }
    // Held by a build right now, though its use time is old.
    let held = dir_entry(&dir, &key('9'), 10, 50);
    let lease = Lease::take(&held).unwrap().unwrap();
    set_used(&held, 50);
    // A build in progress writing an entry, and names that are no entries.
    let writing = WorkDir::new_in(&dir, ".build-").unwrap();
    fs::create_dir(writing.join("out")).unwrap();
    fs::create_dir(dir.join("not-a-key")).unwrap();
    fs::write(dir.join(format!("{}.json", key('7'))), b"{}").unwrap();

    let used = [key('a')].into_iter().collect();
    let report = prune(cache.path(), Kind::Osroot, &used, 2, at(START))
        .unwrap()
        .unwrap();

    assert_eq!(report.removed, [key('b'), key('c')]);
    assert_eq!(report.removed_bytes, 2 * 1002);
    // a (this build's), e and d (the 2 newest others), 9 (held).
    assert_eq!((report.kept, report.busy), (4, 1));
    let left = names(&dir);
    for k in [key('a'), key('d'), key('e'), key('9')] {
        assert!(left.contains(&k), "{k} was removed: {left:?}");
    }
    assert!(!left.contains(&key('b')) && !left.contains(&key('c')));
    assert!(
        writing.join("out").is_dir(),
        "an entry being written is left alone"
    );
    assert!(left.contains("not-a-key") && left.contains(&format!("{}.json", key('7'))));
    assert_eq!(
        left.len(),
        7,
        "no pruner's work directory is left: {left:?}"
    );
    assert_eq!(
        report.to_string(),
        "cache: pruned 2 osroot entries (0 MB), kept 4 (1 in use by another build)"
    );

    // Let go, the held entry is the oldest and goes; one another build
    // used after ours started stays even with no other entry to keep.
    drop(lease);
    dir_entry(&dir, &key('f'), 10, START + 10);
    let again = prune(cache.path(), Kind::Osroot, &used, 0, at(START))
        .unwrap()
        .unwrap();
    assert_eq!(again.removed, [key('9'), key('d'), key('e')]);
    assert_eq!((again.kept, again.busy), (2, 1));
    assert!(names(&dir).contains(&key('f')) && names(&dir).contains(&key('a')));
}

#[test]
fn rootfs_entries_go_with_their_tar_and_leftover_tars_are_swept() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("rootfs");
    fs::create_dir(&dir).unwrap();
    for (c, used) in [('a', 100), ('b', 200), ('c', 300)] {
        fs::write(dir.join(format!("{}.tar", key(c))), vec![0u8; 100]).unwrap();
        fs::write(dir.join(format!("{}.json", key(c))), b"{}").unwrap();
        set_used(&dir.join(format!("{}.json", key(c))), used);
    }
    // A tar without its metadata: its ctime is now, after this START (a
    // build may be between its two renames), so it stays.
    let orphan = format!("{}.tar", key('d'));
    fs::write(dir.join(&orphan), vec![0u8; 7]).unwrap();
    let none = BTreeSet::new();
    let r = prune(cache.path(), Kind::Rootfs, &none, 1, at(START))
        .unwrap()
        .unwrap();
    assert_eq!(r.removed, [key('a'), key('b')]);
    assert_eq!((r.removed_bytes, r.kept), (2 * 102, 1));
    let mut want: BTreeSet<String> = [format!("{}.tar", key('c')), format!("{}.json", key('c'))]
        .into_iter()
        .collect();
    want.insert(orphan.clone());
    assert_eq!(names(&dir), want);

    // A build starting later finds the leftover older than itself.
    let later = SystemTime::now() + Duration::from_secs(3600);
    let r = prune(cache.path(), Kind::Rootfs, &none, 1, later)
        .unwrap()
        .unwrap();
    assert_eq!((r.removed, r.removed_bytes), (vec![orphan], 7));
    assert_eq!(names(&dir).len(), 2);
}

#[test]
fn prune_all_skips_missing_kinds_and_reports_per_kind() {
    let cache = tempfile::tempdir().unwrap();
    let store = cache.path().join("containerd-store");
    fs::create_dir(&store).unwrap();
    dir_entry(&store, &key('1'), 1, 10);
    dir_entry(&store, &key('2'), 1, 20);
    let mut used = Used::default();
    used.add(Kind::ContainerdStore, &key('1'), None);
    used.add(Kind::Osroot, &key('x'), None);
    let out: Vec<Pruned> = prune_all(cache.path(), &used, 0, at(START))
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        out.len(),
        1,
        "no rootfs or osroot directory: nothing to say"
    );
    assert_eq!(out[0].kind, Kind::ContainerdStore);
    assert_eq!((out[0].removed.clone(), out[0].kept), (vec![key('2')], 1));
    let json = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(json["kind"], "containerd-store");
    assert_eq!(json["removedBytes"], 3);
}

#[test]
fn reports_read_as_one_line() {
    let mut p = Pruned {
        kind: Kind::Osroot,
        removed: vec!["a".into(), "b".into()],
        removed_bytes: 960_000_000,
        kept: 4,
        busy: 0,
    };
    assert_eq!(
        p.to_string(),
        "cache: pruned 2 osroot entries (960 MB), kept 4"
    );
    p.removed.truncate(1);
    p.removed_bytes = 1_440_000_000;
    assert_eq!(
        p.to_string(),
        "cache: pruned 1 osroot entry (1.4 GB), kept 4"
    );
    p.removed.clear();
    p.busy = 1;
    assert_eq!(
        p.to_string(),
        "cache: nothing to prune in osroot, kept 4 (1 in use by another build)"
    );
    assert_eq!(human_bytes(12_600_000_000), "13 GB");
}

#[test]
fn markers_match_the_writers_layout() {
    let c = Path::new("/c");
    let k = key('a');
    assert_eq!(
        Kind::Rootfs.marker(&Kind::Rootfs.dir(c), &k),
        Path::new("/c/rootfs").join(format!("{k}.json"))
    );
    assert_eq!(
        Kind::Osroot.marker(&Kind::Osroot.dir(c), &k),
        Path::new("/c/osroot").join(&k)
    );
    assert_eq!(
        Kind::ContainerdStore.dir(c),
        Path::new("/c/containerd-store")
    );
    assert!(is_key(&k) && !is_key(&k.to_uppercase()) && !is_key("abc"));
}
