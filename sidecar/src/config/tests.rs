use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, &env(&[]))
}

fn err(text: &str) -> String {
    parse(text)
        .expect_err("config should be refused")
        .to_string()
}

const MIN_DB: &str = r#"
[openbao]
address = "http://127.0.0.1:8200"
role = "backend"
[secrets]
dir = "/run/zt/secrets"
[[secrets.database]]
name = "db"
role = "backend-role"
host = "127.0.0.1"
port = 5432
database = "appdb"
"#;

#[test]
fn the_example_config_parses() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/backend.toml"
    ))
    .unwrap();
    let c = parse(&text).unwrap();
    assert_eq!(c.secrets.database.len(), 2);
    assert!(!c.secrets.database[0].releasable);
    assert!(c.secrets.database[1].releasable, "db-migrator");
    assert_eq!(c.secrets.file_mode, 0o440);
    assert_eq!(c.proxy.as_ref().unwrap().allow.len(), 2);
    assert_eq!(c.mtls.inbound[0].peer_id_header, "x-spiffe-peer-id");
}

#[test]
fn defaults_apply() {
    let c = parse(MIN_DB).unwrap();
    let db = &c.secrets.database[0];
    assert_eq!(db.rotate_before, DEFAULT_ROTATE_BEFORE);
    assert_eq!(db.revoke_grace, DEFAULT_REVOKE_GRACE);
    assert_eq!(db.mount, "database");
    assert_eq!(db.format, FileFormat::Json);
    assert!(db.required);
    assert!(!db.releasable);
    assert_eq!(c.secrets.file_mode, 0o400);
    let o = c.openbao.unwrap();
    assert_eq!(o.auth_mount, "jwt");
    assert_eq!(o.audience, "openbao");
    assert!(o.revoke_on_shutdown);
    assert_eq!(c.identity.workload_api, DEFAULT_WORKLOAD_API);
    assert_eq!(c.admin.listen.to_string(), DEFAULT_ADMIN_LISTEN);
}

#[test]
fn an_empty_config_is_an_identity_only_sidecar() {
    let c = parse("").unwrap();
    assert!(c.openbao.is_none() && c.proxy.is_none());
}

#[test]
fn env_overrides_socket_and_openbao_address() {
    let e = env(&[
        ("ZT_WORKLOAD_API", "unix:///tmp/agent.sock"),
        ("ZT_OPENBAO_ADDR", "https://bao.example:8200/"),
    ]);
    let c = Config::parse(MIN_DB, &e).unwrap();
    assert_eq!(c.identity.workload_api, "unix:/tmp/agent.sock");
    assert_eq!(c.openbao.unwrap().address, "https://bao.example:8200");
    // SPIFFE_ENDPOINT_SOCKET only when nothing else says.
    let c = Config::parse("", &env(&[("SPIFFE_ENDPOINT_SOCKET", "unix:/x.sock")])).unwrap();
    assert_eq!(c.identity.workload_api, "unix:/x.sock");
    let c = Config::parse(
        "[identity]\nworkload_api = \"unix:/cfg.sock\"",
        &env(&[("SPIFFE_ENDPOINT_SOCKET", "unix:/x.sock")]),
    )
    .unwrap();
    assert_eq!(c.identity.workload_api, "unix:/cfg.sock");
}

#[test]
fn garbage_env_override_names_the_variable() {
    let e = env(&[("ZT_WORKLOAD_API", "http://nope")]);
    let msg = Config::parse("", &e).unwrap_err().to_string();
    assert!(msg.starts_with("ZT_WORKLOAD_API:"), "{msg}");
    let e = env(&[("ZT_OPENBAO_ADDR", "bao:8200")]);
    let msg = Config::parse(MIN_DB, &e).unwrap_err().to_string();
    assert!(msg.starts_with("ZT_OPENBAO_ADDR:"), "{msg}");
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let msg = err("[identity]\nworkload_apii = \"unix:/x\"");
    assert!(msg.contains("workload_apii"), "{msg}");
    let msg = err(&format!("{MIN_DB}\nrotate_befor = \"1m\""));
    assert!(msg.contains("rotate_befor"), "{msg}");
    let msg = err("[nonsense]\n");
    assert!(msg.contains("nonsense"), "{msg}");
}

