//! Black-box tests of the local Pinterest sandbox (`pincapi::sandbox`): real HTTP on
//! loopback, answers checked against Pinterest's official schemas in `testdata/pinterest/`.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonschema::Validator;
use pincapi::sandbox::{FaultStep, Faults, Sandbox, SandboxOptions, SandboxStats};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/pinterest");
const TOKEN: &str = "test-conversion-token";
const ACCOUNT: &str = "549755885175";

fn load(name: &str) -> Value {
    let path = format!("{TESTDATA}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// Validators built once from the official (mechanically generated) schemas.
struct Schemas {
    request: Validator,
    strict_request: Validator,
    response: Validator,
    error: Validator,
    detailed_error: Validator,
}

/// A validator for one `$defs` entry, keeping the other `$defs` resolvable (as
/// `verify_schemas.py` does).
fn sub_schema(schema: &Value, name: &str) -> Validator {
    let mut schema = schema.clone();
    schema["$ref"] = json!(format!("#/$defs/{name}"));
    jsonschema::draft202012::new(&schema).expect("sub-schema compiles")
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    let response = load("pinterest-events-response.schema.json");
    Schemas {
        request: jsonschema::draft202012::new(&load("pinterest-events-request.schema.json"))
            .expect("request schema compiles"),
        strict_request: jsonschema::draft202012::new(&load(
            "pinterest-events-request.strict.schema.json",
        ))
        .expect("strict request schema compiles"),
        response: jsonschema::draft202012::new(&response).expect("response schema compiles"),
        error: sub_schema(&response, "Error"),
        detailed_error: sub_schema(&response, "DetailedError"),
    }
});

fn assert_valid(validator: &Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not validate: {errors:?}\n{instance:#}"
    );
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// `events-request.valid.json` with every `event_time` moved to now.
fn valid_request() -> Value {
    let mut body = load("events-request.valid.json");
    for event in body["data"].as_array_mut().expect("data array") {
        event["event_time"] = json!(now());
    }
    body
}

/// The page_visit event of the valid request (IP + UA only), with a fresh time and `id`.
fn page_visit(id: &str) -> Value {
    let mut event = valid_request()["data"][1].clone();
    event["event_id"] = json!(id);
    event
}

/// A sandbox served on an ephemeral loopback port; stops when dropped.
struct Server {
    sandbox: Sandbox,
    base: String,
    client: reqwest::Client,
    _shutdown: oneshot::Sender<()>,
}

/// Status, headers and JSON body (`null` when empty) of one answer.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn retry_after(&self) -> Option<u64> {
        self.headers
            .get(reqwest::header::RETRY_AFTER)
            .map(|v| v.to_str().expect("ascii").parse().expect("integer seconds"))
    }
}

