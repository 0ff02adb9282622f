//! The public edge under abuse, against the real binary: what an unauthenticated client can
//! make the gateway hold.

use std::process::{Child, Command, Stdio};

use tokio::io::AsyncWriteExt;

use crate::helpers::*;

const SHOP: &str = "pincapi-edge.myshopify.com";

fn start_gateway(db: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .arg("serve")
        .env_clear()
        .env("PINCAPI_LISTEN", "127.0.0.1:0")
        .env("PINCAPI_STORE", format!("sqlite://{}", db.display()))
        .env("PINCAPI_API_KEY", API_KEY)
        .env("PINCAPI_PINTEREST_API_BASE", "http://127.0.0.1:1/v5")
        .env("PINCAPI_AD_ACCOUNT_ID", ACCOUNT)
        .env("PINCAPI_PINTEREST_TOKEN", TOKEN)
        .env("PINCAPI_SHOPIFY_SHOP_DOMAIN", SHOP)
        .env("PINCAPI_SHOPIFY_WEBHOOK_SECRET", "shpss_edge_secret")
        .env("PINCAPI_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the pincapi binary starts");
    let addr = announced_address(&mut child);
    (child, addr)
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// 300 unsigned webhook requests that each declare 4 MB and send 1 KiB: the gateway reserves
/// nothing on the word of their Content-Length (before, this took the process from 27 MB to
/// 656 MB).
#[tokio::test]
async fn webhook_bodies_declared_large_but_never_sent_reserve_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start_gateway(&dir.path().join("edge.db"));
    let host = addr.trim_start_matches("http://").to_owned();
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{addr}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let before = rss(child.id());
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
        let head = format!(
            "POST /webhooks/shopify HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             X-Shopify-Topic: orders/create\r\nX-Shopify-Shop-Domain: {SHOP}\r\n\
             X-Shopify-Hmac-Sha256: AAAA\r\nContent-Length: 4000000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&[b' '; 1024]).await.unwrap();
        held.push(s);
    }
    // The gateway still answers while it holds them; what it holds is read for a while, and
    // the largest figure counts.
    assert_eq!(
        http.get(format!("{addr}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut peak = 0;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < until {
        peak = peak.max(rss(child.id()));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 100 * 1024 * 1024,
        "300 unsent 4 MB bodies grew the gateway by {} MiB",
        grown / (1024 * 1024)
    );
}

/// Only the gateway's user may read the store: it holds click ids, IP addresses and hashed
/// identities.
#[tokio::test]
async fn every_file_of_the_embedded_store_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    app.post_events(&checkout("order-private-1")).await;
    app.wait_delivered(1).await;
    let mut lock = app.db.clone().into_os_string();
    lock.push(".lock");
    for path in [
        app.db.clone(),
        app.db.with_extension("db-wal"),
        app.db.with_extension("db-shm"),
        std::path::PathBuf::from(lock),
    ] {
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "{}: {:o}",
            path.display(),
            mode & 0o777
        );
    }
}

/// A batch body with `data` twice is refused, naming the key, instead of the last one winning
/// (a repeated key inside an event was already refused).
#[tokio::test]
async fn a_batch_with_data_twice_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let one = checkout("order-dup-a").to_string();
    let two = checkout("order-dup-b").to_string();
    let body = format!(r#"{{"data":[{one}],"data":[{two}]}}"#);
    let (status, answer) = app.post_raw("/v1/events", API_KEY, body.into_bytes()).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_shape");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("data:"),
        "{answer}"
    );
    let (status, _) = app.post_events(&checkout("order-dup-c")).await;
    assert_eq!(status, 202);
    app.wait_delivered(1).await;
    let sandbox = app.stop().await;
    assert_eq!(
        sandbox.count_of("order-dup-a") + sandbox.count_of("order-dup-b"),
        0
    );
}

/// Sends a request head declaring `length` bytes of body and none of them, and returns the
/// status line of the answer, which must come without the body.
async fn answer_to_a_head(app: &TestApp, head: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the gateway answers without waiting for the declared body")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `/v1/events` checks the key before it reads a byte of the body, and both it and
/// `/collect` refuse a declared length over their limit at once.
#[tokio::test]
async fn the_key_and_the_declared_length_are_checked_before_the_body_is_read() {
    let app = spawn_app().await;
    let host = app.addr;
    let no_key = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: 5000000\r\n\r\n"
    );
    assert!(answer_to_a_head(&app, &no_key).await.contains(" 401 "));
    let too_long = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n"
    );
    assert!(answer_to_a_head(&app, &too_long).await.contains(" 413 "));
    let huge_beacon = format!(
        "POST /collect HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n\
         Content-Type: text/plain\r\nContent-Length: 999999999\r\n\r\n"
    );
    assert!(answer_to_a_head(&app, &huge_beacon).await.contains(" 413 "));
}

