//! Does Pinterest accept this ad account's conversion token? (`check-config`, `status`.)

use pincapi_core::event::{ActionSource, ConversionEvent, EventId, EventName, EventTime, UserData};
use pincapi_core::pinterest::{BatchAnswer, batch_body, classify};

use crate::clock::system_now_ms as now_ms;
use crate::config::AccountConfig;
use crate::pinterest_client::PinterestClient;

/// Sends one harmless `page_visit` with `?test=true` (Pinterest checks it but records
/// nothing) and says whether the token works for the account.
pub async fn check(client: &PinterestClient, account: &AccountConfig) -> Result<String, String> {
    let now = now_ms();
    let event = ConversionEvent::new(
        EventName::PageVisit,
        ActionSource::Web,
        EventTime::from_secs(now / 1000).map_err(|e| e.to_string())?,
        EventId::parse(format!("pincapi-check-config-{now}")).map_err(|e| e.to_string())?,
        UserData {
            client_ip_address: Some("192.0.2.1".into()),
            client_user_agent: Some(
                concat!("pincapi-check-config/", env!("CARGO_PKG_VERSION")).into(),
            ),
            ..UserData::default()
        },
    );
    let body = batch_body([event.to_json().as_str()]);
    let answer = client
        .send_events(&account.id, &account.token, true, body)
        .await
        .map_err(|e| format!("no answer from {}: {e}", client.base()))?;
    match classify(
        answer.status,
        answer.retry_after.as_deref(),
        &answer.body,
        1,
    ) {
        BatchAnswer::PerEvent(_) => Ok(format!(
            "token accepted (HTTP {}; test request, nothing recorded)",
            answer.status
        )),
        BatchAnswer::AuthFailed { status, message } => Err(format!(
            "HTTP {status}: {message}. Check the conversion access token and that it belongs to this ad account"
        )),
        BatchAnswer::Retry { reason, .. } => {
            Err(format!("Pinterest is not answering normally: {reason}"))
        }
        BatchAnswer::Invalid { message } => Err(format!("the test request was refused: {message}")),
        BatchAnswer::Misconfigured { status, message } => Err(format!(
            "HTTP {status}: {message}. Check pinterest_api_base and the ad account id"
        )),
        BatchAnswer::Unreadable { reason, .. } => Err(format!(
            "{} did not answer as Pinterest does ({reason}). Check pinterest_api_base and any \
             proxy in between",
            client.base()
        )),
    }
}
