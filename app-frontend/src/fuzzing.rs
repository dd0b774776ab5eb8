//! Entry point for the fuzz target in `fuzz/` and the tests that replay its
//! corpus (`tests/fuzz_replay.rs`): raw bytes in, the real check run, a
//! panic when an invariant breaks. Not an API.

use crate::session::{login_url, safe_next};

/// Where the login form is served; a `next=` target is resolved against it
/// as the browser resolves the `Location` of the redirect after login.
const LOGIN_PAGE: &str = "http://frontend.test:3000/login?next=x";

/// The `next=` check on any bytes. Invariants: an accepted target is the
/// input unchanged, resolves (WHATWG URL rules, as browsers do) to this
/// site's origin, is not absolute, scheme-relative or backslashed and
/// carries no space or control character; the login link that embeds it
/// resolves to this site's `/login` and decodes back to it.
pub fn next(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Some(target) = safe_next(raw) else {
        return;
    };
    assert_eq!(target, raw, "an accepted target is used as given");
    assert!(target.starts_with('/'), "{target:?} is not a path");
    assert!(
        !target.starts_with("//") && !target.contains('\\'),
        "{target:?} is scheme-relative or has a backslash"
    );
    assert!(
        target.bytes().all(|b| b.is_ascii_graphic()),
        "{target:?} has a space, control or non-ASCII character"
    );
    let base = url::Url::parse(LOGIN_PAGE).unwrap_or_else(|e| panic!("{LOGIN_PAGE}: {e}"));
    let resolved = base
        .join(&target)
        .unwrap_or_else(|e| panic!("{target:?} does not resolve: {e}"));
    assert_eq!(
        resolved.origin(),
        base.origin(),
        "{target:?} leaves the site: {resolved}"
    );

    let link = login_url(Some(raw), None);
    let resolved = base.join(&link).unwrap_or_else(|e| panic!("{link:?}: {e}"));
    assert_eq!(
        (resolved.origin(), resolved.path()),
        (base.origin(), "/login")
    );
    if target != "/" {
        let back: Vec<String> = resolved
            .query_pairs()
            .filter(|(k, _)| k == "next")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(back, [target], "the login link does not carry next= intact");
    }
}
