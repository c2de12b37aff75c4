//! The one HTTP server setup every Squall service uses: hyper HTTP/1.1 behind a tower
//! stack (concurrency limit, header timeout, the peer's address), with graceful
//! shutdown. Any tower service plugs in, an `axum::Router` included; this crate does
//! not depend on axum (topology binaries link it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceBuilder, ServiceExt};

/// Response body type of every service.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// Requests served at once per service; more wait.
const MAX_CONCURRENT: usize = 256;

/// The peer's address, in every request's extensions (for logs of refused requests).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("responses serialize");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body))
        .expect("valid response")
}

/// An error response: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &crate::rpc::ApiError {
            error: message.into(),
        },
    )
}

/// Serves `service` (an `axum::Router`, a `tower::service_fn`, ...) on `listener` until
/// `shutdown` is cancelled; then stops accepting and gives open connections up to 5 s
/// to finish.
///
/// Every service gets the same stack: at most 256 requests at once (more wait), 30 s to
/// send the request head, and the peer's address in each request's extensions
/// ([`PeerAddr`]).
pub async fn serve<S, B>(listener: TcpListener, service: S, shutdown: CancellationToken)
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let svc = ServiceBuilder::new()
        .concurrency_limit(MAX_CONCURRENT)
        .service(service);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let hyper_svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                let svc = svc.clone();
                async move { svc.oneshot(req).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), hyper_svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(6), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

/// Reads a whole request body up to `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Response<Body>> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body unreadable or over {limit} bytes: {e}"),
        )),
    }
}

/// A response body streaming a file.
pub fn stream_file(file: tokio::fs::File) -> Body {
    use futures_util::StreamExt;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
        .map(|chunk| chunk.map(hyper::body::Frame::data));
    http_body_util::StreamBody::new(stream).boxed_unsync()
}
