use super::*;
use crate::testing::annotations as zt;

fn parse_zt(pairs: &[(&str, &str)]) -> Result<Intent, Refusal> {
    parse(&zt(pairs), "demo.local")
}

fn injection(pairs: &[(&str, &str)]) -> Injection {
    match parse_zt(pairs) {
        Ok(Intent::Inject(i)) => *i,
        other => panic!("{pairs:?}: {other:?}"),
    }
}

fn sidecar(pairs: &[(&str, &str)]) -> SidecarAnnotations {
    match injection(pairs).source {
        Source::Annotations(a) => a,
        other => panic!("{other:?}"),
    }
}

fn refused(pairs: &[(&str, &str)]) -> String {
    match parse_zt(pairs) {
        Err(r) => r.to_string(),
        Ok(i) => panic!("{pairs:?} was accepted: {i:?}"),
    }
}

#[test]
fn our_prefix_in_another_case_is_a_typo_refused_with_the_right_spelling() {
    let pod = BTreeMap::from([
        ("Zt.Demo.Local/inject".to_string(), "true".to_string()),
        (
            "ZT.DEMO.LOCAL/openbao-role".to_string(),
            "backend".to_string(),
        ),
    ]);
    let message = parse(&pod, "demo.local").unwrap_err().to_string();
    assert_eq!(
        message,
        "ZT.DEMO.LOCAL/openbao-role: annotation keys under zt.demo.local/ are lower case: write `zt.demo.local/openbao-role`; \
         Zt.Demo.Local/inject: annotation keys under zt.demo.local/ are lower case: write `zt.demo.local/inject`"
    );
}

#[test]
fn pods_without_our_annotations_opted_out_or_injected_are_left_alone() {
    let other = BTreeMap::from([
        (
            "kubectl.kubernetes.io/last-applied-configuration".to_string(),
            "{}".to_string(),
        ),
        (
            "zt.demo.local.example/inject".to_string(),
            "true".to_string(),
        ),
    ]);
    assert_eq!(
        parse(&other, "demo.local").unwrap(),
        Intent::Leave(Leave::NotAnnotated)
    );
    assert_eq!(
        parse_zt(&[("inject", "false"), ("whatever", "x")]).unwrap(),
        Intent::Leave(Leave::OptedOut),
        "false means hands off, whatever else is there"
    );
    assert_eq!(
        parse_zt(&[
            ("inject", "true"),
            ("status", "injected"),
            ("database-db", "")
        ])
        .unwrap(),
        Intent::Leave(Leave::AlreadyInjected),
        "never injected twice"
    );
}

#[test]
fn inject_true_alone_is_an_identity_only_sidecar_with_defaults() {
    let i = injection(&[("inject", "true")]);
    assert_eq!(i.source, Source::Annotations(SidecarAnnotations::default()));
    assert_eq!(i.image, None);
    assert_eq!(i.resources, ResourceOverrides::default());
}

