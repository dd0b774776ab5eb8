//! The fuzz target's invariants in `cargo test`, without nightly or an
//! instrumented build: the committed corpus (fuzz/corpus/frontend_next/)
//! replayed through `app_frontend::fuzzing::next`, and proptest properties
//! of the `next=` check.

use std::path::Path;

use app_frontend::fuzzing;
use app_frontend::session::safe_next;
use proptest::prelude::*;

#[test]
fn next_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/frontend_next");
    let (mut n, mut ok) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| fuzzing::next(&data)).is_err() {
            panic!("{} breaks an invariant (message above)", path.display());
        }
        n += 1;
        ok += usize::from(std::str::from_utf8(&data).is_ok_and(|t| safe_next(t).is_some()));
    }
    assert!(n >= 5, "{}: only {n} inputs", dir.display());
    assert!(ok >= 2, "{}: only {ok} inputs accepted", dir.display());
}

/// Pieces of open-redirect payloads.
fn target() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "/",
        "//",
        "\\",
        "/\\",
        "\t",
        "\n",
        "\r",
        " ",
        ":",
        "http:",
        "https://",
        "javascript:",
        "evil.example",
        "@",
        "%2f",
        "%2F",
        "%5c",
        "?",
        "#",
        ".",
        "..",
        "login",
        "logout",
        "github",
        "ä",
        "\u{0}",
        "\u{7f}",
        "a",
        "%09",
        "&next=",
        "=",
    ]);
    prop::collection::vec(atoms, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn every_next_invariant_holds(t in target()) {
        fuzzing::next(t.as_bytes());
    }

    #[test]
    fn next_never_accepts_an_absolute_scheme_relative_or_backslash_url(
        lead in prop::sample::select(vec![
            "//", "/\\", "\\\\", "\\/", "http://", "https:", "HTTP://", "javascript:", "data:",
            " //", "\t//", "/\t/", "/\n/", "evil.example/",
        ]),
        rest in target(),
    ) {
        let t = format!("{lead}{rest}");
        prop_assert_eq!(safe_next(&t), None, "{:?}", t);
    }

    #[test]
    fn next_never_accepts_a_backslash_anywhere(a in target(), b in target()) {
        let t = format!("/{a}\\{b}");
        prop_assert_eq!(safe_next(&t), None);
    }
}