impl Server {
    async fn start(options: SandboxOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let sandbox = Sandbox::new(options);
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(sandbox.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Self {
            sandbox,
            base: format!("http://{addr}"),
            client,
            _shutdown: shutdown,
        }
    }

    async fn default() -> Self {
        Self::start(SandboxOptions::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn events_url(&self, account: &str) -> String {
        self.url(&format!("/v5/ad_accounts/{account}/events"))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON answer {e}: {text}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// POST `body` as JSON to the events endpoint of [`ACCOUNT`] with a valid token.
    async fn post_events(&self, body: &Value) -> Reply {
        self.send(
            self.client
                .post(self.events_url(ACCOUNT))
                .bearer_auth(TOKEN)
                .json(body),
        )
        .await
    }

    async fn get_json(&self, path: &str) -> Value {
        let reply = self.send(self.client.get(self.url(path))).await;
        assert_eq!(reply.status, 200, "GET {path}");
        reply.body
    }

    async fn set_faults(&self, faults: Value) {
        let reply = self
            .send(self.client.post(self.url("/sandbox/faults")).json(&faults))
            .await;
        assert_eq!(reply.status, 204, "POST /sandbox/faults: {}", reply.body);
    }

    async fn stats(&self) -> SandboxStats {
        serde_json::from_value(self.get_json("/sandbox/stats").await).expect("stats shape")
    }
}

/// Asserts a 400/401/403/404/429/503-style answer: the status and a body valid as `Error`.
fn assert_error(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    assert_valid(&SCHEMAS.error, &reply.body, what);
}

/// Asserts a 422 answer whose body is a `DetailedError` with `ConversionApiResponse` details.
fn assert_partial_failure(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 422, "{what}: {}", reply.body);
    assert_valid(&SCHEMAS.detailed_error, &reply.body, what);
    assert_valid(&SCHEMAS.response, &reply.body["details"], what);
    assert_eq!(reply.body["code"], 953, "{what}");
}

fn event_status(details: &Value, index: usize) -> (&str, &str) {
    let event = &details["events"][index];
    (
        event["status"].as_str().expect("status string"),
        event["error_message"].as_str().unwrap_or(""),
    )
}

/// Guards the guards: if a schema were mis-loaded (say the `$ref` override ignored), every
/// "validates" assertion below would pass vacuously.
#[test]
fn the_schema_validators_reject_what_verify_schemas_py_says_they_reject() {
    let valid_200 = load("events-response.valid.json");
    assert_valid(&SCHEMAS.response, &valid_200, "events-response.valid.json");
    let mut missing = valid_200.clone();
    missing
        .as_object_mut()
        .unwrap()
        .remove("num_events_processed");
    assert!(!SCHEMAS.response.is_valid(&missing));
    assert!(!SCHEMAS.response.is_valid(&json!({
        "num_events_received": 1, "num_events_processed": 1, "events": [{"status": "ok"}]
    })));

    let observed_422 = load("events-response.422-observed.json");
    assert_valid(&SCHEMAS.detailed_error, &observed_422, "observed 422");
    assert_valid(
        &SCHEMAS.response,
        &observed_422["details"],
        "observed 422 details",
    );
    assert!(
        !SCHEMAS
            .detailed_error
            .is_valid(&json!({"code": 953, "message": "x"}))
    );

    assert_valid(
        &SCHEMAS.error,
        &json!({"code": 8, "message": "rate limited"}),
        "Error",
    );
    assert!(!SCHEMAS.error.is_valid(&json!({"message": "no code"})));
    assert!(
        !SCHEMAS.error.is_valid(&valid_200),
        "an Error is not a 200 body"
    );
}

#[tokio::test]
async fn a_valid_request_is_processed_and_matches_the_response_schema() {
    let server = Server::default().await;
    let body = valid_request();
    assert_valid(&SCHEMAS.request, &body, "the valid request");
    assert_valid(&SCHEMAS.strict_request, &body, "the valid request (strict)");

    let reply = server.post_events(&body).await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_valid(&SCHEMAS.response, &reply.body, "the 200 body");
    assert_eq!(
        reply.body,
        json!({
            "num_events_received": 2,
            "num_events_processed": 2,
            "events": [
                {"status": "processed", "error_message": null, "warning_message": null},
                {"status": "processed", "error_message": null, "warning_message": null},
            ]
        })
    );
}

/// How the sandbox must answer a body the mechanical request schema rejects.
enum Expect {
    /// 400 with an `Error` body whose message contains the text.
    BadRequest(&'static str),
    /// 422 where event `index` failed with a message containing the text, others processed.
    EventFails(usize, &'static str),
}

fn mutate(f: impl FnOnce(&mut Value)) -> Value {
    let mut body = valid_request();
    f(&mut body);
    body
}

/// The invalid request variants of `tools/verify_schemas.py` ("rejected by the mechanical
/// schema"), with what the sandbox answers and the field its message must name.
fn schema_rejected_variants() -> Vec<(&'static str, Value, Expect)> {
    let valid = valid_request();
    let ph = valid["data"][0]["user_data"]["ph"][0].clone();
    let em = valid["data"][0]["user_data"]["em"][0].clone();
    vec![
        (
            "event missing required event_id",
            mutate(|d| {
                d["data"][0].as_object_mut().unwrap().remove("event_id");
            }),
            Expect::EventFails(0, "\"event_id\""),
        ),
        (
            "user_data with only ph",
            mutate(|d| d["data"][1]["user_data"] = json!({"ph": [ph]})),
            Expect::EventFails(1, "\"user_data\""),
        ),
        (
            "client_ip_address without client_user_agent",
            mutate(|d| {
                d["data"][1]["user_data"]
                    .as_object_mut()
                    .unwrap()
                    .remove("client_user_agent");
            }),
            Expect::EventFails(1, "without \"client_user_agent\""),
        ),
        (
            "unknown event property",
            mutate(|d| d["data"][0]["eventName"] = json!("checkout")),
            Expect::EventFails(0, "\"eventName\""),
        ),
        (
            "custom_data.value as a JSON number",
            mutate(|d| d["data"][0]["custom_data"]["value"] = json!(72.39)),
            Expect::EventFails(0, "\"custom_data.value\""),
        ),
        (
            "user_data.em as a string",
            mutate(|d| d["data"][0]["user_data"]["em"] = em),
            Expect::EventFails(0, "\"user_data.em\""),
        ),
        (
            "unknown key in a contents[] item",
            mutate(|d| d["data"][0]["custom_data"]["contents"][0]["price"] = json!("1")),
            Expect::EventFails(0, "\"price\" in custom_data.contents[0]"),
        ),
        (
            "event_time as a string",
            mutate(|d| d["data"][0]["event_time"] = json!(now().to_string())),
            Expect::EventFails(0, "\"event_time\""),
        ),
        (
            "empty data array",
            json!({"data": []}),
            Expect::BadRequest("at least 1 event"),
        ),
        (
            "1001 events",
            json!({"data": vec![valid["data"][1].clone(); 1001]}),
            Expect::BadRequest("at most 1000 events"),
        ),
        (
            "'test' in the body",
            mutate(|d| d["test"] = json!(true)),
            Expect::BadRequest("\"test\""),
        ),
    ]
}

#[tokio::test]
async fn every_body_the_request_schema_rejects_is_rejected_by_the_sandbox_too() {
    let server = Server::default().await;
    for (label, body, expect) in schema_rejected_variants() {
        assert!(
            !SCHEMAS.request.is_valid(&body),
            "{label}: the mechanical schema should reject this variant"
        );
        let reply = server.post_events(&body).await;
        match expect {
            Expect::BadRequest(needle) => {
                assert_error(&reply, 400, label);
                assert_eq!(reply.body["code"], 4196, "{label}");
                let message = reply.body["message"].as_str().unwrap();
                assert!(message.contains(needle), "{label}: {message}");
            }
            Expect::EventFails(index, needle) => {
                assert_partial_failure(&reply, label);
                let details = &reply.body["details"];
                let (status, message) = event_status(details, index);
                assert_eq!(status, "failed", "{label}");
                assert!(message.contains(needle), "{label}: {message}");
                let others = details["events"].as_array().unwrap().len() - 1;
                assert_eq!(details["num_events_processed"], others, "{label}");
            }
        }
    }
    // And the other way round: every event the sandbox processed is one the schema accepts.
    let processed = server.sandbox.events();
    assert!(
        !processed.is_empty(),
        "the valid sibling events were processed"
    );
    for recorded in processed {
        assert_valid(
            &SCHEMAS.request,
            &json!({"data": [recorded.event]}),
            "a processed event",
        );
    }
}

#[tokio::test]
async fn rules_pinterest_states_only_in_prose_fail_the_event_though_the_schema_accepts_them() {
    let server = Server::default().await;
    let hashed_upper = load("events-request.valid.json")["data"][0]["user_data"]["em"][0]
        .as_str()
        .unwrap()
        .to_uppercase();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "event_name purchase",
            mutate(|d| d["data"][0]["event_name"] = json!("purchase")),
            "\"checkout\"",
        ),
        (
            "event_name in the Tag's spelling",
            mutate(|d| d["data"][0]["event_name"] = json!("Checkout")),
            "lower case",
        ),
        (
            "action_source website",
            mutate(|d| d["data"][0]["action_source"] = json!("website")),
            "\"web\"",
        ),
        (
            "event_time in milliseconds",
            mutate(|d| d["data"][0]["event_time"] = json!(now() * 1000)),
            "milliseconds",
        ),
        (
            "an un-hashed email",
            mutate(|d| d["data"][0]["user_data"]["em"] = json!(["jane.doe@example.com"])),
            "user_data.em[0]",
        ),
        (
            "an upper-case hex digest",
            mutate(|d| d["data"][0]["user_data"]["em"] = json!([hashed_upper])),
            "lower-case hex",
        ),
        (
            "a decimal comma in value",
            mutate(|d| d["data"][0]["custom_data"]["value"] = json!("72,39")),
            "\"custom_data.value\"",
        ),
    ];
    for (label, body, needle) in cases {
        // The official schema cannot see these; the project's strict profile can.
        assert_valid(&SCHEMAS.request, &body, label);
        assert!(!SCHEMAS.strict_request.is_valid(&body), "{label}: strict");

        let reply = server.post_events(&body).await;
        assert_partial_failure(&reply, label);
        let (status, message) = event_status(&reply.body["details"], 0);
        assert_eq!(status, "failed", "{label}");
        assert!(message.contains(needle), "{label}: {message}");
        assert_eq!(event_status(&reply.body["details"], 1).0, "processed");
    }
}

#[tokio::test]
async fn exactly_1000_events_are_processed_while_1001_or_none_are_a_400() {
    let server = Server::default().await;
    let events: Vec<Value> = (0..1000).map(|i| page_visit(&format!("pv-{i}"))).collect();

    let reply = server.post_events(&json!({ "data": events })).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_valid(&SCHEMAS.response, &reply.body, "1000 events");
    assert_eq!(reply.body["num_events_received"], 1000);
    assert_eq!(reply.body["num_events_processed"], 1000);
    assert_eq!(reply.body["events"].as_array().unwrap().len(), 1000);

    let mut too_many = events.clone();
    too_many.push(page_visit("pv-1000"));
    let reply = server.post_events(&json!({ "data": too_many })).await;
    assert_error(&reply, 400, "1001 events");
    assert!(reply.body["message"].as_str().unwrap().contains("1001"));

    let reply = server.post_events(&json!({"data": []})).await;
    assert_error(&reply, 400, "no events");

    let stats = server.stats().await;
    assert_eq!(
        stats.events_received, 1000,
        "only the accepted batch counts"
    );
}

#[tokio::test]
async fn a_body_that_is_not_a_data_wrapper_is_a_400_naming_the_problem() {
    let server = Server::default().await;
    let cases = [
        ("not json", "not valid JSON"),
        ("[]", "JSON object"),
        (r#"{"events": []}"#, "\"data\""),
        (r#"{"data": {}}"#, "must be an array"),
    ];
    for (raw, needle) in cases {
        let reply = server
            .send(
                server
                    .client
                    .post(server.events_url(ACCOUNT))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(raw),
            )
            .await;
        assert_error(&reply, 400, raw);
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.contains(needle), "{raw}: {message}");
    }
}

#[tokio::test]
async fn an_ad_account_id_that_is_not_1_to_18_digits_is_a_400() {
    let server = Server::default().await;
    for account in ["abc", "12a4", "1234567890123456789"] {
        let reply = server
            .send(
                server
                    .client
                    .post(server.events_url(account))
                    .bearer_auth(TOKEN)
                    .json(&valid_request()),
            )
            .await;
        assert_error(&reply, 400, account);
        assert!(
            reply.body["message"]
                .as_str()
                .unwrap()
                .contains("ad_account_id")
        );
    }
    let reply = server
        .send(
            server
                .client
                .post(server.events_url("123456789012345678"))
                .bearer_auth(TOKEN)
                .json(&valid_request()),
        )
        .await;
    assert_eq!(reply.status, 200, "18 digits are fine: {}", reply.body);
}

#[tokio::test]
async fn any_non_empty_bearer_token_is_accepted_when_none_is_configured() {
    let server = Server::default().await;
    let body = valid_request();
    let expected_401 = json!({"code": 2, "message": "Authentication failed."});

    let reply = server
        .send(server.client.post(server.events_url(ACCOUNT)).json(&body))
        .await;
    assert_error(&reply, 401, "no Authorization header");
    assert_eq!(reply.body, expected_401);

    for header in ["Bearer ", "Basic dXNlcjpwYXNz", "Bearer"] {
        let reply = server
            .send(
                server
                    .client
                    .post(server.events_url(ACCOUNT))
                    .header("authorization", header)
                    .json(&body),
            )
            .await;
        assert_error(&reply, 401, header);
        assert_eq!(reply.body, expected_401);
    }

    let reply = server
        .send(
            server
                .client
                .post(server.events_url(ACCOUNT))
                .bearer_auth("whatever")
                .json(&body),
        )
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn only_the_configured_token_is_accepted_and_auth_comes_before_the_body() {
    let server = Server::start(SandboxOptions {
        token: Some("s3cret".into()),
        ..SandboxOptions::default()
    })
    .await;
    let body = valid_request();
    let post = |auth: &str| {
        server
            .client
            .post(server.events_url(ACCOUNT))
            .header("authorization", auth)
            .json(&body)
    };

    assert_error(&server.send(post("Bearer wrong")).await, 401, "wrong token");
    assert_error(
        &server.send(post("Bearer s3cret2")).await,
        401,
        "longer token",
    );
    assert_eq!(server.send(post("Bearer s3cret")).await.status, 200);
    assert_eq!(
        server.send(post("bearer s3cret")).await.status,
        200,
        "the scheme is case-insensitive"
    );

    // A bad body and a bad ad account id are not looked at without a valid token.
    let reply = server
        .send(
            server
                .client
                .post(server.events_url("not-digits"))
                .body("garbage"),
        )
        .await;
    assert_error(&reply, 401, "unauthenticated garbage");
}

#[tokio::test]
async fn events_outside_the_time_window_fail_with_pinterest_s_timestamp_messages() {
    let server = Server::start(SandboxOptions {
        max_event_age_secs: 3600,
        max_future_skew_secs: 60,
        ..SandboxOptions::default()
    })
    .await;
    let mut old = page_visit("old");
    old["event_time"] = json!(now() - 2 * 3600);
    let mut future = page_visit("future");
    future["event_time"] = json!(now() + 3600);
    let recent = page_visit("recent");

    let reply = server
        .post_events(&json!({"data": [old, recent, future]}))
        .await;

    assert_partial_failure(&reply, "time window");
    let details = &reply.body["details"];
    let (status, message) = event_status(details, 0);
    assert_eq!(status, "failed");
    assert!(
        message.starts_with("Invalid event_timestamp parameter. Given timestamp is in the past."),
        "{message}"
    );
    assert_eq!(event_status(details, 1).0, "processed");
    let (status, message) = event_status(details, 2);
    assert_eq!(status, "failed");
    assert!(
        message.starts_with("Invalid event_timestamp parameter. Given timestamp is in the future."),
        "{message}"
    );
    assert_eq!(details["num_events_received"], 3);
    assert_eq!(details["num_events_processed"], 1);
}

#[tokio::test]
async fn a_checkout_without_value_or_currency_is_processed_with_a_warning() {
    let server = Server::default().await;
    let body = mutate(|d| {
        let custom = d["data"][0]["custom_data"].as_object_mut().unwrap();
        custom.remove("value");
        custom.remove("currency");
    });

    let reply = server.post_events(&body).await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_valid(&SCHEMAS.response, &reply.body, "200 with a warning");
    let warning = reply.body["events"][0]["warning_message"].as_str().unwrap();
    assert!(warning.contains("custom_data.value"), "{warning}");
    assert!(warning.contains("custom_data.currency"), "{warning}");
    assert!(reply.body["events"][1]["warning_message"].is_null());
}

#[tokio::test]
async fn a_scripted_429_carries_retry_after_and_the_next_request_is_processed_normally() {
    let server = Server::default().await;
    server
        .set_faults(json!({"script": [{"status": 429, "retry_after": 7}]}))
        .await;

    let reply = server.post_events(&valid_request()).await;
    assert_error(&reply, 429, "scripted 429");
    assert_eq!(reply.body["code"], 8);
    assert_eq!(reply.retry_after(), Some(7));

    let reply = server.post_events(&valid_request()).await;
    assert_eq!(reply.status, 200, "the script is consumed: {}", reply.body);
    assert_eq!(
        server.get_json("/sandbox/faults").await["script"],
        json!([]),
        "nothing left to consume"
    );
}

#[tokio::test]
async fn a_scripted_503_answers_with_the_spec_s_ramped_down_error() {
    let server = Server::default().await;
    server.sandbox.set_faults(Faults {
        script: vec![
            FaultStep {
                status: 503,
                ..FaultStep::default()
            },
            FaultStep {
                status: 503,
                retry_after: Some(3),
                message: Some("maintenance".into()),
                ..FaultStep::default()
            },
        ],
        ..Faults::default()
    });

    let reply = server.post_events(&valid_request()).await;
    assert_error(&reply, 503, "scripted 503");
    assert_eq!(
        reply.body,
        json!({"code": 4197, "message": "The endpoint has been ramped down and is currently not accepting any traffic."})
    );
    assert_eq!(reply.retry_after(), None);

    let reply = server.post_events(&valid_request()).await;
    assert_error(&reply, 503, "scripted 503 with message");
    assert_eq!(reply.body, json!({"code": 4197, "message": "maintenance"}));
    assert_eq!(reply.retry_after(), Some(3));
}

#[tokio::test]
async fn every_scripted_status_gets_the_error_body_the_spec_gives_it() {
    let server = Server::default().await;
    let statuses = [400u16, 403, 500, 502, 422];
    server.sandbox.set_faults(Faults {
        script: statuses
            .iter()
            .map(|&status| FaultStep {
                status,
                ..FaultStep::default()
            })
            .collect(),
        ..Faults::default()
    });
    for status in statuses {
        let reply = server.post_events(&valid_request()).await;
        let label = format!("scripted {status}");
        if status == 422 {
            assert_partial_failure(&reply, &label);
            assert_eq!(reply.body["details"]["num_events_received"], 2);
            assert_eq!(reply.body["details"]["num_events_processed"], 0);
        } else {
            assert_error(&reply, status, &label);
        }
    }
    assert!(
        server.sandbox.events().is_empty(),
        "fault answers process nothing"
    );
}

#[tokio::test]
async fn a_slow_reply_takes_at_least_the_configured_delay() {
    let server = Server::default().await;
    server.sandbox.set_faults(Faults {
        delay_ms: 150,
        // A 2xx step only adds its delay; the request is then processed normally.
        script: vec![FaultStep {
            status: 200,
            delay_ms: Some(150),
            ..FaultStep::default()
        }],
        ..Faults::default()
    });

    let started = Instant::now();
    let reply = server.post_events(&valid_request()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let started = Instant::now();
    let reply = server.post_events(&valid_request()).await;
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn rejected_event_ids_fail_inside_a_422_while_the_others_are_processed() {
    let server = Server::default().await;
    server.set_faults(json!({"reject_event_ids": ["e2"]})).await;
    let body = json!({"data": [page_visit("e1"), page_visit("e2"), page_visit("e3")]});

    for round in 0..2 {
        let reply = server.post_events(&body).await;
        assert_partial_failure(&reply, "rejected id");
        let details = &reply.body["details"];
        assert_eq!(details["num_events_received"], 3);
        assert_eq!(details["num_events_processed"], 2, "round {round}");
        assert_eq!(event_status(details, 0).0, "processed");
        let (status, message) = event_status(details, 1);
        assert_eq!(status, "failed");
        assert!(message.contains("\"e2\""), "{message}");
        assert_eq!(event_status(details, 2).0, "processed");
    }

    let ids: Vec<Value> = server
        .get_json("/sandbox/events")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["event_id"].clone())
        .collect();
    assert_eq!(ids, [json!("e1"), json!("e3"), json!("e1"), json!("e3")]);
    let stats = server.stats().await;
    assert_eq!(stats.events_failed, 2);
    assert_eq!(stats.events_processed, 4);
}

#[tokio::test]
async fn fail_all_answers_401_to_every_request_until_cleared() {
    let server = Server::default().await;
    server
        .set_faults(json!({"fail_all": {"status": 401}, "script": [{"status": 503}]}))
        .await;

    for _ in 0..3 {
        let reply = server.post_events(&valid_request()).await;
        assert_error(&reply, 401, "revoked token");
        assert_eq!(reply.body["code"], 2);
    }

    let cleared = server
        .send(server.client.delete(server.url("/sandbox/faults")))
        .await;
    assert_eq!(cleared.status, 204);
    let reply = server.post_events(&valid_request()).await;
    assert_eq!(reply.status, 200, "cleared, and the script went with it");
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_once_an_account_s_minute_is_spent() {
    let server = Server::start(SandboxOptions {
        rate_limit_per_minute: Some(2),
        ..SandboxOptions::default()
    })
    .await;
    for _ in 0..2 {
        assert_eq!(server.post_events(&valid_request()).await.status, 200);
    }

    let reply = server.post_events(&valid_request()).await;
    assert_error(&reply, 429, "third call in the minute");
    assert_eq!(reply.body["code"], 8);
    let retry_after = reply.retry_after().expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "{retry_after}");

    let other = server
        .send(
            server
                .client
                .post(server.events_url("42"))
                .bearer_auth(TOKEN)
                .json(&valid_request()),
        )
        .await;
    assert_eq!(other.status, 200, "the limit is per ad account");

    server.sandbox.reset();
    assert_eq!(
        server.post_events(&valid_request()).await.status,
        200,
        "reset clears the windows"
    );
}

#[tokio::test]
async fn test_mode_events_are_recorded_with_the_test_flag() {
    let server = Server::default().await;
    let reply = server
        .send(
            server
                .client
                .post(format!("{}?test=true", server.events_url(ACCOUNT)))
                .bearer_auth(TOKEN)
                .json(&json!({"data": [page_visit("t1")]})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    server
        .post_events(&json!({"data": [page_visit("live1")]}))
        .await;

    let events = server.sandbox.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event["event_id"], "t1");
    assert!(events[0].test);
    assert_eq!(events[0].ad_account_id, ACCOUNT);
    assert_eq!(events[1].event["event_id"], "live1");
    assert!(!events[1].test);

    let reply = server
        .send(
            server
                .client
                .post(format!("{}?test=maybe", server.events_url(ACCOUNT)))
                .bearer_auth(TOKEN)
                .json(&valid_request()),
        )
        .await;
    assert_error(&reply, 400, "?test=maybe");
}

#[tokio::test]
async fn requests_are_recorded_in_arrival_order_with_body_status_and_response() {
    let server = Server::default().await;
    let valid = valid_request();

    let unauthenticated = server
        .send(server.client.post(server.events_url(ACCOUNT)).json(&valid))
        .await;
    let not_json = server
        .send(
            server
                .client
                .post(format!("{}?test=false", server.events_url(ACCOUNT)))
                .bearer_auth(TOKEN)
                .body("not json"),
        )
        .await;
    let ok = server.post_events(&valid).await;

    let recorded = server.get_json("/sandbox/requests").await;
    assert_eq!(
        recorded,
        serde_json::to_value(server.sandbox.requests()).unwrap(),
        "the HTTP view and the Rust view agree"
    );
    let path = format!("/v5/ad_accounts/{ACCOUNT}/events");
    assert_eq!(
        recorded,
        json!([
            {"method": "POST", "path": path, "query": null, "body": valid,
             "status": 401, "response": unauthenticated.body},
            {"method": "POST", "path": path, "query": "test=false", "body": "not json",
             "status": 400, "response": not_json.body},
            {"method": "POST", "path": path, "query": null, "body": valid,
             "status": 200, "response": ok.body},
        ])
    );

    let events = server.get_json("/sandbox/events").await;
    assert_eq!(
        events,
        json!([
            {"ad_account_id": ACCOUNT, "test": false, "event": valid["data"][0]},
            {"ad_account_id": ACCOUNT, "test": false, "event": valid["data"][1]},
        ])
    );
    let stats = server.stats().await;
    assert_eq!(
        (
            stats.requests,
            stats.events_received,
            stats.events_processed,
            stats.events_failed
        ),
        (3, 2, 2, 0)
    );
}

#[tokio::test]
async fn concurrent_requests_are_all_counted_and_recorded() {
    let server = Server::default().await;
    let replies = futures_join_all(
        (0..20)
            .map(|i| {
                let request = server
                    .client
                    .post(server.events_url(ACCOUNT))
                    .bearer_auth(TOKEN)
                    .json(&json!({"data": [page_visit(&format!("c{i}"))]}));
                async move { request.send().await.expect("sent").status().as_u16() }
            })
            .collect(),
    )
    .await;
    assert!(replies.iter().all(|&s| s == 200), "{replies:?}");
    assert_eq!(server.sandbox.requests().len(), 20);
    assert_eq!(server.sandbox.events().len(), 20);
    assert_eq!(server.sandbox.stats().events_processed, 20);
}

/// Runs futures concurrently on the test's runtime (no `futures` crate needed).
async fn futures_join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

#[tokio::test]
async fn with_recording_off_only_the_counters_are_kept() {
    let server = Server::start(SandboxOptions {
        record_requests: false,
        ..SandboxOptions::default()
    })
    .await;
    server.post_events(&valid_request()).await;
    server
        .post_events(&mutate(|d| d["data"][1]["event_name"] = json!("purchase")))
        .await;

    assert!(server.sandbox.requests().is_empty());
    assert_eq!(server.get_json("/sandbox/events").await, json!([]));
    let stats = server.stats().await;
    assert_eq!(
        (
            stats.requests,
            stats.events_received,
            stats.events_processed,
            stats.events_failed
        ),
        (2, 4, 3, 1)
    );
}

#[tokio::test]
async fn reset_clears_recordings_counters_and_faults() {
    let server = Server::default().await;
    server.post_events(&valid_request()).await;
    server
        .set_faults(json!({"fail_all": {"status": 500}, "delay_ms": 5}))
        .await;

    let reply = server
        .send(server.client.post(server.url("/sandbox/reset")))
        .await;
    assert_eq!(reply.status, 204);

    assert!(server.sandbox.requests().is_empty());
    assert!(server.sandbox.events().is_empty());
    assert_eq!(server.stats().await.requests, 0);
    assert_eq!(
        server.get_json("/sandbox/faults").await,
        serde_json::to_value(Faults::default()).unwrap()
    );
    assert_eq!(server.post_events(&valid_request()).await.status, 200);
}

#[tokio::test]
async fn unknown_v5_paths_are_a_404_with_an_error_body_and_are_recorded() {
    let server = Server::default().await;
    let reply = server
        .send(server.client.get(server.url("/v5/ad_accounts/1/nope")))
        .await;
    assert_error(&reply, 404, "unknown path");
    assert_eq!(reply.body["message"], "Not found");

    let reply = server
        .send(
            server
                .client
                .get(server.events_url(ACCOUNT))
                .bearer_auth(TOKEN),
        )
        .await;
    assert_error(&reply, 405, "GET on the events path");

    let recorded = server.sandbox.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].path, "/v5/ad_accounts/1/nope");
    assert_eq!(recorded[0].status, 404);
    assert_eq!(
        recorded[0].body,
        Value::Null,
        "an empty body is recorded as null"
    );
}

#[tokio::test]
async fn a_bad_faults_body_is_a_400_and_changes_nothing() {
    let server = Server::default().await;
    server.set_faults(json!({"delay_ms": 1})).await;
    let reply = server
        .send(
            server
                .client
                .post(server.url("/sandbox/faults"))
                .body(r#"{"script": "soon"}"#),
        )
        .await;
    assert_error(&reply, 400, "bad faults");
    assert_eq!(server.sandbox.faults().delay_ms, 1);
}

#[tokio::test]
async fn nested_objects_are_closed_and_bounded_as_the_spec_says() {
    let server = Server::default().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown custom_data key",
            mutate(|d| d["data"][0]["custom_data"]["order_quantity"] = json!(3)),
            "\"order_quantity\" in custom_data",
        ),
        (
            "quantity as a string",
            mutate(|d| d["data"][0]["custom_data"]["contents"][1]["quantity"] = json!("1")),
            "\"custom_data.contents[1].quantity\"",
        ),
        (
            "unknown app_info key",
            mutate(|d| d["data"][0]["app_info"] = json!({"app_id": "1", "sdk": "x"})),
            "\"sdk\" in app_info",
        ),
        (
            "window_width above 30720",
            mutate(|d| d["data"][0]["app_info"] = json!({"window_width": 30721})),
            "\"app_info.window_width\"",
        ),
        (
            "device_info form_factor outside its enum",
            mutate(|d| d["data"][0]["device_info"] = json!({"form_factor": "phone"})),
            "device_info.form_factor",
        ),
        (
            "timezone_abbr longer than 5",
            mutate(|d| d["data"][0]["device_info"] = json!({"timezone_abbr": "CEST+1"})),
            "\"device_info.timezone_abbr\"",
        ),
        (
            "opt_out as a string",
            mutate(|d| d["data"][0]["opt_out"] = json!("false")),
            "\"opt_out\"",
        ),
        (
            "click_id as a number",
            mutate(|d| d["data"][0]["user_data"]["click_id"] = json!(42)),
            "\"user_data.click_id\"",
        ),
    ];
    for (label, body, needle) in cases {
        assert!(!SCHEMAS.request.is_valid(&body), "{label}: schema");
        let reply = server.post_events(&body).await;
        assert_partial_failure(&reply, label);
        let (status, message) = event_status(&reply.body["details"], 0);
        assert_eq!(status, "failed", "{label}");
        assert!(message.contains(needle), "{label}: {message}");
    }

    // The same objects filled in correctly are processed.
    let body = mutate(|d| {
        d["data"][0]["app_info"] = json!({"app_id": "429047995", "window_width": 1678});
        d["data"][0]["device_info"] =
            json!({"form_factor": "cellphone", "timezone_abbr": "PDT", "languages": ["en"]});
    });
    assert_valid(&SCHEMAS.request, &body, "filled-in app_info/device_info");
    assert_eq!(server.post_events(&body).await.status, 200);
}

#[tokio::test]
async fn an_unknown_user_data_key_or_odd_currency_is_a_warning_not_a_failure() {
    let server = Server::default().await;
    // user_data is not closed in the spec, so the schema accepts this as well.
    let body = mutate(|d| {
        d["data"][1]["user_data"]["fbp"] = json!("fb.1.2.3");
        d["data"][0]["custom_data"]["currency"] = json!("usd");
    });
    assert_valid(&SCHEMAS.request, &body, "unknown user_data key");

    let reply = server.post_events(&body).await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    let checkout_warning = reply.body["events"][0]["warning_message"].as_str().unwrap();
    assert!(checkout_warning.contains("\"usd\""), "{checkout_warning}");
    let warning = reply.body["events"][1]["warning_message"].as_str().unwrap();
    assert!(warning.contains("\"fbp\""), "{warning}");
}
