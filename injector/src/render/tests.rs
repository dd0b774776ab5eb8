use super::*;
use crate::annotations::{parse, Intent, Source};
use crate::testing::{annotations as zt, env, settings};

fn sidecar_annotations(pairs: &[(&str, &str)]) -> SidecarAnnotations {
    let mut all = vec![("inject", "true")];
    all.extend_from_slice(pairs);
    match parse(&zt(&all), "demo.local") {
        Ok(Intent::Inject(i)) => match i.source {
            Source::Annotations(a) => a,
            other => panic!("{other:?}"),
        },
        other => panic!("{pairs:?}: {other:?}"),
    }
}

fn render_ok(pairs: &[(&str, &str)]) -> Rendered {
    from_annotations(&sidecar_annotations(pairs), &settings())
        .unwrap_or_else(|r| panic!("{pairs:?}: {r}"))
}

fn render_err(pairs: &[(&str, &str)]) -> String {
    match from_annotations(&sidecar_annotations(pairs), &settings()) {
        Ok(r) => panic!("{pairs:?} rendered:\n{}", r.toml),
        Err(r) => r.to_string(),
    }
}

#[test]
fn inject_alone_renders_an_identity_only_sidecar() {
    let r = render_ok(&[]);
    assert_eq!(
        r.toml,
        r#"[admin]
listen = "127.0.0.1:15000"

[identity]
workload_api = "unix:/run/spire/sockets/spire-agent.sock"

[log]
format = "json"
"#,
        "the TOML a user sees in the pod spec"
    );
    assert!(r.config.openbao.is_none());
    assert!(r.config.secrets.dir.is_none());
    assert!(r.config.proxy.is_none());
}

#[test]
fn openbao_secrets_and_proxy_render_into_the_shared_volume_for_the_secrets_group() {
    let r = render_ok(&[
        ("openbao-role", "backend"),
        ("database-db", "backend-role"),
        ("kv-jwt-signing-key", "backend/jwt-signing-key"),
        ("proxy-allow", "GET secret/data/app/*"),
    ]);
    let c = &r.config;
    let ob = c.openbao.as_ref().unwrap();
    assert_eq!(ob.address, "http://openbao.openbao.svc.cluster.local:8200");
    assert_eq!(ob.role, "backend");
    assert_eq!(c.secrets.dir.as_deref(), Some(Path::new(SECRETS_DIR)));
    assert_eq!(c.secrets.file_mode, 0o440);
    assert_eq!(c.secrets.group, Some(10000), "the injector's secrets group");
    let db = &c.secrets.database[0];
    assert_eq!(
        (db.host.as_str(), db.port, db.database.as_str()),
        ("postgres.postgres.svc.cluster.local", 5432, "appdb"),
        "database defaults of the injector"
    );
    assert_eq!(c.secrets.kv[0].path, "backend/jwt-signing-key");
    let proxy = c.proxy.as_ref().unwrap();
    assert_eq!(proxy.listen, vec![ListenAddr::Unix(PROXY_SOCKET.into())]);
    assert_eq!(proxy.allow[0].methods, vec!["GET"]);
}

#[test]
fn a_proxy_without_secrets_still_gets_a_group_for_its_socket() {
    let r = render_ok(&[("openbao-role", "r"), ("proxy-allow", "GET secret/data/a")]);
    assert_eq!(r.config.secrets.dir, None);
    assert_eq!(r.config.secrets.group, Some(10000));
}

