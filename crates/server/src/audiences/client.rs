//! The Ads API calls audiences need (customer lists and audiences), with the OAuth token
//! `pinterest_oauth_token`. It moves JSON and turns refusals into [`AdsError`]s that say what
//! to do; the sync decides what to call.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Secret;

/// Why an Ads API call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdsError {
    #[error(
        "pinterest_oauth_token: not set; audiences need an OAuth token with the ads:write scope \
         (PINCAPI_PINTEREST_OAUTH_TOKEN); the conversion token is not accepted by the Ads API"
    )]
    MissingToken,
    #[error(
        "pinterest_oauth_token: Pinterest answered 401: the OAuth token is expired or invalid \
         (PINCAPI_PINTEREST_OAUTH_TOKEN)"
    )]
    Unauthorized,
    #[error(
        "pinterest_oauth_token: Pinterest answered 403: the OAuth token is missing scope \
         ads:write (or ads:read), or has no access to ad account {0}"
    )]
    Forbidden(String),
    #[error("Pinterest answered {status} to {what}: {message}")]
    Api {
        status: u16,
        what: String,
        message: String,
    },
    #[error("no answer from Pinterest to {what}: {detail}")]
    Transport { what: String, detail: String },
}

/// The Ads API client of one run.
#[derive(Debug, Clone)]
pub struct AdsClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl AdsClient {
    /// A client for `base` (e.g. `https://api.pinterest.com/v5`); fails without a token.
    pub fn new(base: &str, token: &Secret, timeout: Duration) -> Result<AdsClient, AdsError> {
        if token.is_empty() {
            return Err(AdsError::MissingToken);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("pincapi/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AdsError::Transport {
                what: "the HTTP client".into(),
                detail: e.to_string(),
            })?;
        Ok(AdsClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.clone(),
        })
    }

    /// The customer list of the ad account with exactly this name, if any (pages through).
    pub async fn find_customer_list(
        &self,
        account: &str,
        name: &str,
    ) -> Result<Option<Value>, AdsError> {
        self.find(account, "customer_lists", |v| v["name"] == name)
            .await
    }

    /// `customer_lists/create`.
    pub async fn create_customer_list(
        &self,
        account: &str,
        name: &str,
        list_type: &str,
        records: String,
    ) -> Result<Value, AdsError> {
        let body = json!({"name": name, "records": records, "list_type": list_type});
        self.call(
            reqwest::Method::POST,
            account,
            &format!("ad_accounts/{account}/customer_lists"),
            Some(body),
        )
        .await
    }

    /// `customer_lists/update` with `ADD` or `REMOVE`.
    pub async fn update_customer_list(
        &self,
        account: &str,
        list_id: &str,
        operation: &str,
        records: String,
    ) -> Result<Value, AdsError> {
        let body = json!({"operation_type": operation, "records": records});
        self.call(
            reqwest::Method::PATCH,
            account,
            &format!("ad_accounts/{account}/customer_lists/{list_id}"),
            Some(body),
        )
        .await
    }

    /// `customer_lists/get`.
    pub async fn get_customer_list(&self, account: &str, id: &str) -> Result<Value, AdsError> {
        self.call(
            reqwest::Method::GET,
            account,
            &format!("ad_accounts/{account}/customer_lists/{id}"),
            None,
        )
        .await
    }

    /// The audience of the ad account with this name and type, if any (pages through).
    pub async fn find_audience(
        &self,
        account: &str,
        name: &str,
        audience_type: &str,
    ) -> Result<Option<Value>, AdsError> {
        self.find(account, "audiences", |v| {
            v["name"] == name && v["audience_type"] == audience_type
        })
        .await
    }

    /// `audiences/create` with `{name, audience_type, rule, description}`.
    pub async fn create_audience(&self, account: &str, body: Value) -> Result<Value, AdsError> {
        self.call(
            reqwest::Method::POST,
            account,
            &format!("ad_accounts/{account}/audiences"),
            Some(body),
        )
        .await
    }

    /// `audiences/get`.
    pub async fn get_audience(&self, account: &str, id: &str) -> Result<Value, AdsError> {
        self.call(
            reqwest::Method::GET,
            account,
            &format!("ad_accounts/{account}/audiences/{id}"),
            None,
        )
        .await
    }

    async fn find(
        &self,
        account: &str,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>, AdsError> {
        let mut bookmark: Option<String> = None;
        loop {
            let mut path = format!("ad_accounts/{account}/{what}?page_size=250");
            if let Some(b) = &bookmark {
                path.push_str("&bookmark=");
                path.push_str(&urlencode(b));
            }
            let page = self
                .call(reqwest::Method::GET, account, &path, None)
                .await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if let Some(found) = items.into_iter().find(|v| wanted(v)) {
                return Ok(Some(found));
            }
            match page["bookmark"].as_str() {
                Some(b) if !b.is_empty() => bookmark = Some(b.to_owned()),
                _ => return Ok(None),
            }
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        account: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, AdsError> {
        let what = format!("{method} /{}", path.split('?').next().unwrap_or(path));
        let mut req = self
            .http
            .request(method, format!("{}/{path}", self.base))
            .bearer_auth(self.token.expose());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| AdsError::Transport {
            what: what.clone(),
            detail: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(value),
            401 => Err(AdsError::Unauthorized),
            403 => Err(AdsError::Forbidden(account.to_owned())),
            _ => Err(AdsError::Api {
                status,
                what,
                message: value["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| text.chars().take(200).collect()),
            }),
        }
    }
}

/// Percent-encodes a bookmark for the query string.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
