//! The systemd-sysupdate transfer definitions shipped in the OS root
//! (`/usr/lib/sysupdate.d`), made from the names in this crate so they cannot
//! disagree with the builder's bundles or the node's reader. Source: the
//! directory hakube-firstboot stages a verified bundle in; targets: a root
//! slot (labelled `hakube_@v`, PARTUUID from the bundle's `@u`), the kernel
//! and initrd on the ESP, and the boot entry with 3 tries. The running
//! version (`%A`, IMAGE_VERSION of os-release) is never overwritten; two
//! versions are kept (A/B).

use crate::{bundle, IMAGE_ID, STAGE_DIR, TRIES};

/// Directory of the definitions inside the OS root.
pub const DEFINITIONS_DIR: &str = "usr/lib/sysupdate.d";

fn common() -> String {
    "[Transfer]\nProtectVersion=%A\nVerify=no\n".to_string()
}

/// `(file name, contents)` of every transfer, in the order sysupdate runs
/// them (the entry last, so no entry points at files not yet written).
pub fn transfers() -> Vec<(String, String)> {
    let v = crate::ImageVersion::from_epoch(0).expect("epoch 0 is valid");
    // The bundle's names with the wildcards in place of version and UUID.
    let pat = |name: String| {
        name.replace(v.as_str(), "@v")
            .replace("00000000-0000-0000-0000-000000000000", "@u")
    };
    let nil = uuid::Uuid::nil();
    let src = |pattern: String| {
        format!("[Source]\nType=regular-file\nPath=/{STAGE_DIR}\nMatchPattern={pattern}\n")
    };
    vec![
        (
            "10-root.transfer".into(),
            format!(
                "# The OS root (erofs) into the other root slot.\n{}\n{}\n\
                 [Target]\nType=partition\nPath=auto\nMatchPattern={IMAGE_ID}_@v\n\
                 MatchPartitionType=root\nReadOnly=yes\nInstancesMax=2\n",
                common(),
                src(pat(bundle::root(&v, &nil)))
            ),
        ),
        (
            "20-kernel.transfer".into(),
            format!(
                "{}\n{}\n[Target]\nType=regular-file\nPathRelativeTo=esp\nPath=/{IMAGE_ID}\n\
                 MatchPattern={}\nInstancesMax=2\n",
                common(),
                src(pat(bundle::kernel(&v))),
                pat(bundle::kernel(&v))
            ),
        ),
        (
            "30-initrd.transfer".into(),
            format!(
                "{}\n{}\n[Target]\nType=regular-file\nPathRelativeTo=esp\nPath=/{IMAGE_ID}\n\
                 MatchPattern={}\nInstancesMax=2\n",
                common(),
                src(pat(bundle::initrd(&v))),
                pat(bundle::initrd(&v))
            ),
        ),
        (
            "90-entry.transfer".into(),
            format!(
                "# The boot entry, counted: {TRIES} tries, then systemd-boot falls back.\n{}\n{}\n\
                 [Target]\nType=regular-file\nPathRelativeTo=esp\nPath=/loader/entries\n\
                 MatchPattern={IMAGE_ID}_@v+@l-@d.conf\nMatchPattern={IMAGE_ID}_@v+@l.conf\n\
                 MatchPattern={IMAGE_ID}_@v.conf\nTriesLeft={TRIES}\nTriesDone=0\n\
                 InstancesMax=2\n",
                common(),
                src(pat(bundle::entry(&v)))
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_match_the_bundle_and_layout_names() {
        let t = transfers();
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "10-root.transfer",
                "20-kernel.transfer",
                "30-initrd.transfer",
                "90-entry.transfer"
            ]
        );
        let root = &t[0].1;
        assert!(
            root.contains("MatchPattern=hakube_@v_@u.root.erofs\n"),
            "{root}"
        );
        assert!(
            root.contains("Type=partition\nPath=auto\nMatchPattern=hakube_@v\n"),
            "{root}"
        );
        assert!(
            root.contains("Path=/var/lib/hakube/update/staged\n"),
            "{root}"
        );
        let entry = &t[3].1;
        assert!(
            entry.contains("MatchPattern=hakube_@v.conf\n\n[Target]"),
            "{entry}"
        );
        assert!(
            entry.contains("MatchPattern=hakube_@v+@l-@d.conf\n"),
            "{entry}"
        );
        assert!(entry.contains("TriesLeft=3\n"), "{entry}");
        for (_, body) in &t {
            assert!(body.contains("ProtectVersion=%A\n"));
            assert!(
                !body.contains("1970"),
                "a version leaked into a pattern: {body}"
            );
        }
        assert!(t[1].1.contains("MatchPattern=hakube_@v.vmlinuz\n"));
    }
}
