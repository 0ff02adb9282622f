//! The HTTP listener: what no client may make the gateway hold. At most
//! `server.max_connections` connections are open at once (one more is closed as soon as it is
//! accepted); a request's head must arrive within `server.header_timeout_secs`, which also
//! bounds how long a kept-alive connection may sit idle between requests; a body must arrive
//! within `server.body_timeout_secs` (see `api_error::read_limited`). A graceful stop lets
//! requests in flight finish for `shutdown_grace_secs`.
//!
//! It serves HTTP/1.1 with hyper directly because `axum::serve` offers no timeout and no
//! connection limit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::metrics::Metrics;

/// How the listener bounds its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub grace: Duration,
}

/// Serves the latest router of `routers` on `listener` until `shutdown` completes, then stops
/// accepting and lets the requests in flight finish for `limits.grace` at most. Each request
/// takes the router current when it arrives (a kept-alive connection sees a reload at its
/// next request; a request in flight finishes on the router it started with).
pub async fn serve(
    listener: TcpListener,
    routers: watch::Receiver<Router>,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or the peer went away: not fatal.
                    tracing::warn!(error = %e, "Could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics.inc("pincapi_connections_refused_total", &[], 1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let routers = routers.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // With the peer address, so the browser collector knows the client's IP.
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = routers.borrow().clone();
            router.oneshot(req.map(axum::body::Body::new))
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.grace) => tracing::warn!(
            grace_secs = limits.grace.as_secs(),
            "Connections still open after the grace period; stopping anyway"
        ),
    }
}
