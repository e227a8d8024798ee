//! The connection loop: plain HTTP or TLS on one listener, HTTP/1.1 and HTTP/2 on either
//! (by ALPN under TLS), graceful shutdown, and what each request learns of its connection.

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::tls::Tls;

/// A client that has not finished its TLS handshake by then is dropped, so that idle
/// sockets cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests still running at shutdown get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a request knows of the connection it came on (a request extension).
#[derive(Debug, Clone, Copy, Default)]
pub struct Connection {
    pub tls: bool,
    /// The client presented a certificate that the configured client CA vouches for.
    pub client_certificate: bool,
}

/// How `serve` listens.
pub struct Listening {
    pub tls: Option<Arc<Tls>>,
    /// `Strict-Transport-Security` on every TLS response.
    pub hsts: Option<HeaderValue>,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets running requests end.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    listening: Listening,
    shutdown: impl Future<Output = ()>,
) {
    let listening = Arc::new(listening);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses stream in chunks: without TCP_NODELAY a chunk can wait for the
        // client's delayed ACK (40 ms here), which made one feed page in two four times slower.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        let watcher = graceful.watcher();
        let app = app.clone();
        let listening = listening.clone();
        tokio::spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            let served = match &listening.tls {
                None => {
                    let service = request_service(app, peer, Connection::default(), None);
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(tls) => {
                    let Some(stream) = handshake(tls, stream, peer).await else {
                        return;
                    };
                    let connection = Connection {
                        tls: true,
                        client_certificate: stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty()),
                    };
                    let service = request_service(app, peer, connection, listening.hsts.clone());
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still running {SHUTDOWN_GRACE:?} after shutdown began were cut off"
        );
    }
}

/// Each request gets the client's address and what is known of its connection, and TLS
/// responses the HSTS header.
fn request_service(
    app: Router,
    peer: SocketAddr,
    connection: Connection,
    hsts: Option<HeaderValue>,
) -> impl hyper::service::Service<
    Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(connection);
        let app = app.clone();
        let hsts = hsts.clone();
        async move {
            let mut response = app.oneshot(request).await?;
            if let Some(hsts) = hsts {
                response
                    .headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
            }
            Ok(response)
        }
    })
}

/// The TLS handshake, or None when the client gave up, failed it, or spoke plain HTTP
/// (which is told, in plain HTTP, to use https).
async fn handshake(
    tls: &Tls,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let attempt = async {
        let mut first = [0u8; 1];
        let n = stream.peek(&mut first).await.ok()?;
        if n == 1 && first[0] != TLS_HANDSHAKE_RECORD {
            refuse_plain_http(stream).await;
            return None;
        }
        match tls.acceptor.accept(stream).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                metrics::counter!("chatvault_tls_handshake_failures_total").increment(1);
                None
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
}

async fn refuse_plain_http(mut stream: TcpStream) {
    metrics::counter!("chatvault_plain_http_refused_total").increment(1);
    let body = "{\"error\":{\"code\":\"TlsRequired\",\"message\":\"this port speaks HTTPS only: use an https:// URL\"}}";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
