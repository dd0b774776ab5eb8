//! Writes policies/spire/k8s/clusterspiffeids.yaml from policies/spire/workloads.toml.
//!
//! `cargo run -p deploy-checks --bin render-clusterspiffeids [-- --check]`
//! With `--check`, writes nothing and exits 1 if the committed file is stale.

use std::process::ExitCode;

use anyhow::Context;
use deploy_checks::spire::{Workloads, RENDERED_PATH};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("render-clusterspiffeids: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            anyhow::bail!("unknown argument {other:?} (usage: render-clusterspiffeids [--check])")
        }
    };
    let rendered = Workloads::load()?.render();
    let path = deploy_checks::repo::root().join(RENDERED_PATH);
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if check {
        if current == rendered {
            println!("{RENDERED_PATH} is up to date");
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("{RENDERED_PATH} is stale: run cargo run -p deploy-checks --bin render-clusterspiffeids");
        return Ok(ExitCode::FAILURE);
    }
    std::fs::write(&path, rendered).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {RENDERED_PATH}");
    Ok(ExitCode::SUCCESS)
}