/// The dashboard is never framed, runs no script, loads nothing from elsewhere and is never
/// cached; nor is `/api/quality`.
#[tokio::test]
async fn the_dashboard_and_its_figures_carry_framing_script_and_cache_rules() {
    let app = spawn_app().await;
    for (path, key) in [
        ("/dashboard", None),
        ("/dashboard?since=1d", Some(ADMIN_KEY)),
        ("/api/quality", Some(ADMIN_KEY)),
    ] {
        let mut req = app.http.get(app.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let h = resp.headers();
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = get("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("script-src"), "{path}: {csp}");
        assert_eq!(get("x-frame-options"), "DENY", "{path}");
        assert_eq!(get("cache-control"), "no-store", "{path}");
        assert_eq!(get("x-content-type-options"), "nosniff", "{path}");
    }
}

/// Every sign-in gets a session of its own, sent only over a secure channel; signing out ends
/// it; wrong keys are braked per address, the right one included, until the minute is over.
#[tokio::test]
async fn dashboard_sign_ins_are_per_login_secure_revocable_and_braked() {
    let clock = pincapi::clock::ManualClock::starting_now();
    let app = spawn_app_on(clock.clone(), Default::default(), |_| {}).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |key: &'static str| {
        let http = http.clone();
        let url = app.url("/dashboard/login");
        async move { http.post(url).form(&[("key", key)]).send().await.unwrap() }
    };
    let page = |cookie: String| {
        let http = http.clone();
        let url = app.url("/dashboard");
        async move {
            let resp = http.get(url).header("cookie", cookie).send().await.unwrap();
            resp.status().as_u16()
        }
    };
    let cookie_of =
        |resp: &reqwest::Response| resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    let first = sign_in(ADMIN_KEY).await;
    let second = sign_in(ADMIN_KEY).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (303, 303)
    );
    let (one, two) = (cookie_of(&first), cookie_of(&second));
    assert_ne!(one, two, "a session per sign-in");
    for c in [&one, &two] {
        assert!(c.contains("Secure") && c.contains("HttpOnly"), "{c}");
    }
    let pair = |c: &str| c.split(';').next().unwrap().to_owned();
    assert_eq!(page(pair(&one)).await, 200);
    let out = http
        .post(app.url("/dashboard/logout"))
        .header("cookie", pair(&one))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 303);
    assert!(cookie_of(&out).contains("Max-Age=0"));
    assert_eq!(page(pair(&one)).await, 401, "signed out");
    assert_eq!(page(pair(&two)).await, 200, "the other session lives on");

    for _ in 0..pincapi::sign_in::FAILURES_PER_ADDRESS {
        assert_eq!(sign_in("wrong-key-wrong-key").await.status().as_u16(), 401);
    }
    let braked = sign_in(ADMIN_KEY).await;
    assert_eq!(braked.status().as_u16(), 429);
    assert!(braked.headers().contains_key("retry-after"));
    clock.advance(std::time::Duration::from_secs(61));
    assert_eq!(sign_in(ADMIN_KEY).await.status().as_u16(), 303);
}

/// A short admin key is refused at start, naming the key.
#[tokio::test]
async fn a_short_admin_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pincapi"))
        .arg("serve")
        .env_clear()
        .env("PINCAPI_LISTEN", "127.0.0.1:0")
        .env(
            "PINCAPI_STORE",
            format!("sqlite://{}", dir.path().join("k.db").display()),
        )
        .env("PINCAPI_API_KEY", API_KEY)
        .env("PINCAPI_ADMIN_KEY", "1234")
        .env("PINCAPI_AD_ACCOUNT_ID", ACCOUNT)
        .env("PINCAPI_PINTEREST_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin_key: must be at least 16 characters"),
        "{err}"
    );
}

