//! Neither of the sidecar's HTTP clients follows a redirect (issue 16, 4):
//! reqwest follows up to ten by default, and `X-Vault-Token` is not one of
//! the headers it drops when the host changes, so a 307 from whatever
//! answers at the OpenBao address would hand the token to another host.
//!
//! A real redirect, on real sockets: a tiny HTTP server answers every
//! request with `307` to a second server on another loopback host, which
//! records whatever reaches it. Nothing may.

use std::collections::BTreeMap;
mod scripted;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use scripted::{serve, Seen};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zt_contracts::Sensitive;
use zt_sidecar::config::Config;
use zt_sidecar::openbao::{BaoError, OpenBao};
use zt_sidecar::openbao::{Token, TokenCheck, Tokens};
use zt_sidecar::proxy::Proxy;
use zt_sidecar::status::State;

const TOKEN: &str = "s.redirect-test-token-must-stay-home";

/// The sink on another host (127.0.0.2) and a redirector that sends every
/// request there, path and all.
async fn redirect_pair() -> (SocketAddr, Seen, Seen) {
    let sink = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let sink_seen = serve(sink, |_| {
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".into()
    });
    let redirector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector_addr = redirector.local_addr().unwrap();
    let redirector_seen = serve(redirector, move |head| {
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{sink_addr}{path}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    });
    (redirector_addr, redirector_seen, sink_seen)
}

fn assert_token_stayed_home(redirector: &Seen, sink: &Seen) {
    let asked = redirector.lock().unwrap();
    assert!(!asked.is_empty(), "the redirector was asked");
    let reached = sink.lock().unwrap();
    assert!(
        reached.is_empty(),
        "the redirect was followed: {} request(s) reached the other host{}",
        reached.len(),
        if reached
            .iter()
            .any(|h| h.to_ascii_lowercase().contains("x-vault-token"))
        {
            ", carrying X-Vault-Token"
        } else {
            ""
        }
    );
}

#[tokio::test]
async fn the_openbao_client_does_not_follow_redirects() {
    let (redirector, asked, reached) = redirect_pair().await;
    let bao = OpenBao::new(&format!("http://{redirector}"), Duration::from_secs(5)).unwrap();
    let token = Sensitive::new(TOKEN);
    let read = bao
        .kv_read(&token, "secret", "backend/jwt-signing-key")
        .await;
    // A login carries a JWT-SVID in its body: same rule.
    let jwt = Sensitive::new("eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl");
    let login = bao.login_jwt("jwt", "backend", &jwt).await;
    assert_token_stayed_home(&asked, &reached);
    assert!(
        matches!(read, Err(BaoError::Status { status: 307, .. })),
        "a 3xx is an error status: {read:?}"
    );
    assert!(
        matches!(login, Err(BaoError::Status { status: 307, .. })),
        "{login:?}"
    );
}

#[tokio::test]
async fn the_proxy_does_not_follow_redirects() {
    let (redirector, asked, reached) = redirect_pair().await;
    let upstream = format!("http://{redirector}");
    let config = Config::parse(
        &format!(
            r#"
[openbao]
address = "{upstream}"
role = "backend"
[proxy]
listen = ["tcp:127.0.0.1:1"]
[[proxy.allow]]
path = "secret/data/github/users/*"
methods = ["GET"]
"#
        ),
        &BTreeMap::<String, String>::new(),
    )
    .unwrap();
    let state = State::new(Arc::new(config.clone()));
    let token = Token {
        secret: Sensitive::new(TOKEN),
        generation: 1,
        expires_at: SystemTime::now() + Duration::from_secs(3600),
        capped: false,
    };
    let (_tx, tokens) = watch::channel(Tokens {
        current: Some(Arc::new(token)),
        retired: Vec::new(),
    });
    let proxy = Proxy::new(
        config.proxy.clone().unwrap(),
        &upstream,
        tokens,
        TokenCheck::default(),
        state,
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(zt_sidecar::serve::serve_tcp(
        listener,
        move |req| proxy.clone().handle(req),
        cancel.clone(),
    ));
    // The app's own client must not follow either, or we could not tell.
    let app = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = app
        .get(format!("http://{addr}/v1/secret/data/github/users/7"))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_token_stayed_home(&asked, &reached);
    assert_eq!(status, 307, "the 3xx goes back to the app as is");
    cancel.cancel();
}
