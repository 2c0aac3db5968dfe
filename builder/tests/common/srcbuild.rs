//! The real binaries built from source (`HAKUBE_SRCBUILD_BIN`, the directory
//! `srcbuild/build` prints). A test that needs one fails, never skips, when
//! the variable is unset or the binary is missing.

use std::path::{Path, PathBuf};

pub fn srcbuild_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("HAKUBE_SRCBUILD_BIN").unwrap_or_else(|| {
        panic!(
            "HAKUBE_SRCBUILD_BIN is not set: point it at the directory of the binaries built \
             from source (`srcbuild/build` prints it) to run this test; it needs {name}"
        )
    });
    let path = Path::new(&dir).join(name);
    assert!(
        path.is_file(),
        "HAKUBE_SRCBUILD_BIN={}: no {name} there",
        Path::new(&dir).display()
    );
    path
}
