//! The bootstrap carries OpenBao's root token and unseal keys: they must go to
//! the address it was given and nowhere else — not to where a 3xx points, not
//! through a proxy from the environment.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A listener that counts connections and answers each with `response`.
fn server(response: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (addr, hits)
}

#[test]
fn keys_and_root_token_follow_no_redirect_and_no_proxy() {
    let (elsewhere, elsewhere_hits) =
        server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".into());
    let (openbao, openbao_hits) = server(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}/v1/sys/init\r\n\
         content-length: 0\r\nconnection: close\r\n\r\n"
    ));

    // A redirect: initialise (POST sys/init) and the token-carrying client.
    let err = zt_bootstrap::openbao::initialise(&openbao).unwrap_err();
    assert!(
        openbao_hits.load(Ordering::SeqCst) >= 1,
        "OpenBao was not asked"
    );
    assert_eq!(
        elsewhere_hits.load(Ordering::SeqCst),
        0,
        "the bootstrap followed a redirect ({err:#})"
    );
    assert!(zt_bootstrap::openbao::is_initialised(&openbao).is_err());
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0);

    // A proxy in the environment: ignored. (The only test in this binary,
    // so no other thread reads the environment meanwhile.)
    std::env::set_var("HTTP_PROXY", &elsewhere);
    std::env::set_var("ALL_PROXY", &elsewhere);
    std::env::set_var("http_proxy", &elsewhere);
    let before = openbao_hits.load(Ordering::SeqCst);
    let _ = zt_bootstrap::openbao::state(&openbao);
    let _ = zt_bootstrap::openbao::initialise(&openbao);
    assert_eq!(
        elsewhere_hits.load(Ordering::SeqCst),
        0,
        "the bootstrap went through HTTP_PROXY"
    );
    assert!(openbao_hits.load(Ordering::SeqCst) >= before + 2);
}
