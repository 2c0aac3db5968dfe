pub mod checks;
pub mod cluster;
pub mod dns;
#[path = "../common/firstboot.rs"]
pub mod firstboot;
pub mod harness;
pub mod vm;
