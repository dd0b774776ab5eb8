//! The sidecar configuration the injector renders from the annotations in
//! deploy/k8s/apps/backend.yaml and frontend.yaml (with the chart's default
//! values) is the one those manifests carried by hand before the injector
//! (ConfigMaps backend-sidecar and frontend-sidecar, kept as
//! tests/fixtures/*-sidecar.toml). Both are loaded by zt-sidecar's own loader —
//! the hand-written one from a file (`--config`, as those pods ran it), the
//! rendered one from ZT_CONFIG (as injected pods run it) — and compared key
//! by key.

mod common;

use std::collections::BTreeMap;

use common::*;
use zt_injector::annotations::PREFIX;
use zt_injector::render;
use zt_injector::settings::Settings;
use zt_sidecar::config::{Config, ConfigOrigin, ENV_CONFIG};

/// The injector's settings as the chart renders them with its default values.
fn chart_settings() -> Settings {
    let run = helm_template("zt-injector", "zt-injector", &[]);
    assert_eq!(run.code, 0, "helm template: {}", run.stderr);
    let text = documents(&run.stdout)
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .and_then(|d| d["data"]["injector.toml"].as_str().map(str::to_string))
        .unwrap();
    Settings::parse(
        &text,
        &BTreeMap::from([
            ("POD_NAME".to_string(), "zt-injector-0".to_string()),
            ("POD_NAMESPACE".to_string(), "zt-injector".to_string()),
        ]),
    )
    .unwrap()
}

fn rendered(notes: &BTreeMap<String, String>, settings: &Settings) -> String {
    render::for_pod(notes, settings)
        .unwrap_or_else(|r| panic!("{r}"))
        .expect("annotations of an injected pod")
        .toml
}

/// The annotations of an app's pod template, as deployed.
fn deployed(app: &str) -> BTreeMap<String, String> {
    template_annotations(&format!("deploy/k8s/apps/{app}.yaml"), app)
}

/// Every leaf of the effective configuration, as `dotted.key[i] = value`.
fn flatten(v: &toml::Value, path: &str, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(v, &p, out);
            }
        }
        toml::Value::Array(a) if a.iter().any(|e| e.is_table()) => {
            for (i, e) in a.iter().enumerate() {
                flatten(e, &format!("{path}[{i}]"), out);
            }
        }
        other => {
            out.insert(path.to_string(), other.to_string());
        }
    }
}

fn keys(config: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    flatten(&toml::from_str(&config.to_toml()).unwrap(), "", &mut out);
    out
}

/// The number of keys compared, or every key that differs.
fn compare(name: &str, hand: &str, injected: &str) -> Result<usize, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecar.toml");
    std::fs::write(&file, hand).unwrap();
    let none = BTreeMap::<String, String>::new();
    let from_file = Config::load_from(&ConfigOrigin::File(file), &none).unwrap();
    let env = BTreeMap::from([(ENV_CONFIG.to_string(), injected.to_string())]);
    let from_env = Config::load_from(&ConfigOrigin::Env, &env).unwrap();
    let (a, b) = (keys(&from_file), keys(&from_env));
    let mut diffs = Vec::new();
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if a.get(k) != b.get(k) {
            diffs.push(format!(
                "  {k}: hand-written {} / injected {}",
                a.get(k).map_or("(absent)", String::as_str),
                b.get(k).map_or("(absent)", String::as_str)
            ));
        }
    }
    if !diffs.is_empty() {
        return Err(format!(
            "{name}: the injected configuration differs from the hand-written one:\n{}\n--- injected ---\n{injected}",
            diffs.join("\n")
        ));
    }
    println!("{name}: {} keys, all equal", a.len());
    Ok(a.len())
}

#[test]
fn the_backend_annotations_render_the_hand_written_backend_sidecar_config() {
    let s = chart_settings();
    let n = compare(
        "backend",
        &fixture("backend-sidecar.toml"),
        &rendered(&deployed("backend"), &s),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(n >= 50, "only {n} keys compared");
}

#[test]
fn the_frontend_annotations_render_the_hand_written_frontend_sidecar_config() {
    let s = chart_settings();
    let n = compare(
        "frontend",
        &fixture("frontend-sidecar.toml"),
        &rendered(&deployed("frontend"), &s),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(n >= 12, "only {n} keys compared");
}

/// The comparison can fail: one annotation changed, one key differs.
#[test]
fn a_changed_annotation_shows_up_as_a_differing_key() {
    let s = chart_settings();
    let mut changed = deployed("backend");
    changed.remove(&format!("{PREFIX}secrets-group"));
    let hand = fixture("backend-sidecar.toml");
    let msg = compare("backend", &hand, &rendered(&changed, &s)).unwrap_err();
    assert!(
        msg.contains("secrets.group: hand-written 10001 / injected 10000"),
        "{msg}"
    );
}