#[test]
fn wrong_types_are_refused() {
    let msg = err(&MIN_DB.replace("port = 5432", "port = \"5432\""));
    assert!(msg.contains("port") || msg.contains("integer"), "{msg}");
    let msg = err(&format!("{MIN_DB}releasable = \"yes\"\n"));
    assert!(msg.contains("releasable"), "{msg}");
}

#[test]
fn negative_zero_and_garbage_durations_are_refused() {
    for bad in ["-5s", "0s", "soon", "5", ""] {
        let msg = err(&format!("{MIN_DB}revoke_grace = \"{bad}\"\n"));
        assert!(
            msg.starts_with("secrets.database[0].revoke_grace:"),
            "{bad}: {msg}"
        );
    }
    let msg = err("[backoff]\ninitial = \"2m\"\nmax = \"1m\"");
    assert!(msg.starts_with("backoff.initial:"), "{msg}");
}

#[test]
fn bad_socket_uris_are_refused() {
    for bad in [
        "unix:relative.sock",
        "unix:",
        "http://127.0.0.1:1",
        "tcp://localhost",
        "/abs/no/scheme",
    ] {
        let msg = err(&format!("[identity]\nworkload_api = \"{bad}\""));
        assert!(msg.starts_with("identity.workload_api:"), "{bad}: {msg}");
    }
    let proxy = |l: &str| {
        format!("{MIN_DB}\n[proxy]\nlisten = [\"{l}\"]\n[[proxy.allow]]\npath = \"secret/data/x/*\"\nmethods = [\"GET\"]\n")
    };
    for bad in [
        "unix:rel.sock",
        "tcp:0.0.0.0:8200",
        "tcp:10.0.0.1:1",
        "8200",
        "tcp:127.0.0.1",
    ] {
        let msg = err(&proxy(bad));
        assert!(msg.starts_with("proxy.listen[0]:"), "{bad}: {msg}");
    }
    assert!(parse(&proxy("tcp:127.0.0.1:18300")).is_ok());
    assert!(parse(&proxy("unix:/run/zt/openbao.sock")).is_ok());
}

#[test]
fn file_modes_are_checked() {
    let with = |m: &str| {
        MIN_DB.replace(
            "dir = \"/run/zt/secrets\"",
            &format!("dir = \"/run/zt/secrets\"\nfile_mode = \"{m}\""),
        )
    };
    assert_eq!(parse(&with("0440")).unwrap().secrets.file_mode, 0o440);
    for bad in ["0644", "0200", "rw", "04755", "0777"] {
        let msg = err(&with(bad));
        assert!(msg.starts_with("secrets.file_mode:"), "{bad}: {msg}");
    }
}

#[test]
fn secrets_need_openbao_dir_and_unique_names() {
    let no_bao = MIN_DB.replace(
        "[openbao]\naddress = \"http://127.0.0.1:8200\"\nrole = \"backend\"\n",
        "",
    );
    assert!(err(&no_bao).starts_with("secrets:"));
    let no_dir = MIN_DB.replace("dir = \"/run/zt/secrets\"\n", "");
    assert!(err(&no_dir).starts_with("secrets.dir:"));
    let rel_dir = MIN_DB.replace("dir = \"/run/zt/secrets\"", "dir = \"secrets\"");
    assert!(err(&rel_dir).starts_with("secrets.dir:"));
    let dup = format!("{MIN_DB}[[secrets.kv]]\nname = \"db\"\npath = \"a/b\"\n");
    assert!(err(&dup).starts_with("secrets.kv[0].name:"));
    let bad_name = MIN_DB.replace("name = \"db\"", "name = \"../etc/passwd\"");
    assert!(err(&bad_name).starts_with("secrets.database[0].name:"));
    let bad_port = MIN_DB.replace("port = 5432", "port = 70000");
    assert!(err(&bad_port).starts_with("secrets.database[0].port:"));
    let missing_role = MIN_DB.replace("role = \"backend-role\"\n", "");
    assert_eq!(err(&missing_role), "secrets.database[0].role: is required");
    let bad_fmt = format!("{MIN_DB}format = \"yaml\"\n");
    assert!(err(&bad_fmt).starts_with("secrets.database[0].format:"));
    let kv_path = format!("{MIN_DB}[[secrets.kv]]\nname = \"k\"\npath = \"a/../sys\"\n");
    assert!(err(&kv_path).starts_with("secrets.kv[0].path:"));
}

