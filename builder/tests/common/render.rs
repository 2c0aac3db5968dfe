//! Rendering for tests: fixed join credentials, so rendered files (and the
//! golden files compared with them) never depend on a state directory.

use hakube_build::render::JoinCredentials;

pub fn fixed_creds() -> JoinCredentials {
    JoinCredentials {
        token: "abcdef.0123456789abcdef".into(),
        ca_cert_hash: format!("sha256:{}", "0f".repeat(32)),
        cluster_initialised: false,
    }
}
