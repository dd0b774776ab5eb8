use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::RootCertStore;

use super::*;

const NAME: &str = "zt-injector.zt-injector.svc";

fn cfg() -> StepConfig {
    StepConfig {
        ca_validity: Duration::from_secs(3600),
        cert_validity: Duration::from_secs(600),
        dwell: Duration::from_secs(60),
        names: vec![San::Dns(NAME.into()), San::Ip("127.0.0.1".parse().unwrap())],
    }
}

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
}

/// Does the bundle make a TLS client (as the API server is) accept the leaf for NAME at `now`?
fn trusted(leaf: &Leaf, bundle: &[String], now: OffsetDateTime) -> bool {
    let mut roots = RootCertStore::empty();
    for ca in bundle {
        roots.add(pki::cert_der(ca, "ca").unwrap()).unwrap();
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let at = UnixTime::since_unix_epoch(Duration::from_secs(now.unix_timestamp() as u64));
    verifier
        .verify_server_cert(
            &pki::cert_der(&leaf.cert_pem, "tls").unwrap(),
            &[],
            &ServerName::try_from(NAME).unwrap(),
            &[],
            at,
        )
        .is_ok()
}

fn advance(state: &TlsState, now: OffsetDateTime) -> Option<(TlsState, Change)> {
    step(Some(state), &cfg(), now).unwrap()
}

#[test]
fn bootstrap_makes_a_ca_and_a_certificate_it_trusts() {
    let (s, change) = step(None, &cfg(), t0()).unwrap().unwrap();
    assert_eq!(change, Change::Bootstrap);
    assert_eq!((s.generation, s.phase), (1, Phase::Stable));
    assert_eq!(s.bundle, vec![s.active.cert_pem.clone()]);
    assert!(trusted(&s.leaf, &s.bundle, t0()));
    assert_eq!(pki::names(&s.leaf.cert_pem, "tls").unwrap(), cfg().names);
    assert_eq!(s.active.not_after, t0() + Duration::from_secs(3600));
    assert_eq!(s.leaf.not_after, t0() + Duration::from_secs(600));
    // Nothing to do while both are young.
    assert!(advance(&s, t0() + Duration::from_secs(60)).is_none());
}

#[test]
fn the_certificate_is_renewed_from_the_same_ca_with_a_third_left() {
    let (s, _) = step(None, &cfg(), t0()).unwrap().unwrap();
    assert!(advance(&s, t0() + Duration::from_secs(399)).is_none());
    let now = t0() + Duration::from_secs(401);
    let (r, change) = advance(&s, now).unwrap();
    assert_eq!(change, Change::CertRenewed);
    assert_eq!(r.generation, 2);
    assert_eq!(r.bundle, s.bundle, "same CA: the bundle does not move");
    assert_ne!(r.leaf, s.leaf);
    assert!(trusted(&r.leaf, &r.bundle, now));
    // New names (e.g. the Service was renamed) also mean a new certificate.
    let mut other = cfg();
    other.names.push(San::Dns("extra.example".into()));
    let (r, change) = step(Some(&s), &other, t0() + Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(change, Change::CertRenewed);
    assert!(pki::names(&r.leaf.cert_pem, "tls")
        .unwrap()
        .contains(&San::Dns("extra.example".into())));
}

#[test]
fn a_certificate_never_outlives_its_ca() {
    let ca = Ca::generate(Duration::from_secs(600), t0()).unwrap();
    let leaf = ca
        .issue(&cfg().names, Duration::from_secs(3600), t0())
        .unwrap();
    assert_eq!(leaf.not_after, ca.not_after);
}

/// The whole CA rotation, with every replica allowed to lag one state
/// behind: at every step, the certificate of either state is trusted by the
/// bundle of either state.
#[test]
fn a_ca_rotation_keeps_every_served_certificate_trusted_at_every_step() {
    let (mut s, _) = step(None, &cfg(), t0()).unwrap().unwrap();
    let mut now = t0();
    let mut changes = Vec::new();
    let old_ca = s.active.cert_pem.clone();
    // 30-second ticks through two CA lifetimes.
    for _ in 0..(2 * 3600 / 30) {
        now += Duration::from_secs(30);
        if let Some((next, change)) = advance(&s, now) {
            assert_eq!(next.generation, s.generation + 1);
            for leaf in [&s.leaf, &next.leaf] {
                for bundle in [&s.bundle, &next.bundle] {
                    assert!(
                        trusted(leaf, bundle, now),
                        "{change:?} at +{}s: a served certificate is not trusted",
                        (now - t0()).whole_seconds()
                    );
                }
            }
            match change {
                Change::CaAdded => {
                    assert_eq!(next.bundle.len(), 2);
                    assert_eq!(next.leaf, s.leaf, "still serving the old CA's certificate");
                }
                Change::CaSwitched => {
                    assert_eq!(next.bundle, s.bundle, "both CAs stay trusted");
                    assert!(Duration::try_from(now - s.phase_since).unwrap() >= cfg().dwell);
                }
                Change::CaRetired => {
                    assert_eq!(next.bundle, vec![next.active.cert_pem.clone()]);
                    assert!(Duration::try_from(now - s.phase_since).unwrap() >= cfg().dwell);
                }
                Change::CertRenewed | Change::Bootstrap => {}
            }
            changes.push(change);
            s = next;
        }
        assert!(
            trusted(&s.leaf, &s.bundle, now),
            "expired or untrusted at +{}s",
            (now - t0()).whole_seconds()
        );
    }
    let rotations = changes.iter().filter(|c| **c == Change::CaRetired).count();
    assert!(rotations >= 2, "{changes:?}");
    assert!(changes.contains(&Change::CertRenewed));
    assert!(!s.bundle.contains(&old_ca), "the first CA is long gone");
    // Phases happen in order.
    let ca_changes: Vec<_> = changes
        .iter()
        .filter(|c| **c != Change::CertRenewed)
        .collect();
    for w in ca_changes.chunks(3) {
        assert_eq!(
            w,
            &[&Change::CaAdded, &Change::CaSwitched, &Change::CaRetired][..w.len()]
        );
    }
}

#[test]
fn the_state_round_trips_through_the_secret() {
    let (s, _) = step(None, &cfg(), t0()).unwrap().unwrap();
    let mut now = t0() + Duration::from_secs(2500);
    let (added, change) = advance(&s, now).unwrap();
    assert_eq!(change, Change::CaAdded);
    for state in [&s, &added] {
        let mut secret = Secret::default();
        secret.metadata.name = Some("zt-injector-tls".into());
        state.write_into(&mut secret);
        let back = TlsState::from_secret(&secret).unwrap().unwrap();
        assert_eq!(&back, state);
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("zt-injector-tls"),
            "the rest is kept"
        );
    }
    now += Duration::from_secs(1);
    assert!(advance(&added, now).is_none(), "dwelling");
}

#[test]
fn an_empty_secret_is_no_state_and_garbage_is_an_error_that_shows_no_key() {
    assert_eq!(TlsState::from_secret(&Secret::default()).unwrap(), None);
    let (s, _) = step(None, &cfg(), t0()).unwrap().unwrap();
    let mut secret = Secret::default();
    s.write_into(&mut secret);
    let key_pem = s.leaf.key.expose().to_string();
    for (key, value) in [
        ("tls.pem", "garbage"),
        ("ca.pem", ""),
        (
            "ca-bundle.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ),
    ] {
        let mut bad = secret.clone();
        bad.data
            .as_mut()
            .unwrap()
            .insert(key.into(), ByteString(value.as_bytes().to_vec()));
        let e = TlsState::from_secret(&bad).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
        assert!(!e.contains("PRIVATE KEY"), "{e}");
    }
    let mut bad = secret.clone();
    bad.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ANNOTATION_PHASE.into(), "sideways".into());
    assert_eq!(
        TlsState::from_secret(&bad).unwrap_err().to_string(),
        "the Secret's zt.demo.local/tls-phase is not a valid phase"
    );
    // Debug output of the whole state never shows a private key.
    let debug = format!("{s:?}");
    assert!(
        !debug.contains(&key_pem) && !debug.contains("PRIVATE KEY"),
        "{debug}"
    );
    assert!(debug.contains("<redacted>"));
}
