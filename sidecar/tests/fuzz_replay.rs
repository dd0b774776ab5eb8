//! The fuzz targets' invariants in `cargo test`, without nightly or an
//! instrumented build: the committed corpus (fuzz/corpus/<target>/) replayed
//! through the functions the targets call (`zt_sidecar::fuzzing`), and
//! proptest properties of the proxy's normaliser and rule matcher and of
//! the configuration loader.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use zt_sidecar::config::Config;
use zt_sidecar::fuzzing;
use zt_sidecar::proxy::{authorise, normalise};

/// Every file of fuzz/corpus/<target>/ through `check`; a panic names the
/// file. At least two inputs must be `accepted` (so the invariants on what
/// passes are exercised, not only the refusals).
fn replay(target: &str, check: fn(&[u8]), accepted: fn(&[u8]) -> bool) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let (mut n, mut ok) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{} breaks an invariant (message above)", path.display());
        }
        n += 1;
        ok += usize::from(accepted(&data));
    }
    assert!(n >= 5, "{}: only {n} inputs", dir.display());
    assert!(ok >= 2, "{}: only {ok} inputs accepted", dir.display());
}

#[test]
fn proxy_corpus_replays() {
    replay("proxy_normalise", fuzzing::proxy, |data| {
        let rules = fuzzing::rules();
        fuzzing::proxy_input(data)
            .and_then(|(m, p, q)| normalise(m, p, q).ok())
            .is_some_and(|c| authorise(&rules, &c.path, &c.operation).is_ok())
    });
}

#[test]
fn config_corpus_replays() {
    replay("sidecar_config", fuzzing::config, |data| {
        std::str::from_utf8(data)
            .is_ok_and(|t| Config::parse(t, &BTreeMap::<String, String>::new()).is_ok())
    });
}

#[test]
fn inbound_head_corpus_replays() {
    replay(
        "inbound_head",
        fuzzing::inbound_head,
        fuzzing::inbound_head_forwards,
    );
}

/// Path segments as an attacker would spell them: plain, dot segments in
/// every encoding, encoded separators, bad escapes, non-ASCII.
fn segment() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "secret", "data", "github", "users", "metadata", "app", "config", "sys", "7", "..", ".",
        "%2e", "%2E", "%2e%2e", ".%2e", "%2f", "%2F", "%5c", "%5C", "/", "\\", "%00", "%0a", "%zz",
        "%", "%252e", "a b", "ä", "%C3%A4", "%ff", "?", "#", ";", "*",
    ]);
    prop::collection::vec(atoms, 0..3).prop_map(|v| v.concat())
}

fn query() -> impl Strategy<Value = Option<String>> {
    let key = prop::sample::select(vec![
        "list", "LIST", "scan", "help", "Help", "version", "Version", "cas", "li%73t", "x", "",
    ]);
    let value = prop::sample::select(vec![
        "true", "1", "0", "t", "False", "", "yes", "%zz", "a+b", "%0a", "%2f..",
    ]);
    let pair = (key, prop::bool::ANY, value).prop_map(|(k, eq, v)| {
        if eq {
            format!("{k}={v}")
        } else {
            k.to_string()
        }
    });
    let sep = prop::sample::select(vec!["&", "&&", ";"]);
    prop::option::of(prop::collection::vec((pair, sep), 0..4).prop_map(|v| {
        v.into_iter()
            .map(|(p, s)| format!("{p}{s}"))
            .collect::<String>()
    }))
}

