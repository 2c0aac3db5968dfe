pub mod checks;
pub mod cluster;
pub mod dns;
pub mod harness;
pub mod vm;
