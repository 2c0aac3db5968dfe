//! `hakube-build summary` as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hakube-build"))
        .args(args)
        .output()
        .expect("hakube-build runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn summary_with_no_arguments_shows_the_default_cluster() {
    let out = run(&["summary"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("hakube"), "{stdout}");
    assert!(stdout.contains("master-1 *"), "{stdout}");
    assert!(stdout.contains("worker-1"), "{stdout}");
    assert!(stdout.contains("192.168.122.10:8443"), "{stdout}");
    assert!(stdout.contains("stacked"), "{stdout}");
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
}

#[test]
fn summary_json_is_machine_readable() {
    let out = run(&["summary", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["name"], "hakube");
    assert_eq!(v["initNode"], "master-1");
    assert_eq!(v["etcdTopology"], "stacked");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(4));
    assert_eq!(v["nodes"][3]["role"], "worker");
    assert_eq!(v["warnings"], serde_json::json!([]));
}

#[test]
fn summary_of_an_example_file() {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/examples/external-etcd.yaml");
    let out = run(&[
        "summary",
        "--cluster",
        file.to_str().expect("utf-8 path"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(
        v["etcdMembers"],
        serde_json::json!(["etcd-1", "etcd-2", "etcd-3"])
    );
}

#[test]
fn summary_prints_warnings_on_stderr() {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good-specs/even-etcd.yaml");
    let out = run(&[
        "summary",
        "--cluster",
        file.to_str().expect("utf-8 path"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains("2 members"),
        "{stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout stays JSON");
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(1));
}

#[test]
fn summary_of_a_bad_spec_exits_2_naming_file_and_field() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bad-specs/02-duplicate-address.yaml");
    let path = file.to_str().expect("utf-8 path");
    let out = run(&["summary", "--cluster", path]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(path), "{stderr}");
    assert!(stderr.contains("nodes[3].network.address"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
}

#[test]
fn summary_of_a_missing_file_exits_2() {
    let out = run(&["summary", "--cluster", "/nonexistent/cluster.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("/nonexistent/cluster.yaml"));
}

#[test]
fn summary_help_explains_every_flag() {
    let out = run(&["summary", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in ["--cluster", "--json", "--help"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(help.contains("embedded default cluster"), "{help}");
}