/// Neither `check-config` nor the log shows the alert webhook's URL or a password in
/// `pinterest_api_base`.
#[tokio::test]
async fn secrets_in_urls_are_never_printed() {
    use pincapi::sandbox::{FaultStep, Faults};
    use std::io::{BufRead, BufReader};
    const HOOK_SECRET: &str = "T000/B000/hooksecretXYZ";
    const BASE_PASSWORD: &str = "hunter2pass";
    let sandbox = TestSandbox::start(Default::default()).await;
    sandbox.fault(Faults {
        fail_all: Some(FaultStep {
            status: 401,
            ..FaultStep::default()
        }),
        ..Faults::default()
    });
    let base = format!("http://proxyuser:{BASE_PASSWORD}@{}/v5", sandbox.addr);
    let hook = format!("http://127.0.0.1:1/services/{HOOK_SECRET}");
    let dir = tempfile::tempdir().unwrap();
    let env = |c: &mut Command| {
        c.env_clear()
            .env("PINCAPI_LISTEN", "127.0.0.1:0")
            .env(
                "PINCAPI_STORE",
                format!("sqlite://{}", dir.path().join("s.db").display()),
            )
            .env("PINCAPI_API_KEY", API_KEY)
            .env("PINCAPI_ADMIN_KEY", ADMIN_KEY)
            .env("PINCAPI_PINTEREST_API_BASE", &base)
            .env("PINCAPI_AD_ACCOUNT_ID", ACCOUNT)
            .env("PINCAPI_PINTEREST_TOKEN", TOKEN)
            .env("PINCAPI_QUALITY__WEBHOOK_URL", &hook)
            .env("PINCAPI_QUALITY__ALERT_INTERVAL_SECS", "1")
            .env("PINCAPI_DELIVERY__POLL_INTERVAL_MS", "20");
    };
    let mut check = Command::new(env!("CARGO_BIN_EXE_pincapi"));
    env(&mut check);
    let out = check.args(["check-config", "--offline"]).output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("127.0.0.1:1/***"), "{printed}");
    assert!(!printed.contains(HOOK_SECRET), "{printed}");
    assert!(!printed.contains(BASE_PASSWORD), "{printed}");

    // A 401 stops the account, the alert fires, and its webhook cannot be reached: the log
    // says so without either secret.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_pincapi"));
    env(&mut serve);
    let mut child = serve
        .arg("serve")
        .env("PINCAPI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = announced_address(&mut child);
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(lines));
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let resp = reqwest::Client::new()
        .post(format!("{addr}/v1/events"))
        .bearer_auth(API_KEY)
        .json(&checkout("order-secret-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let mut log = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !log.contains("The alert webhook could not be reached") {
        assert!(
            std::time::Instant::now() < deadline,
            "no alert webhook failure logged:\n{log}"
        );
        // Off the runtime's threads: the sandbox answers on them meanwhile.
        let lines = std::sync::Arc::clone(&lines);
        let next = tokio::task::spawn_blocking(move || {
            lines
                .lock()
                .unwrap()
                .recv_timeout(std::time::Duration::from_millis(100))
        })
        .await
        .unwrap();
        match next {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the gateway's log ended ({:?}):\n{log}", child.try_wait())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!log.contains(HOOK_SECRET), "{log}");
    assert!(!log.contains(BASE_PASSWORD), "{log}");
}

/// A checkout carrying `items` contents, each with an id of `id_len` characters.
fn checkout_with_items(event_id: &str, items: usize, id_len: usize) -> serde_json::Value {
    let mut e = checkout(event_id);
    let contents: Vec<serde_json::Value> = (0..items)
        .map(|i| {
            let id = format!("{i:0>id_len$}");
            serde_json::json!({"id": id, "item_price": "1.00", "quantity": 1})
        })
        .collect();
    e["custom_data"]["contents"] = serde_json::Value::Array(contents);
    e
}

/// What no event may carry: money with thousands of digits, a control character in a raw
/// key, a size no purchase has; and requests to Pinterest are bounded by bytes, not only by
/// count.
#[tokio::test]
async fn oversized_values_and_events_are_refused_and_requests_are_bounded_by_bytes() {
    const MAX_REQUEST: usize = 1024 * 1024;
    let app = spawn_app_with(Default::default(), |c| {
        c.delivery.max_request_bytes = MAX_REQUEST;
    })
    .await;
    let mut money = checkout("order-digits");
    money["custom_data"]["value"] = serde_json::json!("9".repeat(5000));
    let (status, body) = app.post_events(&money).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "custom_data.value", "{body}");

    let mut nul = page_visit("pv-nul");
    nul["user_data"]["client_user_agent"] = serde_json::json!("Mozilla/5.0\u{0}\r\nX-Injected: 1");
    let (status, body) = app.post_events(&nul).await;
    assert_eq!(status, 202, "{body}");

    let huge = checkout_with_items("order-huge", 6000, 40);
    let (status, body) = app.post_events(&huge).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "event", "{body}");

    // Twenty events of about 200 KB: four requests' worth of bytes.
    let big: Vec<serde_json::Value> = (0..20)
        .map(|i| checkout_with_items(&format!("order-big-{i}"), 4000, 10))
        .collect();
    let (status, body) = app.post_events(&serde_json::json!({ "data": big })).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 20, "{body}");
    app.wait_delivered(21).await;
    let sandbox = app.stop().await;
    let ua = sandbox
        .events()
        .iter()
        .find(|e| e.event["event_id"] == "pv-nul")
        .map(|e| e.event["user_data"]["client_user_agent"].clone())
        .unwrap();
    assert_eq!(ua, "Mozilla/5.0X-Injected: 1");
    let requests: Vec<usize> = sandbox
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/events"))
        .filter(|r| r.body["data"].as_array().is_some_and(|d| d.len() > 1))
        .map(|r| r.body.to_string().len())
        .collect();
    assert!(requests.len() >= 4, "{requests:?}");
    assert!(requests.iter().all(|n| *n <= MAX_REQUEST), "{requests:?}");
}

