//! The delivery contract: an event counts as delivered only when a 2xx answer is Pinterest's
//! response with exactly one result per event sent. Anything else (garbage, an empty body, an
//! HTML page, too few or too many results, a redirect) is retried, counted and never followed.

use pincapi::sandbox::{FaultStep, Faults};

use crate::helpers::*;

/// One answer that is not Pinterest's, then the sandbox's own: the event arrives exactly once,
/// on the second request, and nothing else was requested (no redirect was followed).
async fn retried_after(status: u16, body: &str, location: Option<&str>) {
    let app = spawn_app().await;
    app.sandbox.fault(Faults {
        script: vec![FaultStep {
            status,
            body: Some(body.to_owned()),
            location: location.map(str::to_owned),
            ..FaultStep::default()
        }],
        ..Faults::default()
    });
    let id = format!("order-contract-{status}-{}", body.len());
    let (accepted, _) = app.post_events(&checkout(&id)).await;
    assert_eq!(accepted, 202);
    app.wait_delivered(1).await;
    let requests = app.sandbox.sandbox.requests();
    let seen: Vec<(String, String, u16)> = requests
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.status))
        .collect();
    let events_path = format!("/v5/ad_accounts/{ACCOUNT}/events");
    assert_eq!(
        seen,
        [
            ("POST".to_owned(), events_path.clone(), status),
            ("POST".to_owned(), events_path, 200),
        ],
        "answer {status} {body:?}"
    );
    let (_, metrics) = app.get("/metrics", None).await;
    assert!(
        metrics.contains(&format!(
            "pincapi_pinterest_unreadable_answers_total{{ad_account_id=\"{ACCOUNT}\",status=\"{status}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("reason=\"unreadable\""),
        "the retry is labelled: {metrics}"
    );
    assert_eq!(app.stop().await.count_of(&id), 1, "delivered once");
}

#[tokio::test]
async fn a_200_with_an_empty_body_is_not_a_delivery() {
    retried_after(200, "", None).await;
}

#[tokio::test]
async fn a_200_with_garbage_is_not_a_delivery() {
    retried_after(200, "garbage{", None).await;
}

#[tokio::test]
async fn a_200_html_page_is_not_a_delivery() {
    retried_after(
        200,
        "<!doctype html><html><body>Sign in to continue</body></html>",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_200_with_fewer_results_than_events_is_not_a_delivery() {
    retried_after(
        200,
        r#"{"num_events_received":0,"num_events_processed":0,"events":[]}"#,
        None,
    )
    .await;
}

#[tokio::test]
async fn a_200_with_more_results_than_events_is_not_a_delivery() {
    let two = r#"{"num_events_received":2,"num_events_processed":1,"events":[
        {"status":"processed","error_message":null,"warning_message":null},
        {"status":"failed","error_message":"x","warning_message":null}]}"#;
    retried_after(200, two, None).await;
}

#[tokio::test]
async fn a_redirect_to_an_html_page_is_not_followed_nor_a_delivery() {
    retried_after(302, "<html>moved</html>", Some("/login")).await;
}

#[tokio::test]
async fn a_307_loop_sends_the_batch_once_per_attempt() {
    let to_itself = format!("/v5/ad_accounts/{ACCOUNT}/events");
    retried_after(307, "", Some(&to_itself)).await;
}
