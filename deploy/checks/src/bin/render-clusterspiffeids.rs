//! Writes policies/spire/k8s/clusterspiffeids.yaml and the lab's
//! policies/spire/lab/entries.txt from policies/spire/workloads.toml.
//!
//! `cargo run -p deploy-checks --bin render-clusterspiffeids [-- --check]`
//! With `--check`, writes nothing and exits 1 if the committed file is stale.

use std::process::ExitCode;

use anyhow::Context;
use deploy_checks::spire::{Workloads, LAB_ENTRIES_PATH, RENDERED_PATH};

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
    let workloads = Workloads::load()?;
    let mut code = ExitCode::SUCCESS;
    for (file, rendered) in [
        (RENDERED_PATH, workloads.render()),
        (LAB_ENTRIES_PATH, workloads.render_lab_entries()),
    ] {
        let path = deploy_checks::repo::root().join(file);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if check {
            if current == rendered {
                println!("{file} is up to date");
            } else {
                eprintln!(
                    "{file} is stale: run cargo run -p deploy-checks --bin render-clusterspiffeids"
                );
                code = ExitCode::FAILURE;
            }
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, rendered)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {file}");
    }
    Ok(code)
}
