//! The build's registry flags for tests: every upstream registry mirrored by
//! the test registry (tests/registry start: HAKUBE_TEST_REGISTRY and
//! HAKUBE_TEST_REGISTRY_CA), which holds the images built from source.

/// `--registry-mirror` for every upstream registry and `--registry-ca`.
pub fn registry_args() -> Vec<String> {
    let reg = std::env::var("HAKUBE_TEST_REGISTRY").expect(
        "HAKUBE_TEST_REGISTRY=127.0.0.1:PORT must name the test registry holding the real images \
         (tests/registry start)",
    );
    let ca = std::env::var("HAKUBE_TEST_REGISTRY_CA")
        .expect("HAKUBE_TEST_REGISTRY_CA must name the test registry's CA (PEM)");
    let mut args = Vec::new();
    for r in ["registry.k8s.io", "ghcr.io", "docker.io", "quay.io"] {
        args.push("--registry-mirror".to_string());
        args.push(format!("{r}=https://{reg}/{r}"));
    }
    args.push("--registry-ca".to_string());
    args.push(ca);
    args
}
