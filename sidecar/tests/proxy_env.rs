//! A proxy in the environment (`HTTP_PROXY`, `ALL_PROXY`, set cluster-wide in
//! many companies) never sees the sidecar's OpenBao traffic: OpenBao is often
//! plain `http://` inside a cluster, and the JWT-SVID and every token would
//! cross the proxy in clear text. The only test in this binary, because it
//! sets the process's environment.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use zt_contracts::Sensitive;
use zt_sidecar::openbao::OpenBao;

#[tokio::test]
async fn openbao_calls_ignore_proxy_variables() {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = proxy.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
        }
    });
    for var in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"] {
        std::env::set_var(var, &proxy_url);
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");

    // A name that does not resolve: only a proxy could carry the request.
    let bao = OpenBao::new("http://openbao.invalid:8200", Duration::from_secs(3)).unwrap();
    let jwt = Sensitive::new("eyJ.jwt-svid-for-the-proxy-test.sig");
    let err = bao.login_jwt("jwt", "app", &jwt).await.unwrap_err();
    let token = Sensitive::new("s.token-for-the-proxy-test");
    let _ = bao.revoke_self(&token).await.unwrap_err();
    let _ = bao
        .revoke_lease(&token, "database/creds/app/abc")
        .await
        .unwrap_err();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "an OpenBao call went through the proxy from the environment ({err})"
    );
}
