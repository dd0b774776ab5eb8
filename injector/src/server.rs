//! The listeners: HTTPS for the API server's admission calls (`POST
//! /mutate`), plain HTTP for the kubelet's probes (`/healthz`, `/readyz`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use zt_sidecar::serve::{next_tcp, serve_conn};

use crate::admission::{ConfigMaps, Injector};
use crate::tls::{ServingCert, TlsStatus};

/// The admission path the webhook configuration names.
pub const MUTATE_PATH: &str = "/mutate";
/// Largest accepted AdmissionReview (a pod is at most ~1.5 MB in etcd).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Reviews read and judged at once. A request waits for a slot *before* its
/// body is read (it stays in the socket), so memory is bounded by this times
/// [`MAX_BODY_BYTES`] and a flood of large (dry-run) pods cannot push the
/// injector past its memory limit — which, the webhook failing closed,
/// would stop pod creation in every opted-in namespace.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 4;
/// How long a request waits for a slot before it is answered 503 (the API
/// server's own timeout is the webhook's `timeoutSeconds`, 5 s by default).
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(3);
/// Time a client gets to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client gets to send its request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping injector waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The rustls configuration: TLS 1.2/1.3, HTTP/1.1, the current serving certificate.
pub fn tls_config(serving: Arc<ServingCert>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves admission reviews on `listener` until `cancel`, then waits (at
/// most [`DRAIN_TIMEOUT`]) for the requests in flight.
pub async fn serve_https<C: ConfigMaps + 'static>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    injector: Arc<Injector<C>>,
    cancel: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_REVIEWS_IN_FLIGHT));
    while let Some((tcp, remote)) = next_tcp(&listener, &cancel).await {
        tracing::debug!(%remote, "connection");
        let (acceptor, injector, in_flight, slots) = (
            acceptor.clone(),
            injector.clone(),
            in_flight.clone(),
            slots.clone(),
        );
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            serve_conn(tls, move |req| {
                let (injector, in_flight, slots) =
                    (injector.clone(), in_flight.clone(), slots.clone());
                async move {
                    let Ok(Ok(_slot)) =
                        tokio::time::timeout(QUEUE_TIMEOUT, slots.acquire_owned()).await
                    else {
                        tracing::warn!("admission queue full: answered 503");
                        return Ok(text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "too many admission reviews at once",
                        ));
                    };
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let r = admission(&injector, req).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    r
                }
            })
            .await;
        });
    }
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admission<C: ConfigMaps>(
    injector: &Injector<C>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, MUTATE_PATH) => {}
        (&Method::GET, "/healthz") => return Ok(text(StatusCode::OK, "ok")),
        (_, MUTATE_PATH) => return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "POST only")),
        _ => return Ok(text(StatusCode::NOT_FOUND, "not found")),
    }
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            let too_big = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return Ok(if too_big {
                text(StatusCode::PAYLOAD_TOO_LARGE, "AdmissionReview too large")
            } else {
                text(StatusCode::BAD_REQUEST, "cannot read the request body")
            });
        }
        Err(_) => return Ok(text(StatusCode::REQUEST_TIMEOUT, "request body too slow")),
    };
    let review = injector.review(&bytes).await;
    match encode_review(review) {
        Ok(json) => {
            let mut r = Response::new(Full::new(Bytes::from(json)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the AdmissionReview");
            Ok(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the answer",
            ))
        }
    }
}

/// The AdmissionReview as JSON, with the patch as base64 text. kube-core
/// serialises the patch bytes as a JSON array of numbers, which the API
/// server accepts but decodes number by number (about four times the bytes,
/// and slow); `[]byte` is base64 in Kubernetes' own JSON.
pub fn encode_review(
    mut review: kube::core::admission::AdmissionReview<kube::core::DynamicObject>,
) -> Result<Vec<u8>, serde_json::Error> {
    use base64::Engine;
    let patch = review.response.as_mut().and_then(|r| r.patch.take());
    let mut v = serde_json::to_value(&review)?;
    if let (Some(patch), Some(response)) = (patch, v.get_mut("response")) {
        response["patch"] =
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    serde_json::to_vec(&v)
}

/// Serves `/healthz` (the process answers) and `/readyz` (a certificate is
/// loaded and the Secret was read recently) until `cancel`.
pub async fn serve_health(
    listener: TcpListener,
    serving: Arc<ServingCert>,
    status: Arc<TlsStatus>,
    stale_after: Duration,
    cancel: CancellationToken,
) {
    while let Some((tcp, _)) = next_tcp(&listener, &cancel).await {
        let (serving, status) = (serving.clone(), status.clone());
        tokio::spawn(serve_conn(tcp, move |req: Request<Incoming>| {
            let (serving, status) = (serving.clone(), status.clone());
            async move {
                Ok::<_, Infallible>(match req.uri().path() {
                    "/healthz" => text(StatusCode::OK, "ok"),
                    "/readyz" if !serving.ready() => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no serving certificate yet (waiting for the TLS Secret)",
                    ),
                    "/readyz" if !status.fresh(stale_after) => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the TLS Secret has not been read recently: this replica may serve an outdated certificate",
                    ),
                    "/readyz" => text(StatusCode::OK, "ok"),
                    _ => text(StatusCode::NOT_FOUND, "not found"),
                })
            }
        }));
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use kube::core::admission::AdmissionResponse;

    #[test]
    fn the_patch_goes_out_as_base64_text() {
        let patch = json_patch::Patch(vec![json_patch::PatchOperation::Add(
            json_patch::AddOperation {
                path: json_patch::jsonptr::PointerBuf::from_tokens([
                    "metadata",
                    "annotations",
                    "zt.demo.local/status",
                ]),
                value: serde_json::json!("injected"),
            },
        )]);
        let review = AdmissionResponse::invalid("x")
            .with_patch(patch.clone())
            .unwrap()
            .into_review();
        let v: serde_json::Value = serde_json::from_slice(&encode_review(review).unwrap()).unwrap();
        let text = v["response"]["patch"].as_str().expect("a base64 string");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&decoded).unwrap(),
            serde_json::json!([{"op": "add", "path": "/metadata/annotations/zt.demo.local~1status", "value": "injected"}])
        );
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        // No patch, nothing to encode.
        let plain = AdmissionResponse::invalid("x").into_review();
        let v: serde_json::Value = serde_json::from_slice(&encode_review(plain).unwrap()).unwrap();
        assert!(v["response"].get("patch").is_none());
    }
}
