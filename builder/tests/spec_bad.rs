//! Every file in fixtures/bad-specs/ is a cluster spec hakube must refuse.
//! Each starts with two header comments:
//!   # expect-field: nodes[2].network.address   (empty for whole-file errors)
//!   # expect-message: <fragment of the message>
//! The test loads each with `spec::load` and checks the refusal names that
//! field, that file, and says what the fragment says.

use hakube_build::spec;
use std::path::{Path, PathBuf};

const MIN_FIXTURES: usize = 35;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-specs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn header(text: &str, key: &str, file: &Path) -> String {
    let prefix = format!("# {key}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{} has no `{prefix}` header", file.display()))
}

#[test]
fn every_bad_spec_is_refused_naming_its_field() {
    let files = fixtures();
    assert!(
        files.len() >= MIN_FIXTURES,
        "only {} bad-spec fixtures, at least {MIN_FIXTURES} expected",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("fixture readable");
        let field = header(&text, "expect-field", file);
        let fragment = header(&text, "expect-message", file);
        assert!(
            !fragment.is_empty(),
            "{}: empty expect-message",
            file.display()
        );
        match spec::load(Some(file)) {
            Ok(_) => failures.push(format!("{}: accepted", file.display())),
            Err(e) => {
                if e.field != field {
                    failures.push(format!(
                        "{}: field {:?}, expected {field:?} ({e})",
                        file.display(),
                        e.field
                    ));
                } else if !e.message.contains(&fragment) {
                    failures.push(format!(
                        "{}: message {:?} lacks {fragment:?}",
                        file.display(),
                        e.message
                    ));
                } else if e.file != file.display().to_string() {
                    failures.push(format!("{}: names file {:?}", file.display(), e.file));
                } else if !e.to_string().contains(&file.display().to_string()) {
                    failures.push(format!("{}: display lacks the file: {e}", file.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fixture_names_are_numbered_and_unique() {
    let files = fixtures();
    let mut numbers: Vec<&str> = files
        .iter()
        .map(|f| {
            let name = f.file_name().and_then(|n| n.to_str()).expect("utf-8 name");
            let (num, _) = name
                .split_once('-')
                .unwrap_or_else(|| panic!("{name}: NN-short-name.yaml expected"));
            assert!(num.chars().all(|c| c.is_ascii_digit()), "{name}");
            num
        })
        .collect();
    let n = numbers.len();
    numbers.dedup();
    assert_eq!(numbers.len(), n, "two fixtures share a number");
}

#[test]
fn yaml_errors_carry_line_and_column() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-specs");
    let file = fixtures()
        .into_iter()
        .find(|f| f.to_string_lossy().contains("yaml-unknown-field"))
        .unwrap_or_else(|| panic!("no yaml-unknown-field fixture in {}", dir.display()));
    let e = spec::load(Some(&file)).unwrap_err();
    // The fixture's typo is on line 28 (two header lines + line 26 of the spec), column 15.
    assert!(e.message.contains("(line 28, column 15)"), "{e}");
    assert!(e.message.contains("expected one of"), "{e}");
}

#[test]
fn a_missing_file_is_a_spec_error_naming_it() {
    let e = spec::load(Some(Path::new("/nonexistent/cluster.yaml"))).unwrap_err();
    assert_eq!(e.file, "/nonexistent/cluster.yaml");
    assert!(e.message.contains("cannot read"), "{e}");
}
