pub mod checks;
pub mod cluster;
pub mod harness;
pub mod vm;
