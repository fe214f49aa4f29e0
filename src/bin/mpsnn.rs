//! The `mpsnn` command-line tool (in progress).
fn main() {}
