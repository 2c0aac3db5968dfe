//! TEST DOUBLE. (Skeleton.)
fn main() {}
