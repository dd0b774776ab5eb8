//! The OpenBao client on real sockets against a scripted server: where each
//! call goes, which errors the callers tell apart, that no call follows a
//! redirect, and that no error carries a response body (vaultrs's own errors
//! can: a login or creds answer holds a token or a password).

mod scripted;

use std::net::SocketAddr;
use std::time::Duration;

use scripted::{serve, Seen};
use tokio::net::TcpListener;
use zt_contracts::Sensitive;
use zt_sidecar::openbao::{BaoError, OpenBao};

const TOKEN: &str = "s.client-test-token-must-stay-home";
const SECRET: &str = "hunter2-must-not-show";

fn response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn server(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> (OpenBao, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = serve(listener, answer);
    (client(addr, Duration::from_secs(5)), seen)
}

fn client(addr: SocketAddr, timeout: Duration) -> OpenBao {
    OpenBao::new(&format!("http://{addr}"), timeout).unwrap()
}

/// Every call the sidecar makes, each answered by the same server; the
/// results in call order.
async fn every_call(bao: &OpenBao) -> Vec<(&'static str, Result<(), BaoError>)> {
    let token = Sensitive::new(TOKEN);
    let jwt = Sensitive::new("eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl");
    let hour = Duration::from_secs(3600);
    let lease = "database/creds/backend/abc123";
    vec![
        (
            "login",
            bao.login_jwt("jwt", "backend", &jwt).await.map(|_| ()),
        ),
        ("renew-self", bao.renew_self(&token, hour).await.map(|_| ())),
        ("revoke-self", bao.revoke_self(&token).await),
        (
            "kv",
            bao.kv_read(&token, "secret", "backend/jwt-signing-key")
                .await
                .map(|_| ()),
        ),
        (
            "creds",
            bao.db_creds(&token, "database", "backend")
                .await
                .map(|_| ()),
        ),
        (
            "lease-renew",
            bao.renew_lease(&token, lease, hour).await.map(|_| ()),
        ),
        ("lease-revoke", bao.revoke_lease(&token, lease).await),
    ]
}

fn request_line(head: &str) -> String {
    head.lines().next().unwrap_or_default().to_string()
}

fn carries_token(head: &str) -> bool {
    head.lines()
        .any(|l| l.to_ascii_lowercase().starts_with("x-vault-token:") && l.ends_with(TOKEN))
}

#[tokio::test]
async fn each_call_goes_where_openbao_expects_it() {
    let (bao, seen) =
        server(|_| response("403 Forbidden", r#"{"errors":["permission denied"]}"#)).await;
    let results = every_call(&bao).await;
    let seen = seen.lock().unwrap().clone();
    let lines: Vec<String> = seen.iter().map(|h| request_line(h)).collect();
    assert_eq!(
        lines,
        [
            "POST /v1/auth/jwt/login HTTP/1.1",
            "POST /v1/auth/token/renew-self HTTP/1.1",
            "POST /v1/auth/token/revoke-self HTTP/1.1",
            // vaultrs ends the KV read with an empty query; OpenBao ignores it.
            "GET /v1/secret/data/backend/jwt-signing-key? HTTP/1.1",
            "GET /v1/database/creds/backend HTTP/1.1",
            "PUT /v1/sys/leases/renew/database/creds/backend/abc123 HTTP/1.1",
            "PUT /v1/sys/leases/revoke/database/creds/backend/abc123 HTTP/1.1",
        ]
    );
    assert!(!carries_token(&seen[0]), "a login sends no token");
    assert!(
        seen[1..].iter().all(|h| carries_token(h)),
        "every other call sends the token"
    );
    for (call, r) in results {
        match r {
            Err(e @ BaoError::Status { status: 403, .. }) => {
                assert!(e.is_invalid_credential(), "{call}: 403 means re-login");
                assert!(e.to_string().contains("permission denied"), "{call}: {e}");
            }
            other => panic!("{call}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn no_call_follows_a_redirect() {
    let sink = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let reached = serve(sink, |_| response("200 OK", "{}"));
    let (bao, asked) = server(move |head| {
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{sink_addr}{path}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    })
    .await;
    let results = every_call(&bao).await;
    assert_eq!(asked.lock().unwrap().len(), results.len());
    assert!(
        reached.lock().unwrap().is_empty(),
        "a redirect was followed"
    );
    for (call, r) in results {
        assert!(
            matches!(r, Err(BaoError::Status { status: 307, .. })),
            "{call}: a 3xx is an error status: {r:?}"
        );
    }
}

#[tokio::test]
async fn the_errors_callers_tell_apart() {
    let (bao, _) = server(|head| {
        let line = request_line(head);
        if line.contains("/auth/token/renew-self") {
            response("400 Bad Request", r#"{"errors":["invalid token"]}"#)
        } else if line.contains("/sys/leases/renew/") {
            response("400 Bad Request", r#"{"errors":["lease not found"]}"#)
        } else if line.contains("/secret/data/") {
            // A missing KV secret: 404 with no errors.
            response("404 Not Found", r#"{"errors":[]}"#)
        } else {
            response(
                "503 Service Unavailable",
                r#"{"errors":["Vault is sealed"]}"#,
            )
        }
    })
    .await;
    let token = Sensitive::new(TOKEN);
    let hour = Duration::from_secs(3600);

    let renew = bao.renew_self(&token, hour).await.unwrap_err();
    assert!(renew.is_invalid_credential(), "{renew}");
    let lease = bao
        .renew_lease(&token, "database/creds/backend/x", hour)
        .await
        .unwrap_err();
    assert!(lease.is_invalid_credential(), "lease gone: {lease}");
    assert!(bao
        .kv_read(&token, "secret", "a/b")
        .await
        .unwrap()
        .is_none());
    let sealed = bao.revoke_self(&token).await.unwrap_err();
    assert!(
        matches!(sealed, BaoError::Status { status: 503, ref message } if message == "Vault is sealed"),
        "{sealed:?}"
    );
    assert!(!sealed.is_invalid_credential(), "5xx: retry, not re-login");

    // Nobody listening: unreachable, retried.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let refused = client(addr, Duration::from_secs(5))
        .renew_self(&token, hour)
        .await
        .unwrap_err();
    assert!(matches!(refused, BaoError::Unreachable(_)), "{refused:?}");

    // Accepts but never answers: the request timeout holds.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            open.push(sock);
        }
    });
    let slow = client(addr, Duration::from_millis(300))
        .login_jwt("jwt", "backend", &Sensitive::new("e30"))
        .await
        .unwrap_err();
    assert!(
        matches!(&slow, BaoError::Unreachable(m) if m.contains("timed out")),
        "{slow:?}"
    );
}

#[tokio::test]
async fn errors_never_carry_a_response_body() {
    let (bao, _) = server(|head| {
        let line = request_line(head);
        if line.contains("/login") || line.contains("/renew-self") {
            // A 2xx that does not parse, holding a token.
            response(
                "200 OK",
                &format!(r#"{{"auth":{{"client_token":"{SECRET}","lease_duration":"soon"}}}}"#),
            )
        } else if line.starts_with("GET /v1/database/creds/") {
            response(
                "200 OK",
                &format!(r#"{{"data":{{"username":"u","password":"{SECRET}"}}}}"#),
            )
        } else if line.contains("/secret/data/") {
            response("200 OK", &format!(r#"{{"data":{{"data":"{SECRET}"}}}}"#))
        } else {
            response(
                "500 Internal Server Error",
                &format!("<html>{SECRET}</html>"),
            )
        }
    })
    .await;
    for (call, r) in every_call(&bao).await {
        let e = r.expect_err(call);
        for shown in [e.to_string(), format!("{e:?}"), format!("{e:#?}")] {
            assert!(!shown.contains(SECRET), "{call}: the error shows the body");
            assert!(!shown.contains(TOKEN), "{call}: the error shows the token");
        }
    }
}

#[tokio::test]
async fn a_kv_version_has_typed_metadata_and_never_shows_its_values() {
    let body = format!(
        r#"{{"request_id":"r","lease_id":"","lease_duration":0,"renewable":false,"data":{{"data":{{"key":"{SECRET}","n":7}},"metadata":{{"created_time":"2026-11-28T14:08:51.123456789Z","custom_metadata":null,"deletion_time":"","destroyed":false,"version":3}}}},"warnings":null,"wrap_info":null,"auth":null}}"#
    );
    let (bao, _) = server(move |_| response("200 OK", &body)).await;
    let token = Sensitive::new(TOKEN);
    let v = bao
        .kv_read(&token, "secret", "backend/jwt-signing-key")
        .await
        .unwrap()
        .expect("present");
    assert_eq!(v.version, 3);
    assert_eq!(
        v.created_time.map(|t| t.unix_timestamp_nanos()),
        Some(1_795_874_931_123_456_789)
    );
    // assert!, not assert_eq!: a failure must not print the value.
    assert!(
        v.data.expose()["key"] == SECRET,
        "data.key as OpenBao gave it"
    );
    let shown = format!("{v:?}");
    assert!(
        shown.contains("key") && !shown.contains(SECRET),
        "Debug shows the value"
    );
    // The file keeps OpenBao's time to the nanosecond and the data as is.
    let file = zt_contracts::KvFile {
        version: v.version,
        created_time: v.created_time,
        data: v.data,
    };
    let bytes = String::from_utf8(file.to_file_bytes().unwrap()).unwrap();
    assert!(bytes.starts_with(
        r#"{"version":3,"created_time":"2026-11-28T14:08:51.123456789Z","data":{"key":""#
    ));
    assert!(bytes.ends_with(",\"n\":7}}\n"), "the data's keys sorted");
}
