//! hakube-build: bakes one bootable, immutable qcow2 per node of a
//! highly-available kubeadm cluster.
//!
//! The pipeline, top to bottom (see [`image::build`]): resolve spec -> load
//! secrets -> resolve artifacts -> base rootfs (cached) -> per-node tree ->
//! partitions -> disk -> qcow2 -> manifest.

pub mod artifacts;
pub mod cache;
pub mod cli;
pub mod errors;
pub mod image;
pub mod images;
pub mod pki;
pub mod private;
pub mod render;
pub mod spec;
pub mod summary;
pub mod tree;
pub mod ui;
