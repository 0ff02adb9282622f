//! PostgreSQL going away under load and coming back (what a restart of the server looks like
//! from the gateway: every connection reset, new ones refused for a while): every event that
//! was acknowledged reaches Pinterest exactly once, and nothing else is needed to recover.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pincapi::sandbox::SandboxOptions;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::*;
use crate::pg::TestDatabase;

/// A TCP proxy in front of PostgreSQL that can be cut (connections reset, new ones refused)
/// and restored.
struct Proxy {
    addr: String,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, cs) = (Arc::clone(&cut), Arc::clone(&conns));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                cs.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Proxy { addr, cut, conns }
    }

    /// Resets every connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// `url` with its `host:port` replaced by `addr`; and the `host:port` it had.
fn through(url: &str, addr: &str) -> (String, String) {
    let start = url
        .find('@')
        .map_or_else(|| url.find("://").unwrap() + 3, |i| i + 1);
    let end = start + url[start..].find('/').unwrap();
    let target = url[start..end].to_owned();
    (format!("{}{addr}{}", &url[..start], &url[end..]), target)
}

#[tokio::test]
async fn a_postgresql_outage_under_load_loses_and_repeats_no_acknowledged_event() {
    let db = TestDatabase::create().await;
    let (_, target) = through(&db.url, "x");
    let proxy = Proxy::start(target).await;
    let (url, _) = through(&db.url, &proxy.addr);
    let app = spawn_app_with(SandboxOptions::default(), move |c| {
        c.store = url;
        c.delivery.linger_ms = 0;
        // A batch claimed when the connection went is sent again when its lease ends: the
        // shortest lease the request timeout allows.
        c.delivery.lease_secs = 2 * c.delivery.request_timeout_secs + 5;
    })
    .await;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (acked, refused, stop) = (Arc::clone(&acked), Arc::clone(&refused), Arc::clone(&stop));
        let (http, url) = (app.http.clone(), app.url("/v1/events"));
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("pg-outage-{i}");
                i += 1;
                match http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&checkout(&id))
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 202 => acked.lock().unwrap().push(id),
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    wait_for("load before the outage", || async {
        acked.lock().unwrap().len() >= 150
    })
    .await;
    proxy.cut();
    wait_for("requests refused while PostgreSQL is away", || async {
        refused.load(Ordering::Relaxed) >= 20
    })
    .await;
    proxy.restore();
    let back = acked.lock().unwrap().len();
    wait_for("load after the outage", || async {
        acked.lock().unwrap().len() >= back + 150
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    let ids = acked.lock().unwrap().clone();
    let sb = &app.sandbox;
    wait_for_within(
        "every acknowledged event at Pinterest",
        std::time::Duration::from_secs(60),
        || async { ids.iter().all(|id| sb.count_of(id) >= 1) },
    )
    .await;
    let sandbox = app.stop().await;
    for id in &ids {
        assert_eq!(sandbox.count_of(id), 1, "{id} exactly once");
    }
    // Refused requests were answered 503, never acknowledged: nothing of theirs is owed.
    assert!(refused.load(Ordering::Relaxed) >= 20);
}
