//! A scripted HTTP/1.1 server on a real socket, for the tests of the
//! sidecar's OpenBao client: it answers each request head as told and keeps
//! every head it received (what went where, with which headers).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Request heads a server received.
pub type Seen = Arc<Mutex<Vec<String>>>;

/// Serves `answer(request head)` on `listener` (one request per connection),
/// recording every head.
pub fn serve(
    listener: TcpListener,
    answer: impl Fn(&str) -> String + Send + Sync + 'static,
) -> Seen {
    let seen: Seen = Arc::default();
    let (log, answer) = (seen.clone(), Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (log, answer) = (log.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                log.lock().unwrap().push(head.clone());
                let _ = sock.write_all(answer(&head).as_bytes()).await;
            });
        }
    });
    seen
}