#[test]
fn proxy_rules_are_checked() {
    let rule = |p: &str, m: &str| {
        format!("{MIN_DB}\n[proxy]\nlisten = [\"unix:/s.sock\"]\n[[proxy.allow]]\npath = \"{p}\"\nmethods = {m}\n")
    };
    for (p, m) in [
        ("sys/leases/*", "[\"GET\"]"),
        ("auth/token/create", "[\"POST\"]"),
        ("/secret/data/x", "[\"GET\"]"),
        ("secret/*/x", "[\"GET\"]"),
        ("secret/../sys", "[\"GET\"]"),
        ("secret/data/%2e%2e", "[\"GET\"]"),
        ("secret/data/x", "[\"PATCH\"]"),
        ("secret/data/x", "[]"),
    ] {
        let msg = err(&rule(p, m));
        assert!(msg.starts_with("proxy.allow[0]."), "{p} {m}: {msg}");
    }
    let ok = parse(&rule("secret/data/github/users/*", "[\"get\", \"DELETE\"]")).unwrap();
    assert_eq!(ok.proxy.unwrap().allow[0].methods, vec!["GET", "DELETE"]);
    // Query keys: data only; the ones OpenBao reads as operations are refused.
    let with_query = |q: &str| rule("secret/data/x/*", "[\"GET\"]") + &format!("query = {q}\n");
    let ok = parse(&with_query("[\"version\"]")).unwrap();
    assert_eq!(ok.proxy.unwrap().allow[0].query, vec!["version"]);
    assert!(parse(&rule("secret/data/x/*", "[\"GET\"]"))
        .unwrap()
        .proxy
        .unwrap()
        .allow[0]
        .query
        .is_empty());
    for (q, why) in [
        ("[\"list\"]", "allow the method instead"),
        ("[\"Scan\"]", "allow the method instead"),
        ("[\"help\"]", "allow the method instead"),
        ("[\"\"]", "not a query key"),
        ("[\"a=b\"]", "not a query key"),
    ] {
        let msg = err(&with_query(q));
        assert!(
            msg.starts_with("proxy.allow[0].query:") && msg.contains(why),
            "{q}: {msg}"
        );
    }
    let no_bao = "[proxy]\nlisten = [\"unix:/s.sock\"]\n";
    assert!(err(no_bao).starts_with("proxy:"));
    let big =
        rule("secret/data/x", "[\"GET\"]").replace("[proxy]\n", "[proxy]\nmax_body_bytes = -1\n");
    assert!(err(&big).starts_with("proxy.max_body_bytes:"));
}

#[test]
fn mtls_sections_are_checked() {
    let inbound = |allow: &str| {
        format!("[[mtls.inbound]]\nlisten = \"127.0.0.1:8443\"\nforward_to = \"127.0.0.1:8000\"\nallow = {allow}\n")
    };
    let c = parse(&inbound(
        "[\"spiffe://demo.local/ns/99-apps/sa/frontend\", \"spiffe://demo.local/ns/tools/*\"]",
    ))
    .unwrap();
    let allow = &c.mtls.inbound[0].allow;
    assert!(allow[0].matches("spiffe://demo.local/ns/99-apps/sa/frontend"));
    assert!(!allow[0].matches("spiffe://demo.local/ns/99-apps/sa/frontend2"));
    assert!(allow[1].matches("spiffe://demo.local/ns/tools/sa/x"));
    assert!(!allow[1].matches("spiffe://demo.local/ns/toolsx/sa/x"));
    assert!(!allow[1].matches("spiffe://other.td/ns/tools/sa/x"));
    for bad in [
        "[]",
        "[\"frontend\"]",
        "[\"spiffe://demo.local/*\"]",
        "[\"spiffe://demo.local/a*b\"]",
    ] {
        let msg = err(&inbound(bad));
        assert!(msg.starts_with("mtls.inbound[0].allow:"), "{bad}: {msg}");
    }
    let outbound = "[[mtls.outbound]]\nlisten = \"0.0.0.0:15001\"\nupstream = \"127.0.0.1:8443\"\nserver_id = \"spiffe://demo.local/x\"\n";
    assert!(err(outbound).starts_with("mtls.outbound[0].listen:"));
    let outbound = outbound
        .replace("0.0.0.0", "127.0.0.1")
        .replace("127.0.0.1:8443", "backend");
    assert!(err(&outbound).starts_with("mtls.outbound[0].upstream:"));
    let clash = format!(
        "[admin]\nlisten = \"127.0.0.1:8443\"\n{}",
        inbound("[\"spiffe://demo.local/a\"]")
    );
    assert!(err(&clash).contains("already used"), "{}", err(&clash));
}

