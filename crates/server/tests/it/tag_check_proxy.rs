//! `pincapi tag check --browser` loads pages through pincapi's filtering proxy: a page that is
//! allowed may not make the browser reach any other private address, by a script, a frame, a
//! redirect, an IPv4-mapped IPv6 literal or an HTTPS tunnel. Each is refused and reported,
//! and the private server never sees a request.
//!
//! Needs Debian's `chromium` and `chromium-driver`, like the other browser tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::response::{Html, Redirect};
use axum::routing::get;

use crate::helpers::tag_check;

const TAG_ID: &str = "2612345678901";

/// Serves `router` on `ip`, port 0; returns the port.
async fn serve_on(ip: &str, router: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    port
}

/// A server that counts every request it gets, whatever the path.
async fn counting_server(ip: &str, hits: Arc<AtomicUsize>) -> u16 {
    let router = Router::new().fallback(move || {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            "private"
        }
    });
    serve_on(ip, router).await
}

#[tokio::test]
async fn a_checked_page_cannot_make_the_browser_reach_other_private_addresses() {
    if std::env::var_os("PINCAPI_SKIP_BROWSER_TESTS").is_some() {
        eprintln!("PINCAPI_SKIP_BROWSER_TESTS is set: skipping a Chromium test");
        return;
    }
    let hits = Arc::new(AtomicUsize::new(0));
    let p2 = counting_server("127.0.0.2", hits.clone()).await;
    let p3 = counting_server("127.0.0.3", hits.clone()).await;
    let allowed_hits = Arc::new(AtomicUsize::new(0));
    let tag = format!(
        "<script>window.pintrk = function () {{}}; pintrk('load', '{TAG_ID}', {{em: 'a@b.co'}});\
         pintrk('track', 'pagevisit', {{event_id: 'pv-1'}});</script>"
    );
    let hostile = format!(
        "<html><body>{tag}\
         <script src=\"http://127.0.0.2:{p2}/private.js\"></script>\
         <iframe src=\"http://127.0.0.3:{p3}/frame\"></iframe>\
         <img src=\"/to-private\">\
         <img src=\"http://[::ffff:127.0.0.2]:{p2}/mapped.png\">\
         <script>fetch('https://127.0.0.2:{p2}/tunnel').catch(function () {{}});</script>\
         <script src=\"/allowed.js\"></script>\
         </body></html>"
    );
    let clean = format!("<html><body>{tag}<script src=\"/allowed.js\"></script></body></html>");
    let counted = allowed_hits.clone();
    let page = Router::new()
        .route("/hostile", get(move || async move { Html(hostile) }))
        .route("/clean", get(move || async move { Html(clean) }))
        .route(
            "/to-private",
            get(
                move || async move { Redirect::temporary(&format!("http://127.0.0.2:{p2}/after")) },
            ),
        )
        .route(
            "/allowed.js",
            get(move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    "window.allowedLoaded = true;"
                }
            }),
        );
    let p1 = serve_on("127.0.0.1", page).await;
    let hostile_url = format!("http://127.0.0.1:{p1}/hostile");
    let clean_url = format!("http://127.0.0.1:{p1}/clean");

    let (out, reports) = tag_check(vec![
        "--browser".into(),
        "--allow-address".into(),
        "127.0.0.1".into(),
        "--tag-id".into(),
        TAG_ID.into(),
        hostile_url.clone(),
        clean_url.clone(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}\n{reports}");
    let report = |url: &str| {
        reports
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["url"] == url)
            .cloned()
            .unwrap_or_else(|| panic!("no report for {url}: {reports}"))
    };

    let clean = report(&clean_url);
    assert_eq!(clean["ok"], true, "{clean}");
    assert_eq!(
        clean["browser"]["refused"],
        serde_json::json!([]),
        "{clean}"
    );

    let hostile = report(&hostile_url);
    assert_eq!(hostile["ok"], false, "{hostile}");
    let refused: Vec<String> = hostile["browser"]["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let all = refused.join("\n");
    for wanted in [
        format!("http://127.0.0.2:{p2}/private.js"),
        format!("http://127.0.0.3:{p3}/frame"),
        format!("http://127.0.0.2:{p2}/after"),
        format!("{p2}/mapped.png"),
        format!("127.0.0.2:{p2} (CONNECT)"),
    ] {
        assert!(all.contains(&wanted), "{wanted} not refused:\n{all}");
    }
    assert!(
        hostile["errors"]
            .to_string()
            .contains("the page reached for"),
        "{hostile}"
    );
    // The rule is the proxy's, not Chromium's: nothing reached the private servers, and the
    // allowed address served both pages' script.
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 2);
}
