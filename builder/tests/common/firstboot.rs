//! hakube-firstboot of this tree for the tests that build images (every image
//! carries it): (re)built with the workspace's own feature set, so cargo
//! reuses what `cargo test --workspace` compiled and does nothing when the
//! binary is fresh, and an image never carries a stale one.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn firstboot_bin() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_hakube-build"));
    let release = exe.parent().and_then(|p| p.file_name()) == Some("release".as_ref());
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["build", "-q", "--workspace", "--bin", "hakube-firstboot"]);
    if release {
        c.arg("--release");
    }
    let out = c.output().expect("running cargo");
    assert!(
        out.status.success(),
        "building hakube-firstboot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe.with_file_name("hakube-firstboot")
}
