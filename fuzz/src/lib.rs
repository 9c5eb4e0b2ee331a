//! farmlog's fuzz harnesses, shared by the cargo-fuzz targets in
//! `fuzz_targets/` and by the corpus replay test of the main workspace
//! (`engine/tests/fuzz_corpus.rs`), which includes `harness.rs` and
//! `apply.rs` directly.

mod apply;
mod harness;

pub use apply::*;
pub use harness::*;
