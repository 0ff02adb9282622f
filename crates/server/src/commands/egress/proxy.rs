//! The forward proxy a checking browser goes through: every request, redirect, sub-resource,
//! frame and tunnel it makes is resolved and checked against the [`AddressPolicy`] here, and
//! a refused one is answered 403 and recorded, so the report can say what the page reached for.
//!
//! Plain `http://` requests arrive in absolute form and are forwarded on a fresh connection to
//! the address that was checked, one request per connection; `https://` and WebSockets arrive
//! as `CONNECT host:port` and become a byte tunnel to the checked address. Redirects are the
//! browser's own new requests, so they pass through the same check.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{self, HeaderName};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{AddressPolicy, lookup};

/// A running filtering proxy on a loopback port. Stops when dropped.
#[derive(Debug)]
pub struct FilteringProxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    policy: AddressPolicy,
    refused: Mutex<Vec<String>>,
}

impl FilteringProxy {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start(policy: AddressPolicy) -> anyhow::Result<FilteringProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            policy,
            refused: Mutex::new(Vec::new()),
        });
        let shared = inner.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let inner = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, Infallible>(handle(&inner, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(FilteringProxy { addr, inner, task })
    }

    /// Where the browser must send its requests.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests refused since the last call, each `URL: why`.
    pub fn take_refused(&self) -> Vec<String> {
        std::mem::take(&mut *self.inner.refused.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for FilteringProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        tunnel(inner, req).await
    } else {
        forward(inner, req).await
    }
}

/// Resolves and checks a target; the answer to send instead when it may not be reached.
async fn checked(
    inner: &Inner,
    host: &str,
    port: u16,
    shown: &str,
) -> Result<SocketAddr, Response<Body>> {
    let addrs = match lookup(host, port).await {
        Ok(a) => a,
        Err(e) => return Err(answer(StatusCode::BAD_GATEWAY, format!("{e:#}"))),
    };
    if let Some(why) = inner.policy.refusal(host, &addrs) {
        let line = format!("{shown}: {why}");
        tracing::warn!(target: "pincapi::egress", "refused {line}");
        inner
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
        return Err(answer(StatusCode::FORBIDDEN, format!("refused: {why}")));
    }
    Ok(addrs[0])
}

async fn tunnel(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return answer(StatusCode::BAD_REQUEST, "CONNECT needs host:port".into());
    };
    let port = authority.port_u16().unwrap_or(443);
    let shown = format!("{}:{port} (CONNECT)", authority.host());
    let target = match checked(inner, authority.host(), port, &shown).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let mut upstream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => return answer(StatusCode::BAD_GATEWAY, format!("{target}: {e}")),
    };
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let mut client = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    });
    Response::new(Body::empty())
}

/// Headers that belong to one hop, not to the request the browser meant.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

async fn forward(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    let uri = req.uri().clone();
    let (Some("http"), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "a proxy request needs an absolute http:// URL".into(),
        );
    };
    let port = uri.port_u16().unwrap_or(80);
    let shown = uri.to_string();
    let target = match checked(inner, host, port, &shown).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let stream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => return answer(StatusCode::BAD_GATEWAY, format!("{target}: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => return answer(StatusCode::BAD_GATEWAY, format!("{target}: {e}")),
    };
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    parts.uri = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    for name in HOP_BY_HOP {
        parts.headers.remove(HeaderName::from_static(name));
    }
    if !parts.headers.contains_key(header::HOST)
        && let Some(a) = uri.authority()
        && let Ok(v) = a.as_str().parse()
    {
        parts.headers.insert(header::HOST, v);
    }
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for name in HOP_BY_HOP {
                parts.headers.remove(HeaderName::from_static(name));
            }
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => answer(StatusCode::BAD_GATEWAY, format!("{target}: {e}")),
    }
}

fn answer(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp
}