#[test]
fn every_annotation_is_read_into_its_typed_value() {
    let a = sidecar(&[
        ("inject", "true"),
        ("openbao-role", "backend"),
        ("database-db", "backend-role"),
        (
            "database-db-migrator",
            "backend-migrator, rotate_before=2m, revoke_grace=10s, port=5433, host=pg, database=other, mount=db2, format=env, required=false, releasable=true",
        ),
        ("kv-jwt-signing-key", "backend/jwt-signing-key, mount=kv, refresh_interval=1m, required=true"),
        (
            "proxy-allow",
            "GET,PUT,POST,DELETE secret/data/github/users/*; GET,DELETE secret/metadata/github/users/*\n",
        ),
        (
            "mtls-inbound-8443",
            "8000, allow=spiffe://demo.local/ns/99-apps/sa/frontend spiffe://demo.local/ns/99-apps/*, peer_id_header=x-peer, handshake_timeout=5s",
        ),
        (
            "mtls-outbound-backend",
            "backend.99-apps.svc.cluster.local:8443, listen=15001, server_id=spiffe://demo.local/ns/99-apps/sa/backend, handshake_timeout=3s",
        ),
        ("admin-port", "15100"),
        ("secrets-group", "10001"),
        ("log-level", "debug"),
    ]);
    assert_eq!(a.openbao_role.as_deref(), Some("backend"));
    assert_eq!(
        a.databases,
        vec![
            Database {
                name: "db".into(),
                role: "backend-role".into(),
                ..Default::default()
            },
            Database {
                name: "db-migrator".into(),
                role: "backend-migrator".into(),
                mount: Some("db2".into()),
                host: Some("pg".into()),
                port: Some(5433),
                database: Some("other".into()),
                format: Some("env".into()),
                rotate_before: Some("2m".into()),
                revoke_grace: Some("10s".into()),
                required: Some(false),
                releasable: Some(true),
            }
        ]
    );
    assert_eq!(
        a.kvs,
        vec![Kv {
            name: "jwt-signing-key".into(),
            path: "backend/jwt-signing-key".into(),
            mount: Some("kv".into()),
            refresh_interval: Some("1m".into()),
            required: Some(true),
        }]
    );
    assert_eq!(
        a.proxy_allow,
        vec![
            AllowRule {
                methods: vec!["GET".into(), "PUT".into(), "POST".into(), "DELETE".into()],
                path: "secret/data/github/users/*".into()
            },
            AllowRule {
                methods: vec!["GET".into(), "DELETE".into()],
                path: "secret/metadata/github/users/*".into()
            },
        ]
    );
    assert_eq!(
        a.inbound,
        vec![Inbound {
            listen_port: 8443,
            app_port: 8000,
            allow: vec![
                "spiffe://demo.local/ns/99-apps/sa/frontend".into(),
                "spiffe://demo.local/ns/99-apps/*".into()
            ],
            peer_id_header: Some("x-peer".into()),
            handshake_timeout: Some("5s".into()),
        }]
    );
    assert_eq!(
        a.outbound,
        vec![Outbound {
            name: "backend".into(),
            upstream: "backend.99-apps.svc.cluster.local:8443".into(),
            listen_port: 15001,
            server_id: "spiffe://demo.local/ns/99-apps/sa/backend".into(),
            handshake_timeout: Some("3s".into()),
        }]
    );
    assert_eq!(a.admin_port, Some(15100));
    assert_eq!(a.secrets_group, Some(10001));
    assert_eq!(a.log_level.as_deref(), Some("debug"));
}

#[test]
fn container_overrides_and_config_map_are_read() {
    let i = injection(&[
        ("inject", "true"),
        ("config-map", "backend-sidecar"),
        (
            "image",
            "registry.example:5000/zt/zt-sidecar:1.2@sha256:abcd",
        ),
        ("cpu-request", "10m"),
        ("cpu-limit", "1"),
        ("memory-request", "16Mi"),
        ("memory-limit", "64Mi"),
    ]);
    assert_eq!(i.source, Source::ConfigMap("backend-sidecar".into()));
    assert_eq!(
        i.image.as_deref(),
        Some("registry.example:5000/zt/zt-sidecar:1.2@sha256:abcd")
    );
    assert_eq!(i.resources.cpu_request.unwrap().as_str(), "10m");
    assert_eq!(i.resources.cpu_limit.unwrap().as_str(), "1");
    assert_eq!(i.resources.memory_request.unwrap().as_str(), "16Mi");
    assert_eq!(i.resources.memory_limit.unwrap().as_str(), "64Mi");
}