/// What the sidecar's own validator refuses becomes a refusal of the
/// annotation that caused it.
#[test]
fn the_sidecars_own_errors_are_reported_under_the_annotation_at_fault() {
    let role = ("openbao-role", "backend");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![role, ("proxy-allow", "GET,PUT secret/data/a/*; GET sys/mounts")],
            "zt.demo.local/proxy-allow: `GET sys/mounts`: `sys/` paths cannot be proxied: the sidecar owns its token and leases",
        ),
        (
            vec![role, ("proxy-allow", "GET auth/token/create")],
            "zt.demo.local/proxy-allow: `GET auth/token/create`: `auth/` paths cannot be proxied: the sidecar owns its token and leases",
        ),
        (
            vec![role, ("proxy-allow", "PATCH secret/data/a")],
            r#"zt.demo.local/proxy-allow: `PATCH secret/data/a`: `PATCH` is not one of ["GET", "PUT", "POST", "DELETE", "LIST"]"#,
        ),
        (
            vec![role, ("proxy-allow", "GET secret/../sys/x")],
            "zt.demo.local/proxy-allow: `GET secret/../sys/x`: `secret/../sys/x` must be a path below /v1/ such as secret/data/app/*; `*` only as the last segment",
        ),
        (
            vec![role, ("database-db", "backend-role, rotate_before=soon")],
            r#"zt.demo.local/database-db: rotate_before: `soon` is not a duration; write e.g. "30s", "10m", "1h""#,
        ),
        (
            vec![role, ("database-db", "backend-role, format=xml")],
            "zt.demo.local/database-db: format: `xml` is not one of: json, env",
        ),
        (
            vec![role, ("database-db", "a/b")],
            "zt.demo.local/database-db: role: `a/b` may only use letters, digits, `-`, `_`, `.`",
        ),
        (
            vec![role, ("kv-key", "/etc/passwd")],
            "zt.demo.local/kv-key: path: `/etc/passwd` must be a relative path like backend/jwt-signing-key",
        ),
        (
            vec![("openbao-role", "a/b")],
            "zt.demo.local/openbao-role: `a/b` may only use letters, digits, `-`, `_`, `.`",
        ),
        (
            vec![("log-level", "[")],
            "zt.demo.local/log-level: `[` is not a log filter (e.g. info, debug)",
        ),
        (
            vec![("mtls-inbound-8443", "8000, allow=spiffe://demo.local/a, peer_id_header=bad header")],
            "zt.demo.local/mtls-inbound-8443: peer_id_header: `bad header` is not a valid header name",
        ),
        (
            vec![("mtls-inbound-8443", "8000, allow=spiffe://demo.local/a//b")],
            "zt.demo.local/mtls-inbound-8443: allow: `spiffe://demo.local/a//b` is not a SPIFFE ID",
        ),
        (
            vec![("mtls-outbound-be", "nohost, listen=15001, server_id=spiffe://demo.local/x")],
            "zt.demo.local/mtls-outbound-be: upstream: `nohost` must be host:port",
        ),
        (
            vec![("mtls-outbound-be", "be:1, listen=15001, server_id=spiffe://demo.local/x/*")],
            "zt.demo.local/mtls-outbound-be: server_id: must be one exact SPIFFE ID",
        ),
        (
            vec![("admin-port", "8443"), ("mtls-inbound-8443", "8000, allow=spiffe://demo.local/a")],
            "zt.demo.local/mtls-inbound-8443: port 8443 is also used by zt.demo.local/admin-port",
        ),
        (
            vec![("mtls-outbound-be", "be:1, listen=15000, server_id=spiffe://demo.local/x")],
            "zt.demo.local/mtls-outbound-be: listen: 127.0.0.1:15000 is already used by another listener",
        ),
        (
            vec![("mtls-inbound-15000", "8000, allow=spiffe://demo.local/a")],
            "zt.demo.local/mtls-inbound-15000: port 15000 is also used by zt.demo.local/admin-port (the default admin port)",
        ),
        (
            vec![("mtls-inbound-8443", "8000, allow=spiffe://demo.local/a, handshake_timeout=0s")],
            "zt.demo.local/mtls-inbound-8443: handshake_timeout: must be greater than zero",
        ),
    ];
    for (pairs, want) in cases {
        let got = render_err(&pairs);
        assert!(
            got.starts_with(want),
            "{pairs:?}\n  got:  {got}\n  want: {want}"
        );
    }
}

#[test]
fn without_openbao_or_database_defaults_the_annotation_must_say() {
    let bare = Settings::parse("[kubernetes]\nnamespace = \"zt\"\n", &env()).unwrap();
    let a = sidecar_annotations(&[("openbao-role", "backend")]);
    assert_eq!(
        from_annotations(&a, &bare).unwrap_err().to_string(),
        "zt.demo.local/openbao-role: this injector has no OpenBao address configured (chart value defaults.openbao.address)"
    );
    let with_bao = Settings::parse(
        "[kubernetes]\nnamespace = \"zt\"\n[sidecar.openbao]\naddress = \"http://bao:8200\"\n",
        &env(),
    )
    .unwrap();
    let a = sidecar_annotations(&[("openbao-role", "backend"), ("database-db", "r")]);
    assert_eq!(
        from_annotations(&a, &with_bao).unwrap_err().to_string(),
        "zt.demo.local/database-db: port: is required"
    );
    let a = sidecar_annotations(&[
        ("openbao-role", "backend"),
        ("database-db", "r, host=pg.example, port=6432, database=app"),
    ]);
    let r = from_annotations(&a, &with_bao).unwrap();
    assert_eq!(r.config.secrets.database[0].host, "pg.example");
}

