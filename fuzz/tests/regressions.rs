//! Replays every input kept in fuzz/regressions/<harness>/ (crashes the
//! fuzzers found, plus hand-written edge cases) through the same harness the
//! fuzz target runs, on stable and without libFuzzer: a fixed parser stays
//! fixed. Runs in `scripts/test-all`.

use std::path::Path;

#[test]
fn every_regression_input_is_handled_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for (name, harness) in hakube_fuzz::HARNESSES {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(
            !inputs.is_empty(),
            "{}: no regression inputs",
            dir.display()
        );
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            let r = std::panic::catch_unwind(|| harness(&data));
            assert!(r.is_ok(), "{} panicked on {}", name, input.display());
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} regression inputs");
}

#[test]
fn every_fuzz_target_has_a_harness_and_a_regression_dir() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut targets: Vec<String> = std::fs::read_dir(dir.join("fuzz_targets"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            p.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    targets.sort();
    let mut harnesses: Vec<String> = hakube_fuzz::HARNESSES
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    harnesses.sort();
    assert_eq!(targets, harnesses);
    for t in &targets {
        assert!(
            dir.join("regressions").join(t).is_dir(),
            "fuzz/regressions/{t} missing"
        );
    }
}