/// With `metrics_key` set, `/metrics` needs it; a scrape renders what is in memory, and the
/// store's gauges follow the background refresh (moved along here by the clock).
#[tokio::test]
async fn metrics_are_behind_their_key_and_read_no_store_per_scrape() {
    const METRICS_KEY: &str = "metrics-key-0123456789";
    let clock = pincapi::clock::ManualClock::starting_now();
    let app = spawn_app_on(clock.clone(), Default::default(), |c| {
        c.metrics_key = pincapi::config::Secret::new(METRICS_KEY);
        c.metrics_refresh_secs = 60;
    })
    .await;
    let (status, _) = app.get("/metrics", None).await;
    assert_eq!(status, 401);
    let (status, _) = app.get("/metrics", Some(API_KEY)).await;
    assert_eq!(status, 401, "the ingest key is not the metrics key");
    // The first refresh ran at start, before anything was queued.
    wait_for("the start's refresh", || async {
        app.get("/metrics", Some(METRICS_KEY))
            .await
            .1
            .contains("pincapi_shopify_orders_recent{state=\"orders\"} 0")
    })
    .await;
    app.sandbox.fault(pincapi::sandbox::Faults {
        fail_all: Some(pincapi::sandbox::FaultStep {
            status: 401,
            ..Default::default()
        }),
        ..Default::default()
    });
    app.post_events(&checkout("order-metrics-1")).await;
    let depth =
        format!("pincapi_queue_depth{{ad_account_id=\"{ACCOUNT}\",event_name=\"checkout\"}} 1");
    wait_for("the account to stop", || async {
        app.get("/readyz", None).await.1.contains(ACCOUNT)
    })
    .await;
    let (status, before) = app.get("/metrics", Some(METRICS_KEY)).await;
    assert_eq!(status, 200);
    assert!(
        !before.contains(&depth),
        "scraping did not read the store: {before}"
    );
    clock.advance(std::time::Duration::from_secs(60));
    wait_for("the refreshed queue depth", || async {
        app.get("/metrics", Some(METRICS_KEY))
            .await
            .1
            .contains(&depth)
    })
    .await;
}

/// Whether the gateway has closed `s` (it reads end of file, or the connection is reset),
/// waiting at most `within`.
async fn closed_by_the_gateway(s: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An answer (a 408) before the close: read on.
            Ok(Ok(_)) => {}
        }
    }
}

/// Idle and slow-header connections are closed after `server.header_timeout_secs`, a body that
/// stalls gets a 408, and past `server.max_connections` a connection is closed at once, while
/// the gateway keeps answering the others.
#[tokio::test]
async fn no_client_holds_connections_or_the_gateway_open() {
    let app = spawn_app_with(Default::default(), |c| {
        c.server.max_connections = 20;
        c.server.header_timeout_secs = 3;
        c.server.body_timeout_secs = 1;
    })
    .await;
    let within = std::time::Duration::from_secs(10);
    // Idle, and a head that never ends.
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_the_gateway(&mut idle, within).await,
        "idle connection held"
    );
    assert!(
        closed_by_the_gateway(&mut slow, within).await,
        "slow head held"
    );
    // A body that stops arriving.
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"data\""
    );
    assert!(answer_to_a_head(&app, &head).await.contains(" 408 "));
    // The cap: 20 held, the 21st closed at once, and the gateway still answers once they go.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    // Each answered once: all 20 are open (kept alive) now.
    for s in &mut held {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(within, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    let mut extra = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        closed_by_the_gateway(&mut extra, within).await,
        "over the cap"
    );
    drop(held);
    wait_for("the gateway to answer again", || async {
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(
        metrics.contains("pincapi_connections_refused_total"),
        "{metrics}"
    );
}