#[test]
fn log_settings_are_checked() {
    assert!(err("[log]\nformat = \"xml\"").starts_with("log.format:"));
    assert!(err("[log]\nlevel = \"[[[\"").starts_with("log.level:"));
}

#[test]
fn a_missing_file_is_a_read_error_naming_the_path() {
    let msg = Config::load(Path::new("/nonexistent/zt.toml"), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nonexistent/zt.toml"), "{msg}");
}

#[test]
fn effective_config_renders_and_reparses_keys() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/backend.toml"
    ))
    .unwrap();
    let c = parse(&text).unwrap();
    let shown = c.to_toml();
    assert!(shown.contains("rotate_before = \"10m\""), "{shown}");
    assert!(shown.contains("file_mode = \"0440\""), "{shown}");
    assert!(shown.contains("unix:/run/zt/openbao.sock"), "{shown}");
}

#[test]
fn the_source_is_the_file_when_named_else_zt_config_else_an_error() {
    let with = env(&[(ENV_CONFIG, "[admin]\nlisten = \"127.0.0.1:15100\"\n")]);
    let file = PathBuf::from("/etc/zt/sidecar.toml");
    // An explicit --config beats the ambient environment.
    assert_eq!(
        ConfigOrigin::choose(Some(file.clone()), &with).unwrap(),
        ConfigOrigin::File(file.clone())
    );
    assert_eq!(
        ConfigOrigin::choose(None, &with).unwrap(),
        ConfigOrigin::Env
    );
    for empty in [env(&[]), env(&[(ENV_CONFIG, "")])] {
        let e = ConfigOrigin::choose(None, &empty).unwrap_err();
        assert!(matches!(e, ConfigError::Missing), "{e}");
        assert_eq!(
            e.to_string(),
            "no configuration: pass --config FILE or set ZT_CONFIG to the TOML text"
        );
    }
    assert_eq!(ConfigOrigin::Env.to_string(), "from ZT_CONFIG");
    assert_eq!(
        ConfigOrigin::File(file).to_string(),
        "file: /etc/zt/sidecar.toml"
    );
}

#[test]
fn zt_config_is_parsed_and_validated_like_a_file() {
    let c = Config::load_from(
        &ConfigOrigin::Env,
        &env(&[(ENV_CONFIG, "[admin]\nlisten = \"127.0.0.1:15100\"\n")]),
    )
    .unwrap();
    assert_eq!(c.admin.listen, "127.0.0.1:15100".parse().unwrap());
    // Same text, same result as from a file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, MIN_DB).unwrap();
    let from_file = Config::load_from(&ConfigOrigin::File(path), &env(&[])).unwrap();
    let from_env = Config::load_from(&ConfigOrigin::Env, &env(&[(ENV_CONFIG, MIN_DB)])).unwrap();
    assert_eq!(from_file.to_toml(), from_env.to_toml());
    // Syntax errors say where the text came from; invalid values name their key.
    let e = Config::load_from(&ConfigOrigin::Env, &env(&[(ENV_CONFIG, "not toml")]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("ZT_CONFIG: TOML parse error"), "{e}");
    let e = Config::load_from(
        &ConfigOrigin::Env,
        &env(&[(ENV_CONFIG, "[admin]\nlisten = \"nowhere\"\n")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("admin.listen: "), "{e}");
    // The other environment overrides still apply on top of ZT_CONFIG.
    let c = Config::load_from(
        &ConfigOrigin::Env,
        &env(&[
            (ENV_CONFIG, MIN_DB),
            (ENV_OPENBAO_ADDR, "http://10.0.0.9:8200"),
        ]),
    )
    .unwrap();
    assert_eq!(c.openbao.unwrap().address, "http://10.0.0.9:8200");
}
