//! The load generator of `pincapi bench`: plain HTTP/1.1 keep-alive connections over
//! tokio's TCP, one request at a time on each, as wrk does. A general HTTP client spends
//! several times the CPU per request, and on a two-core machine the load generator's core
//! must not be what limits the floor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::sustained::Histogram;

/// Builds the body of the n-th request and says how many events it carries.
pub type Bodies = Arc<dyn Fn(u64) -> (String, u64) + Send + Sync>;

/// What one run of the load saw.
#[derive(Debug, Default)]
pub struct Load {
    pub requests: u64,
    pub events: u64,
    pub errors: u64,
    pub secs: f64,
    pub latency: Histogram,
}

/// `concurrency` connections, spread over `targets`, each sending `POST path` with the next
/// body for `duration`. A request counts when it is answered 202; anything else, or a broken
/// connection, is an error (the connection is made again).
pub async fn drive(
    targets: &[SocketAddr],
    path: &str,
    key: &str,
    concurrency: usize,
    duration: Duration,
    bodies: Bodies,
    counter: Arc<AtomicU64>,
) -> Load {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let addr = targets[i % targets.len()];
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: "
        );
        let bodies = Arc::clone(&bodies);
        let counter = Arc::clone(&counter);
        tasks.push(tokio::spawn(async move {
            let mut load = Load::default();
            let mut conn: Option<TcpStream> = None;
            let mut request = Vec::with_capacity(1024);
            let mut buf = vec![0u8; 16 * 1024];
            while start.elapsed() < duration {
                let stream = match &mut conn {
                    Some(s) => s,
                    None => match TcpStream::connect(addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            conn.insert(s)
                        }
                        Err(_) => {
                            load.errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let (body, events) = bodies(counter.fetch_add(1, Ordering::Relaxed));
                request.clear();
                request.extend_from_slice(head.as_bytes());
                request.extend_from_slice(body.len().to_string().as_bytes());
                request.extend_from_slice(b"\r\n\r\n");
                request.extend_from_slice(body.as_bytes());
                let t = Instant::now();
                match exchange(stream, &request, &mut buf).await {
                    Some(202) => {
                        load.latency.record(t.elapsed());
                        load.requests += 1;
                        load.events += events;
                    }
                    Some(_) => {
                        load.latency.record(t.elapsed());
                        load.requests += 1;
                        load.errors += 1;
                    }
                    None => {
                        load.errors += 1;
                        conn = None;
                    }
                }
            }
            load
        }));
    }
    let mut total = Load::default();
    for t in tasks {
        if let Ok(l) = t.await {
            total.requests += l.requests;
            total.events += l.events;
            total.errors += l.errors;
            total.latency.merge(&l.latency);
        }
    }
    total.secs = start.elapsed().as_secs_f64();
    total
}

/// Writes one request and reads its answer; the status, or `None` when the connection broke
/// or the answer could not be read (no chunked bodies: the servers under test send a length).
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> Option<u16> {
    stream.write_all(request).await.ok()?;
    let mut filled = 0;
    let head_end = loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[filled..]).await.ok()?;
        if n == 0 {
            return None;
        }
        filled += n;
        if let Some(i) = find(&buf[..filled], b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let status: u16 = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut have = filled - head_end;
    while have < length {
        let want = (length - have).min(buf.len());
        let n = stream.read(&mut buf[..want]).await.ok()?;
        if n == 0 {
            return None;
        }
        have += n;
    }
    Some(status)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
