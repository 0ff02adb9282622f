//! HTTP client for Pinterest's API (or the sandbox that stands in for it).
//!
//! It only moves bytes: the answer is classified by `pincapi_core::pinterest::classify`.

use std::time::Duration;

use crate::config::Secret;

/// An HTTP answer, unclassified.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// No HTTP answer at all: the request may or may not have reached Pinterest.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct TransportError {
    pub kind: &'static str,
    pub detail: String,
}

/// The client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PinterestClient {
    http: reqwest::Client,
    base: String,
}

impl PinterestClient {
    /// A client for `base` (e.g. `https://api.pinterest.com/v5`).
    pub fn new(base: &str, timeout: Duration) -> Result<PinterestClient, TransportError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("pincapi/", env!("CARGO_PKG_VERSION")))
            // A redirect is never Pinterest's answer to a POST of events: following it would
            // re-send the batch somewhere else (or as a GET). It is classified instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(transport)?;
        Ok(PinterestClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// The base URL, for messages: a password in it is masked.
    pub fn base(&self) -> String {
        crate::config::redact_url(&self.base)
    }

    /// `POST {base}/ad_accounts/{id}/events[?test=true]` with a prepared `{"data":[...]}` body.
    pub async fn send_events(
        &self,
        ad_account_id: &str,
        token: &Secret,
        test: bool,
        body: String,
    ) -> Result<Answer, TransportError> {
        let mut url = format!("{}/ad_accounts/{ad_account_id}/events", self.base);
        if test {
            url.push_str("?test=true");
        }
        let resp = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        // Pinterest documents no rate-limit header names for v5; log whatever it sends so
        // operators learn them.
        for (name, value) in resp.headers() {
            let n = name.as_str();
            if n.contains("ratelimit") || n == "retry-after" {
                tracing::debug!(header = n, value = ?value, ad_account_id, "Rate-limit header from Pinterest");
            }
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.bytes().await.map_err(transport)?.to_vec();
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// `GET {base}{path}` with a bearer token, for checks and polling.
    pub async fn get(&self, path: &str, token: &Secret) -> Result<Answer, TransportError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(transport)?.to_vec();
        Ok(Answer {
            status,
            retry_after: None,
            body,
        })
    }
}

fn transport(e: reqwest::Error) -> TransportError {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // Without the URL: a base URL may carry a user and password (a proxy's), and the client's
    // base (without them) is named where it matters.
    TransportError {
        kind,
        detail: e.without_url().to_string(),
    }
}
