//! The node tree as an Ignition config (spec 3.4.0), for users who inject
//! per-node configuration into one shared image instead of baking it.

use crate::tree::{FileEntry, FileTree};
use base64::Engine as _;
use ignition_config::v3_4 as ign;

pub const IGNITION_VERSION: &str = "3.4.0";

/// Every file of `tree` as an Ignition file (inline `data:` URL, mode,
/// overwrite) and every symlink as a link. Paths become absolute (`/etc/...`).
/// Deterministic: the tree is ordered and the JSON has fixed field order.
pub fn ignition(tree: &FileTree) -> String {
    let mut files = Vec::new();
    let mut links = Vec::new();
    for (path, entry) in tree.iter() {
        let abs = format!("/{}", path.display());
        match entry {
            FileEntry::File { contents, mode } => {
                let mut f = ign::File::new(abs);
                let mut res = ign::Resource::default();
                res.source = Some(format!(
                    "data:;base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(contents)
                ));
                f.contents = Some(res);
                f.mode = Some(i64::from(*mode));
                f.overwrite = Some(true);
                files.push(f);
            }
            FileEntry::Symlink { target } => {
                let mut l = ign::Link::new(abs);
                l.target = Some(target.clone());
                l.overwrite = Some(true);
                links.push(l);
            }
        }
    }
    let mut storage = ign::Storage::default();
    storage.files = (!files.is_empty()).then_some(files);
    storage.links = (!links.is_empty()).then_some(links);
    let mut config = ign::Config::new(ign::Ignition::new(IGNITION_VERSION.to_string()));
    config.storage = Some(storage);
    let mut s = serde_json::to_string_pretty(&config).expect("an Ignition config serialises");
    s.push('\n');
    s
}
