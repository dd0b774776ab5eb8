//! The OpenBao API proxy against the real OpenBao: allowed calls work, every
//! trick is refused with a reason, the app never needs a token.

mod common;

use common::{Harness, Setup};
use serde_json::{json, Value};

#[test]
fn allow_listed_calls_work_and_everything_else_is_refused() {
    let h = Harness::start(Setup {
        proxy_tcp: true,
        ..Setup::default()
    });
    let body = json!({"data": {"token": "ghp_test_value_123"}}).to_string();
    let ct = [("Content-Type", "application/json")];

    // Allowed: write, read, delete a per-user token.
    let (code, resp) = h.proxy(
        "PUT",
        "/v1/secret/data/github/users/1",
        &ct,
        body.as_bytes(),
    );
    assert_eq!(code, 200, "{resp}");
    let (code, resp) = h.proxy("GET", "/v1/secret/data/github/users/1", &[], b"");
    assert_eq!(code, 200, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["data"]["data"]["token"], "ghp_test_value_123");
    // Proof from OpenBao itself (root token): the secret is where the proxy put it.
    let direct = h
        .stack
        .root_bao()
        .read("secret/data/github/users/1")
        .unwrap()
        .unwrap();
    assert_eq!(direct["data"]["data"]["token"], "ghp_test_value_123");
    let (code, _) = h.proxy("DELETE", "/v1/secret/metadata/github/users/1", &[], b"");
    assert_eq!(code, 204);
    assert!(h
        .stack
        .root_bao()
        .read("secret/data/github/users/1")
        .unwrap()
        .is_none());

    // A TCP listener answers callers that name it by address or as
    // localhost, and refuses a browser context: a DNS-rebinding page
    // reaches the port under its own name, and sends an Origin (the
    // sidecar would otherwise add its token to the page's reads).
    let port = h.layout.proxy_tcp.unwrap().port();
    let path = "/v1/secret/data/github/users/1";
    let (code, resp) = h.proxy("PUT", path, &ct, body.as_bytes());
    assert_eq!(code, 200, "{resp}");
    for host in [format!("127.0.0.1:{port}"), "localhost".to_string()] {
        let (code, resp) = h.proxy_tcp("GET", path, &host, &[], b"");
        assert_eq!(code, 200, "Host: {host}: {resp}");
    }
    let evil = format!("rebind.evil.example:{port}");
    let (code, resp) = h.proxy_tcp("GET", path, &evil, &[], b"");
    assert_eq!(code, 403, "{resp}");
    assert!(resp.contains("DNS rebinding"), "{resp}");
    assert!(!resp.contains("ghp_test_value_123"), "{resp}");
    let (code, resp) = h.proxy_tcp(
        "GET",
        path,
        &format!("127.0.0.1:{port}"),
        &[("Origin", "http://rebind.evil.example")],
        b"",
    );
    assert_eq!(code, 403, "{resp}");
    assert!(resp.contains("another origin"), "{resp}");
    // The socket is out of a browser's reach: its Host is not checked.
    let (code, resp) = h.proxy("GET", path, &[("X-Unused", "1")], b"");
    assert_eq!(code, 200, "{resp}");
    let (code, _) = h.proxy("DELETE", "/v1/secret/metadata/github/users/1", &[], b"");
    assert_eq!(code, 204);

    // Refused, each with a 403 and a reason naming the rule or its absence.
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let refusals: &[(&str, &str, Headers<'_>, &str)] = &[
        // Other paths — even ones the sidecar's token could read.
        (
            "GET",
            "/v1/secret/data/backend/jwt-signing-key",
            &[],
            "no allow-list rule",
        ),
        (
            "GET",
            "/v1/database/creds/backend-role",
            &[],
            "no allow-list rule",
        ),
        ("GET", "/v1/sys/mounts", &[], "no allow-list rule"),
        (
            "POST",
            "/v1/sys/leases/revoke-prefix/database",
            &[],
            "no allow-list rule",
        ),
        (
            "GET",
            "/v1/auth/token/lookup-self",
            &[],
            "no allow-list rule",
        ),
        // Other methods.
        (
            "PATCH",
            "/v1/secret/data/github/users/1",
            &[],
            "allows only",
        ),
        (
            "GET",
            "/v1/secret/metadata/github/users/1?list=true",
            &[],
            "allows only",
        ),
        (
            "LIST",
            "/v1/secret/metadata/github/users/",
            &[],
            "empty path segment",
        ),
        // Query keys OpenBao treats as operations (issue 16, 4): only
        // `list` was mapped, so `?help=1` was forwarded and answered with
        // the path's help, and `?scan=true` reached OpenBao as a SCAN.
        (
            "GET",
            "/v1/secret/data/github/users/1?help=1",
            &[],
            "allows only",
        ),
        (
            "PUT",
            "/v1/secret/data/github/users/1?help=true",
            &[],
            "allows only",
        ),
        (
            "GET",
            "/v1/secret/data/github/users/1?scan=true",
            &[],
            "allows only",
        ),
        (
            "GET",
            "/v1/secret/data/github/users/1?list=yes",
            &[],
            "true or false",
        ),
        // Only query keys the rule allows (the backend's rules allow none).
        (
            "GET",
            "/v1/secret/data/github/users/1?version=1",
            &[],
            "allows no query keys",
        ),
        (
            "GET",
            "/v1/secret/data/github/users/1?version=1;list=true",
            &[],
            "`;`",
        ),
        // Traversal and encoding tricks.
        (
            "GET",
            "/v1/secret/data/github/users/../../backend/jwt-signing-key",
            &[],
            "`.` or `..`",
        ),
        (
            "GET",
            "/v1/secret/data/github/users/..%2f..%2fbackend%2fjwt-signing-key",
            &[],
            "encoded",
        ),
        (
            "GET",
            "/v1/secret/data/github/users/%2e%2e/%2e%2e/backend/jwt-signing-key",
            &[],
            "`.` or `..`",
        ),
        (
            "GET",
            "/v1/secret/data/github/users//1",
            &[],
            "empty path segment",
        ),
        ("GET", "/v1//sys/mounts", &[], "empty path segment"),
        ("GET", "/v1/secret/data/github/users/1%00", &[], "control"),
        // Smuggled tokens.
        (
            "GET",
            "/v1/secret/data/github/users/1",
            &[("X-Vault-Token", "s.smuggled")],
            "x-vault-token",
        ),
        (
            "GET",
            "/v1/secret/data/github/users/1",
            &[("X-OpenBao-Token", "s.smuggled")],
            "x-openbao-token",
        ),
        (
            "GET",
            "/v1/secret/data/github/users/1",
            &[("Authorization", "Bearer s.smuggled")],
            "authorization",
        ),
    ];
    for (method, path, headers, reason) in refusals {
        let (code, resp) = h.proxy(method, path, headers, b"");
        assert_eq!(code, 403, "{method} {path}: {resp}");
        let v: Value = serde_json::from_str(&resp)
            .unwrap_or_else(|_| panic!("JSON error body for {path}: {resp}"));
        let msg = v["errors"][0].as_str().unwrap_or_default();
        assert!(msg.starts_with("zt-sidecar:"), "{path}: {msg}");
        assert!(
            msg.contains(reason),
            "{method} {path}: expected `{reason}` in {msg}"
        );
    }
    // The signing key was never reachable through any of those.
    assert!(h
        .stack
        .root_bao()
        .read("secret/data/backend/jwt-signing-key")
        .unwrap()
        .is_some());

    // Oversize body: 413 without forwarding.
    let big = vec![b'x'; 1024 * 1024 + 1];
    let (code, resp) = h.proxy("PUT", "/v1/secret/data/github/users/2", &ct, &big);
    assert_eq!(code, 413, "{resp}");
    assert!(h
        .stack
        .root_bao()
        .read("secret/data/github/users/2")
        .unwrap()
        .is_none());

    // Upstream errors pass through unchanged (OpenBao's own 404 JSON).
    let (code, _) = h.proxy("GET", "/v1/secret/data/github/users/404", &[], b"");
    assert_eq!(code, 404);

    // One log line per request with method, path and status — never bodies.
    let log = h.sidecar.log();
    assert!(log.contains("openbao proxy"), "{}", common::tail(&log, 20));
    assert!(
        !log.contains("ghp_test_value_123"),
        "a proxied secret reached the log"
    );
    assert!(
        !log.contains("s.smuggled"),
        "a smuggled token reached the log"
    );
    let metrics = h.sidecar.admin_get("/metrics").unwrap().1;
    assert!(
        metrics.contains("zt_proxy_requests_total{status=\"403\"}"),
        "{metrics}"
    );
}
