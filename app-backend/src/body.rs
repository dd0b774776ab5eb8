//! Response bodies of the services the backend calls (GitHub, its sidecar's
//! admin endpoint), read with a size cap that holds however the body is
//! framed: a declared `Content-Length` over the cap is refused before
//! anything is read, and a chunked (or close-delimited) body is refused as
//! soon as what arrived passes the cap, instead of after all of it is in
//! memory.

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the cap (declared or as it arrived).
    TooLarge,
    /// The transfer failed (timeout, connection cut).
    Transport(reqwest::Error),
}

/// The whole body of `resp`, at most `limit` bytes.
pub async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if out.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers one request with `head` and then `chunks`
    /// chunked chunks of 64 KiB, counting the chunks it managed to write.
    async fn chunked_server(chunks: usize) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() {
                return 0;
            }
            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
            let mut sent = 0;
            for _ in 0..chunks {
                if s.write_all(chunk.as_bytes()).await.is_err() {
                    break;
                }
                sent += 1;
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
            sent
        });
        (format!("http://{addr}/"), task)
    }

    #[tokio::test]
    async fn a_chunked_body_past_the_cap_is_refused_before_the_rest_is_read() {
        // 64 MiB offered, 1 MiB allowed.
        let (url, server) = chunked_server(1024).await;
        let resp = reqwest::get(&url).await.unwrap();
        assert!(resp.content_length().is_none(), "not chunked");
        let r = read_capped(resp, 1024 * 1024).await;
        assert!(matches!(r, Err(BodyError::TooLarge)), "{r:?}");
        // The reader stopped: the server could not write the whole 64 MiB
        // (socket buffers hold a few MiB at most).
        let sent = server.await.unwrap();
        assert!(sent < 512, "the server wrote {sent} of 1024 chunks");
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        let (url, server) = chunked_server(4).await;
        let body = read_capped(reqwest::get(&url).await.unwrap(), 1024 * 1024)
            .await
            .unwrap();
        assert_eq!(body.len(), 4 * 64 * 1024);
        assert_eq!(server.await.unwrap(), 4);
    }
}