/// Every malformed annotation, and the exact message the API server passes on.
#[test]
fn every_malformed_annotation_is_refused_with_a_message_naming_it() {
    let long = "a".repeat(MAX_VALUE_BYTES + 1);
    let cases: Vec<(Vec<(&str, &str)>, String)> = vec![
        (
            vec![("inject", "true"), ("injekt", "true")],
            format!("zt.demo.local/injekt: unknown annotation; the known ones are {KNOWN}"),
        ),
        (
            vec![("inject", "yes")],
            r#"zt.demo.local/inject: `yes` is not "true" or "false""#.into(),
        ),
        (
            vec![("openbao-role", "backend")],
            r#"zt.demo.local/openbao-role: is set without zt.demo.local/inject: "true" (add it, or "false" to opt out)"#.into(),
        ),
        (
            vec![("inject", "true"), ("status", "done")],
            "zt.demo.local/status: `done` is not `injected`: only the injector writes this annotation".into(),
        ),
        (
            vec![("inject", "true"), ("mtls-inbound-99999", "8000, allow=spiffe://demo.local/a")],
            "zt.demo.local/mtls-inbound-99999: the listen port in the key: `99999` is not a TCP port (1-65535)".into(),
        ),
        (
            vec![("inject", "true"), ("mtls-inbound-http", "8000, allow=spiffe://demo.local/a")],
            "zt.demo.local/mtls-inbound-http: the listen port in the key: `http` is not a TCP port (1-65535)".into(),
        ),
        (
            vec![("inject", "true"), ("mtls-inbound-0", "8000, allow=spiffe://demo.local/a")],
            "zt.demo.local/mtls-inbound-0: the listen port in the key: `0` is not a TCP port (1-65535)".into(),
        ),
        (
            vec![("inject", "true"), ("mtls-inbound-8443", "80a, allow=spiffe://demo.local/a")],
            "zt.demo.local/mtls-inbound-8443: the app port: `80a` is not a TCP port (1-65535)".into(),
        ),
        (
            vec![("inject", "true"), ("mtls-inbound-8443", "8000")],
            "zt.demo.local/mtls-inbound-8443: allow: is required: the SPIFFE IDs that may connect, separated by spaces".into(),
        ),
        (
            vec![("inject", "true"), ("mtls-inbound-8443", "8000, allow=spiffe://evil.example/ns/x/sa/y")],
            "zt.demo.local/mtls-inbound-8443: allow: `spiffe://evil.example/ns/x/sa/y` is in trust domain `evil.example`, not this cluster's `demo.local`".into(),
        ),
        (
            vec![("inject", "true"), ("mtls-inbound-8443", "8000, allow=frontend")],
            "zt.demo.local/mtls-inbound-8443: allow: `frontend` is not a SPIFFE ID; write spiffe://demo.local/ns/<namespace>/sa/<service account>".into(),
        ),
        (
            vec![("inject", "true"), ("mtls-outbound-backend", "backend:8443, listen=15001, server_id=spiffe://other.org/ns/a/sa/b")],
            "zt.demo.local/mtls-outbound-backend: server_id: `spiffe://other.org/ns/a/sa/b` is in trust domain `other.org`, not this cluster's `demo.local`".into(),
        ),
        (
            vec![("inject", "true"), ("mtls-outbound-backend", "backend:8443, server_id=spiffe://demo.local/ns/a/sa/b")],
            "zt.demo.local/mtls-outbound-backend: listen: is required: the loopback port the app sends plain HTTP to".into(),
        ),
        (
            vec![("inject", "true"), ("mtls-outbound-backend", "backend:8443, listen=15001")],
            "zt.demo.local/mtls-outbound-backend: server_id: is required: the exact SPIFFE ID the upstream must present".into(),
        ),
        (
            vec![("inject", "true"), ("mtls-outbound-backend", "backend:8443, listen=65536, server_id=spiffe://demo.local/x")],
            "zt.demo.local/mtls-outbound-backend: listen: `65536` is not a TCP port (1-65535)".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "backend"), ("database-db", "backend-role, colour=blue")],
            "zt.demo.local/database-db: `colour` is not an option here; the options are mount, host, port, database, format, rotate_before, revoke_grace, required, releasable".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "backend"), ("database-db", "backend-role, port=5432, port=5433")],
            "zt.demo.local/database-db: port: is given twice".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "backend"), ("database-db", "backend-role,")],
            "zt.demo.local/database-db: has an empty item (a stray comma?)".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "backend"), ("database-db", "role=backend-role")],
            "zt.demo.local/database-db: must start with the main value, then `key=value` options (any of mount, host, port, database, format, rotate_before, revoke_grace, required, releasable)".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "backend"), ("database-db", "backend-role, required=yes")],
            "zt.demo.local/database-db: required: `yes` is not true or false".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "backend"), ("database-db", "backend-role, releasable=later")],
            "zt.demo.local/database-db: releasable: `later` is not true or false".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "backend"), ("database-db", "backend-role, port=http")],
            "zt.demo.local/database-db: port: `http` is not a TCP port (1-65535)".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "backend"), ("database-", "backend-role")],
            "zt.demo.local/database-: needs a name after `database-`".into(),
        ),
        (
            vec![("inject", "true"), ("database-db", "backend-role")],
            "zt.demo.local/database-db: needs zt.demo.local/openbao-role: the OpenBao role the sidecar logs in with".into(),
        ),
        (
            vec![("inject", "true"), ("kv-key", "a/b"), ("proxy-allow", "GET secret/data/x")],
            "zt.demo.local/kv-key: needs zt.demo.local/openbao-role: the OpenBao role the sidecar logs in with; zt.demo.local/proxy-allow: needs zt.demo.local/openbao-role: the OpenBao role the sidecar logs in with".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "backend"), ("proxy-allow", "secret/data/x")],
            "zt.demo.local/proxy-allow: `secret/data/x` is not `METHOD[,METHOD...] path`, e.g. `GET,PUT secret/data/app/*`".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "backend"), ("proxy-allow", "GET a/b; PUT a/b")],
            "zt.demo.local/proxy-allow: `a/b` is listed twice; put all its methods in one rule".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "backend"), ("proxy-allow", " ; ")],
            "zt.demo.local/proxy-allow: lists no rule".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "backend"), ("proxy-allow", "GET,,PUT a/b")],
            "zt.demo.local/proxy-allow: `GET,,PUT a/b`: a method is empty (a stray comma?)".into(),
        ),
        (
            vec![("inject", "true"), ("config-map", "sc"), ("openbao-role", "backend"), ("admin-port", "15000")],
            "zt.demo.local/admin-port: cannot be combined with zt.demo.local/config-map: the ConfigMap's sidecar.toml is the whole sidecar configuration; zt.demo.local/openbao-role: cannot be combined with zt.demo.local/config-map: the ConfigMap's sidecar.toml is the whole sidecar configuration".into(),
        ),
        (
            vec![("inject", "true"), ("config-map", "Backend_Sidecar")],
            "zt.demo.local/config-map: `Backend_Sidecar` is not a ConfigMap name (lowercase letters, digits, `-`, `.`)".into(),
        ),
        (
            vec![("inject", "true"), ("admin-port", "-1")],
            "zt.demo.local/admin-port: `-1` is not a TCP port (1-65535)".into(),
        ),
        (
            vec![("inject", "true"), ("secrets-group", "0")],
            "zt.demo.local/secrets-group: 0 is root's group: use the app's own group id".into(),
        ),
        (
            vec![("inject", "true"), ("secrets-group", "4294967296")],
            "zt.demo.local/secrets-group: `4294967296` is not a group id (1-2147483647)".into(),
        ),
        (
            vec![("inject", "true"), ("image", "evil image; rm -rf /")],
            "zt.demo.local/image: `evil image; rm -rf /` is not an image reference like registry.example/zt-sidecar:1.0".into(),
        ),
        (
            vec![("inject", "true"), ("cpu-limit", "lots")],
            "zt.demo.local/cpu-limit: `lots` is not a quantity like 500m, 1, 128Mi or 1Gi".into(),
        ),
        (
            vec![("inject", "true"), ("memory-request", "0")],
            "zt.demo.local/memory-request: `0` must be greater than zero".into(),
        ),
        (
            vec![("inject", "true"), ("log-level", "info, debug")],
            "zt.demo.local/log-level: `info, debug` must be a single name".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "")],
            "zt.demo.local/openbao-role: the value is empty".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "back\nend")],
            "zt.demo.local/openbao-role: the value contains a line break (a YAML `|` block? use a plain string)".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "b\u{0}ackend")],
            r#"zt.demo.local/openbao-role: the value contains '\0': only printable ASCII is allowed"#.into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", "rôle")],
            "zt.demo.local/openbao-role: the value contains 'ô': only printable ASCII is allowed".into(),
        ),
        (
            vec![("inject", "true"), ("openbao-role", &long)],
            format!("zt.demo.local/openbao-role: the value is {} bytes; at most {MAX_VALUE_BYTES}", MAX_VALUE_BYTES + 1),
        ),
    ];
    for (pairs, want) in cases {
        assert_eq!(refused(&pairs), want, "{pairs:?}");
    }
}