/// A request below one of the rules' prefixes (or not), then more segments.
fn request() -> impl Strategy<Value = (String, String, Option<String>)> {
    let method = prop::sample::select(vec!["GET", "PUT", "POST", "DELETE", "LIST", "get", "PATCH"]);
    let prefix = prop::sample::select(vec![
        "/v1/secret/data/github/users/",
        "/v1/secret/metadata/github/users/",
        "/v1/secret/data/app/",
        "/v1/",
        "/v2/",
    ]);
    (
        method,
        prefix,
        prop::collection::vec(segment(), 0..6),
        query(),
    )
        .prop_map(|(m, p, segs, q)| (m.to_string(), format!("{p}{}", segs.join("/")), q))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn normalised_paths_never_hold_dot_segments_or_separators((m, path, q) in request()) {
        if let Ok(c) = normalise(&m, &path, q.as_deref()) {
            for seg in c.path.split('/') {
                prop_assert!(!seg.is_empty() && seg != "." && seg != "..", "{:?} -> {:?}", path, c.path);
                prop_assert!(!seg.contains('\\') && !seg.chars().any(char::is_control));
            }
        }
    }

    #[test]
    fn normalising_is_idempotent((m, path, q) in request()) {
        if let Ok(c) = normalise(&m, &path, q.as_deref()) {
            let again = normalise(&c.operation, &format!("/v1/{}", c.encoded), c.encoded_query().as_deref());
            prop_assert_eq!(again, Ok(c));
        }
    }

    #[test]
    fn the_rule_matcher_never_allows_a_path_outside_its_prefix((m, path, q) in request()) {
        let rules = fuzzing::rules();
        if let Ok(c) = normalise(&m, &path, q.as_deref()) {
            if let Ok(rule) = authorise(&rules, &c.path, &c.operation) {
                match rule.path.strip_suffix('*') {
                    Some(prefix) => prop_assert!(
                        c.path.starts_with(prefix) && c.path.len() > prefix.len(),
                        "{:?} allowed by {:?}", c.path, rule.path
                    ),
                    None => prop_assert_eq!(&c.path, &rule.path),
                }
                prop_assert!(rule.methods.contains(&c.operation));
            }
        }
    }

    #[test]
    fn every_proxy_invariant_holds((m, path, q) in request()) {
        let input = match q {
            Some(q) => format!("{m}\n{path}\n{q}"),
            None => format!("{m}\n{path}"),
        };
        fuzzing::proxy(input.as_bytes());
    }
}

/// The example configuration with one value replaced, or cut short: the
/// loader refuses or accepts, never panics, and what it accepts renders
/// back to TOML it accepts the same way.
fn mutated_config() -> impl Strategy<Value = String> {
    let example = include_str!("../examples/backend.toml");
    let lines: Vec<String> = example.lines().map(str::to_string).collect();
    let n = lines.len();
    let value = prop_oneof![
        prop::sample::select(vec![
            "\"\"",
            "-1",
            "0",
            "99999999999999999999",
            "\"1ns\"",
            "\"0s\"",
            "\"10000000000d\"",
            "[]",
            "{}",
            "\"unix:\"",
            "\"unix:relative.sock\"",
            "\"..\"",
            "\"sys/*\"",
            "\"a/*/b\"",
            "nan",
            "inf",
            "true",
            "\"0.0.0.0:0\"",
            "\"[::1]:8443\"",
            "\"0777\"",
            "\"9999\"",
            "[\"GET\", \"get\", \"TRACE\"]",
            "[\"list\"]",
            "\"spiffe://x/*\"",
            "\"tcp:256.0.0.1:1\"",
            "\"http://[::1\"",
        ])
        .prop_map(str::to_string),
        "\\PC{0,24}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|i| i.to_string()),
    ];
    let cut = prop::sample::select(vec![false, false, false, true]);
    (0..n, value, cut).prop_map(move |(i, v, cut)| {
        let mut lines = lines.clone();
        if cut {
            lines.truncate(i);
        } else if let Some((key, _)) = lines[i].split_once(" = ") {
            lines[i] = format!("{key} = {v}");
        } else {
            lines[i] = v;
        }
        lines.join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_config_loader_never_panics_and_round_trips(text in mutated_config()) {
        fuzzing::config(text.as_bytes());
    }

    #[test]
    fn the_config_loader_never_panics_on_any_text(text in "\\PC{0,200}") {
        let _ = Config::parse(&text, &BTreeMap::<String, String>::new());
    }
}
