//! Entry points for the fuzz targets in `fuzz/` and the tests that replay
//! their corpus (`tests/fuzz_replay.rs`): each takes raw bytes, runs the
//! real parser and panics when one of its invariants breaks. Not an API.

use std::collections::BTreeMap;

use crate::config::{AllowRule, Config};
use crate::proxy::{authorise, authorise_query, normalise, Checked};

/// The allow-list the proxy target checks against: the backend's rules
/// (`devstack`'s and the chart's) plus an exact-path rule.
pub fn rules() -> Vec<AllowRule> {
    let rule = |path: &str, methods: &[&str], query: &[&str]| AllowRule {
        path: path.into(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        query: query.iter().map(|q| q.to_string()).collect(),
    };
    vec![
        rule(
            "secret/data/github/users/*",
            &["GET", "PUT", "POST", "DELETE"],
            &["version"],
        ),
        rule("secret/metadata/github/users/*", &["GET", "DELETE"], &[]),
        rule("secret/data/app/config", &["GET", "LIST"], &[]),
    ]
}

/// Splits a fuzz input into the proxy's three inputs: `method\npath\nquery`
/// (a missing third line is no query).
pub fn proxy_input(data: &[u8]) -> Option<(&str, &str, Option<&str>)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut parts = text.splitn(3, '\n');
    let method = parts.next()?;
    let path = parts.next()?;
    Some((method, path, parts.next()))
}

/// The proxy's normaliser and rule matcher on one request. Invariants:
/// what is forwarded has no empty, `.` or `..` segment and nothing that
/// decodes to `/`, `\` or a control character; normalising what is
/// forwarded gives the same request (so OpenBao reads what was checked); an
/// allowed path is the rule's path or strictly below its prefix, with an
/// allowed operation and only allowed query keys.
pub fn proxy(data: &[u8]) {
    let Some((method, path, query)) = proxy_input(data) else {
        return;
    };
    let Ok(checked) = normalise(method, path, query) else {
        return;
    };
    for seg in checked.path.split('/') {
        assert!(
            !seg.is_empty() && seg != "." && seg != "..",
            "segment {seg:?} in {:?}",
            checked.path
        );
        assert!(
            !seg.contains('\\') && !seg.chars().any(char::is_control),
            "segment {seg:?}"
        );
    }
    assert!(
        !checked.encoded.contains("%2F") && !checked.encoded.contains("%2f"),
        "encoded slash forwarded: {:?}",
        checked.encoded
    );
    // Idempotent: the upstream request, normalised again, is the same request.
    let again = normalise(
        &checked.operation,
        &format!("/v1/{}", checked.encoded),
        checked.encoded_query().as_deref(),
    )
    .unwrap_or_else(|e| panic!("forwarded request {checked:?} refused when re-checked: {e}"));
    assert_eq!(again, checked, "normalising twice changed the request");

    let rules = rules();
    if let Ok(rule) = authorise(&rules, &checked.path, &checked.operation) {
        assert_allowed_by(rule, &checked);
        if authorise_query(rule, &checked).is_ok() {
            for (k, _) in &checked.query {
                assert!(rule.query.contains(k), "query key {k:?} forwarded");
            }
        }
    }
}

fn assert_allowed_by(rule: &AllowRule, checked: &Checked) {
    assert!(
        rule.methods.contains(&checked.operation),
        "{} allowed by {rule:?}",
        checked.operation
    );
    match rule.path.strip_suffix("/*") {
        Some(prefix) => {
            let below = checked
                .path
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('/'));
            assert!(
                below.is_some_and(|b| !b.is_empty()),
                "{:?} allowed by {rule:?} but not below {prefix:?}",
                checked.path
            );
        }
        None => assert_eq!(checked.path, rule.path, "allowed by an exact rule"),
    }
}

/// The TOML loader on any text, with no environment overrides. Invariants:
/// no panic; a configuration it accepts renders (`to_toml`) to TOML that it
/// accepts again and renders the same way.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = BTreeMap::<String, String>::new();
    let Ok(first) = Config::parse(text, &env) else {
        return;
    };
    let rendered = first.to_toml();
    let second = Config::parse(&rendered, &env)
        .unwrap_or_else(|e| panic!("the rendered configuration is refused: {e}\n{rendered}"));
    assert_eq!(second.to_toml(), rendered, "rendering is not stable");
}

/// The peer-ID header and peer the inbound target rewrites heads with.
const INBOUND_HEADER: &str = "x-spiffe-peer-id";
const INBOUND_PEER: &str = "spiffe://demo.local/ns/demo/sa/frontend";

/// The inbound mTLS listener's request heads and bodies (`mtls/head.rs`) on
/// raw client bytes, checked against hyper's own HTTP/1 server: through the
/// sidecar, the app sees a prefix of the requests hyper's server would see
/// in the same bytes (same methods, targets, bodies), each with exactly one
/// peer ID, the verified one.
pub fn inbound_head(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    // Read whole, and in pieces of 7 bytes (heads and bodies split across reads).
    for step in [data.len(), 7] {
        runtime.block_on(crate::mtls::head::differential::agrees_with_hyper(
            data,
            step,
            INBOUND_HEADER,
            INBOUND_PEER,
        ));
    }
}

/// Whether the inbound forwards at least one request of `data` to the app.
pub fn inbound_head_forwards(data: &[u8]) -> bool {
    let (_, forwarded) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
        .block_on(crate::mtls::head::differential::rewritten(
            data,
            data.len(),
            INBOUND_HEADER,
            INBOUND_PEER,
        ));
    forwarded > 0
}