const GOOD_CM: &str = r#"
[identity]
workload_api = "unix:/run/spire/sockets/spire-agent.sock"
[openbao]
address = "http://openbao:8200"
role = "backend"
[secrets]
dir = "/run/zt/secrets"
file_mode = "0440"
group = 10001
[[secrets.kv]]
name = "k"
path = "a/b"
[proxy]
listen = ["unix:/run/zt/openbao.sock"]
"#;

#[test]
fn a_config_maps_toml_is_judged_by_the_sidecar_and_the_placement_rules() {
    let s = settings();
    let r = from_config_map("sc", GOOD_CM, &s).unwrap();
    assert_eq!(r.toml, GOOD_CM, "delivered exactly as validated");
    let cases: Vec<(String, &str)> = vec![
        (
            "this is not toml".into(),
            "zt.demo.local/config-map: ConfigMap sc: sidecar.toml is not a valid zt-sidecar configuration: TOML parse error",
        ),
        (
            "[secrets]\nfile_mode = \"0444\"\n".into(),
            "zt.demo.local/config-map: ConfigMap sc: sidecar.toml is not a valid zt-sidecar configuration: secrets.file_mode: 0444 lets every user read",
        ),
        (
            GOOD_CM.replace("group = 10001\n", ""),
            "zt.demo.local/config-map: ConfigMap sc: secrets.group is not set: the app containers run as another uid",
        ),
        (
            GOOD_CM.replace("file_mode = \"0440\"", "file_mode = \"0400\""),
            "zt.demo.local/config-map: ConfigMap sc: secrets.file_mode 0400 gives the secrets group no read access",
        ),
        (
            GOOD_CM.replace("dir = \"/run/zt/secrets\"", "dir = \"/var/secrets\""),
            "zt.demo.local/config-map: ConfigMap sc: secrets.dir /var/secrets is outside /run/zt",
        ),
        (
            GOOD_CM.replace("unix:/run/zt/openbao.sock", "unix:/tmp/openbao.sock"),
            "zt.demo.local/config-map: ConfigMap sc: proxy.listen /tmp/openbao.sock is outside /run/zt",
        ),
        (
            GOOD_CM.replace("/run/spire/sockets/spire-agent.sock", "/var/run/agent.sock"),
            "zt.demo.local/config-map: ConfigMap sc: identity.workload_api unix:/var/run/agent.sock is outside /run/spire/sockets",
        ),
        (
            format!("{GOOD_CM}\n[[mtls.inbound]]\nlisten = \"0.0.0.0:8443\"\nforward_to = \"127.0.0.1:8000\"\nallow = [\"spiffe://other.org/ns/a/sa/b\"]\n"),
            "zt.demo.local/config-map: ConfigMap sc: allow: `spiffe://other.org/ns/a/sa/b` is in trust domain `other.org`, not this cluster's `demo.local`",
        ),
        (
            format!("{GOOD_CM}\n[admin]\nlisten = \"127.0.0.1:8443\"\n[[mtls.inbound]]\nlisten = \"0.0.0.0:8443\"\nforward_to = \"127.0.0.1:8000\"\nallow = [\"spiffe://demo.local/a\"]\n"),
            "zt.demo.local/config-map: ConfigMap sc: port 8443 is also used by admin.listen",
        ),
        (
            format!("{GOOD_CM}\n[admin]\nlisten = \"0.0.0.0:15000\"\n"),
            "zt.demo.local/config-map: ConfigMap sc: admin.listen 0.0.0.0:15000 must be a loopback address",
        ),
        (
            format!("{GOOD_CM}\n[log]\nlevel = \"info,hyper=trace\"\n"),
            "zt.demo.local/config-map: ConfigMap sc: log.level \"info,hyper=trace\": trace is not allowed in a pod",
        ),
        (
            format!("{GOOD_CM}#{}", "x".repeat(MAX_CONFIG_MAP_BYTES)),
            "zt.demo.local/config-map: ConfigMap sc: sidecar.toml is 65",
        ),
    ];
    for (text, want) in cases {
        let got = from_config_map("sc", &text, &s).unwrap_err().to_string();
        assert!(
            got.starts_with(want),
            "{text}\n  got:  {got}\n  want: {want}"
        );
    }
}

#[test]
fn the_chart_defaults_make_valid_sidecar_configurations() {
    check_defaults(&settings()).unwrap();
}
