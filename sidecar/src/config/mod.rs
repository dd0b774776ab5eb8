//! Configuration: TOML in, typed and validated [`Config`] out.
mod loader;

pub use loader::*;

#[cfg(test)]
mod tests;
