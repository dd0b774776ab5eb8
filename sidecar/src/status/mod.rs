//! What the sidecar knows about itself.
mod board;

pub use board::*;