#[test]
fn too_many_annotations_are_refused() {
    let names: Vec<String> = (0..MAX_ANNOTATIONS).map(|i| format!("kv-k{i}")).collect();
    let mut pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "a/b")).collect();
    pairs.push(("inject", "true"));
    assert_eq!(
        refused(&pairs),
        format!("zt.demo.local/inject: the pod has {} annotations under zt.demo.local/; at most {MAX_ANNOTATIONS}", MAX_ANNOTATIONS + 1)
    );
}

#[test]
fn a_status_of_garbage_is_shown_shortened_and_cleaned() {
    let garbage = format!("{}\u{7}", "x".repeat(100));
    let msg = refused(&[("inject", "true"), ("status", &garbage)]);
    assert!(msg.contains(&format!("`{}…`", "x".repeat(64))), "{msg}");
    assert!(!msg.contains('\u{7}'));
}

#[test]
fn image_names_and_object_names() {
    for ok in [
        "zt-platform/zt-sidecar:dev",
        "a",
        "r.io:5000/a/b@sha256:00ff",
    ] {
        check_image(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in ["", "-a", "a:", "a b", "a\n", "/a", &"a".repeat(513)] {
        assert!(check_image(bad).is_err(), "{bad:?}");
    }
    assert!(is_dns_name("backend-sidecar", 253));
    for bad in ["", "-a", "a-", "A", "a_b", "a/b"] {
        assert!(!is_dns_name(bad, 253), "{bad:?}");
    }
    assert!(!is_dns_name(&"a".repeat(64), 63));
}
