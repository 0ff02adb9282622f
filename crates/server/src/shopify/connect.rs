//! Webhook subscriptions, set up and kept alive: `pincapi shopify connect` and the check
//! `serve` runs every `shopify.webhook_check_interval_secs`.
//!
//! One run, for one shop: reads the installation's access scopes and names the missing ones;
//! lists the app's `webhookSubscriptions` (the API lists only the app's own); and for each
//! topic the shop needs, makes it so that exactly one subscription points at
//! `{public_url}/webhooks/shopify`: creating it, pointing one with another `uri` there
//! (update), and deleting the rest (duplicates). Topics it does not need are left alone.
//!
//! The topics: the purchase topic (`orders/create` or `orders/paid`), `orders/cancelled` and
//! `refunds/create` for the ledger, `checkouts/create` and `checkouts/update` when the shop
//! sends `initiate_checkout`, and `customers/create` when it sends `signup` (that one needs
//! `read_customers`; without it the topic is skipped and named). The `carts/*` topics are not
//! subscribed: Shopify's cart payloads never name the buyer, so they never become an event.
//! The compliance topics cannot be subscribed through the API; the README says where to set
//! them.
//!
//! Shopify deletes an API-created subscription after 8 failed deliveries in a row (about 4
//! hours); the check finds it gone, fires the `webhooks_missing` alert, re-creates it, and
//! clears the alert once every topic is back.

use std::sync::Arc;
use std::time::Duration;

use pincapi_core::shopify::Topic;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use super::admin::{
    ACCESS_SCOPES, AdminApi, ShopifyError, WEBHOOK_CREATE, WEBHOOK_DELETE, WEBHOOK_SUBSCRIPTIONS,
    WEBHOOK_UPDATE,
};
use super::bulk::UserError;
use crate::config::shopify::Shop;
use crate::metrics::Metrics;
use crate::quality::alerts::{ALL_ACCOUNTS, Alerter, Verdict};
use crate::store::SharedStore;

/// The rule of the alert raised while a needed subscription is missing.
pub const WEBHOOKS_MISSING: &str = "webhooks_missing";

/// A topic the shop needs, with the scope it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needed {
    pub topic: Topic,
    pub scope: &'static str,
}

/// The topics `shop` needs subscriptions for.
pub fn needed_topics(shop: &Shop) -> Vec<Needed> {
    let mut v = vec![
        Needed {
            topic: shop.purchase_topic,
            scope: "read_orders",
        },
        Needed {
            topic: Topic::OrdersCancelled,
            scope: "read_orders",
        },
        Needed {
            topic: Topic::RefundsCreate,
            scope: "read_orders",
        },
    ];
    if shop.options.checkouts {
        for topic in [Topic::CheckoutsCreate, Topic::CheckoutsUpdate] {
            v.push(Needed {
                topic,
                scope: "read_orders",
            });
        }
    }
    if shop.options.customers {
        v.push(Needed {
            topic: Topic::CustomersCreate,
            scope: "read_customers",
        });
    }
    v
}

/// `orders/create` as GraphQL's `WebhookSubscriptionTopic`, `ORDERS_CREATE`.
pub fn graphql_topic(topic: Topic) -> String {
    topic.as_str().replace('/', "_").to_ascii_uppercase()
}

/// A subscription as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub topic: String,
    #[serde(default)]
    pub uri: Option<String>,
}

/// What one run found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectReport {
    pub shop: String,
    /// Where the subscriptions point.
    pub uri: String,
    /// Scopes the app needs and the installation lacks.
    pub missing_scopes: Vec<String>,
    /// Needed topics without a subscription to `uri` when the run began.
    pub missing_topics: Vec<String>,
    pub created: Vec<String>,
    /// `topic: old uri`.
    pub updated: Vec<String>,
    /// `topic: uri` of duplicates deleted.
    pub deleted: Vec<String>,
    pub kept: Vec<String>,
    /// Topics not subscribed, with why.
    pub skipped: Vec<String>,
    /// Nothing was changed (`--dry-run`).
    pub dry_run: bool,
}

#[derive(Deserialize)]
struct ScopesData {
    #[serde(rename = "currentAppInstallation")]
    installation: Installation,
}

#[derive(Deserialize)]
struct Installation {
    #[serde(rename = "accessScopes")]
    scopes: Vec<Handle>,
}

#[derive(Deserialize)]
struct Handle {
    handle: String,
}

#[derive(Deserialize)]
struct SubscriptionsData {
    #[serde(rename = "webhookSubscriptions")]
    subscriptions: SubscriptionPage,
}

#[derive(Deserialize)]
struct SubscriptionPage {
    #[serde(rename = "pageInfo")]
    page_info: pincapi_core::shopify::graphql::PageInfo,
    nodes: Vec<Subscription>,
}

/// The granted scopes of the installation.
pub async fn access_scopes(api: &AdminApi) -> Result<Vec<String>, ShopifyError> {
    let data: ScopesData = api.run(ACCESS_SCOPES, json!({}), 2).await?;
    Ok(data
        .installation
        .scopes
        .into_iter()
        .map(|h| h.handle)
        .collect())
}

/// Every subscription of the app on the shop.
pub async fn subscriptions(api: &AdminApi) -> Result<Vec<Subscription>, ShopifyError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data: SubscriptionsData = api
            .run(WEBHOOK_SUBSCRIPTIONS, json!({ "after": after }), 252)
            .await?;
        out.extend(data.subscriptions.nodes);
        let info = data.subscriptions.page_info;
        match info.end_cursor.filter(|_| info.has_next_page) {
            Some(c) => after = Some(c),
            None => return Ok(out),
        }
    }
}

/// One run for the shop of `api`, subscriptions pointing at `uri`.
pub async fn connect(
    api: &AdminApi,
    uri: &str,
    dry_run: bool,
) -> Result<ConnectReport, ShopifyError> {
    let shop = api.shop();
    let mut report = ConnectReport {
        shop: shop.domain.clone(),
        uri: uri.to_owned(),
        dry_run,
        ..ConnectReport::default()
    };
    let granted = access_scopes(api).await?;
    let needed = needed_topics(shop);
    for n in &needed {
        if !granted.iter().any(|g| g == n.scope)
            && !report.missing_scopes.iter().any(|m| m == n.scope)
        {
            report.missing_scopes.push(n.scope.to_owned());
        }
    }
    let subs = subscriptions(api).await?;
    for n in needed {
        let name = n.topic.as_str();
        if !granted.iter().any(|g| g == n.scope) {
            report
                .skipped
                .push(format!("{name}: the app lacks the {} scope", n.scope));
            continue;
        }
        let topic = graphql_topic(n.topic);
        let of_topic: Vec<&Subscription> = subs.iter().filter(|s| s.topic == topic).collect();
        let keep = of_topic
            .iter()
            .find(|s| s.uri.as_deref() == Some(uri))
            .or_else(|| of_topic.first())
            .copied();
        match keep {
            None => {
                report.missing_topics.push(name.to_owned());
                if !dry_run {
                    create(api, &topic, uri).await?;
                }
                report.created.push(name.to_owned());
            }
            Some(s) => {
                if s.uri.as_deref() == Some(uri) {
                    report.kept.push(name.to_owned());
                } else {
                    report.missing_topics.push(name.to_owned());
                    if !dry_run {
                        update(api, &s.id, uri).await?;
                    }
                    report.updated.push(format!(
                        "{name}: {}",
                        s.uri.as_deref().unwrap_or("(no uri)")
                    ));
                }
                for d in of_topic.iter().filter(|d| d.id != s.id) {
                    if !dry_run {
                        delete(api, &d.id).await?;
                    }
                    report.deleted.push(format!(
                        "{name}: {}",
                        d.uri.as_deref().unwrap_or("(no uri)")
                    ));
                }
            }
        }
    }
    Ok(report)
}

#[derive(Deserialize)]
struct Mutation {
    #[serde(default, rename = "userErrors")]
    user_errors: Vec<UserError>,
}

fn refused(api: &AdminApi, operation: &'static str, errors: Vec<UserError>) -> ShopifyError {
    ShopifyError::Graphql {
        shop: api.shop().domain.clone(),
        operation,
        messages: errors
            .iter()
            .map(|e| match &e.field {
                Some(f) => format!("{}: {}", f.join("."), e.message),
                None => e.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        hint: "",
    }
}

async fn mutate(
    api: &AdminApi,
    document: super::admin::Document,
    field: &str,
    variables: serde_json::Value,
) -> Result<(), ShopifyError> {
    let data: serde_json::Map<String, serde_json::Value> = api.run(document, variables, 10).await?;
    let m: Mutation = data
        .get(field)
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or(Mutation {
            user_errors: Vec::new(),
        });
    if m.user_errors.is_empty() {
        Ok(())
    } else {
        Err(refused(api, document.name, m.user_errors))
    }
}

async fn create(api: &AdminApi, topic: &str, uri: &str) -> Result<(), ShopifyError> {
    mutate(
        api,
        WEBHOOK_CREATE,
        "webhookSubscriptionCreate",
        json!({"topic": topic, "uri": uri}),
    )
    .await
}

async fn update(api: &AdminApi, id: &str, uri: &str) -> Result<(), ShopifyError> {
    mutate(
        api,
        WEBHOOK_UPDATE,
        "webhookSubscriptionUpdate",
        json!({"id": id, "uri": uri}),
    )
    .await
}

async fn delete(api: &AdminApi, id: &str) -> Result<(), ShopifyError> {
    mutate(
        api,
        WEBHOOK_DELETE,
        "webhookSubscriptionDelete",
        json!({ "id": id }),
    )
    .await
}

/// `{public_url}/webhooks/shopify`.
pub fn webhook_uri(public_base: &str) -> String {
    format!("{public_base}/webhooks/shopify")
}

/// What the check loop needs.
#[derive(Debug)]
pub struct Checker {
    pub apis: Vec<Arc<AdminApi>>,
    pub uri: String,
    pub every: Duration,
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    pub alerter: Alerter,
}

impl Checker {
    /// Checks every shop once: repairs what is missing, and fires the alert while a topic is
    /// missing, clearing it once the repair took.
    pub async fn check_once(&self, now_ms: i64) {
        let mut problems = Vec::new();
        let mut repaired = Vec::new();
        for api in &self.apis {
            let shop = api.shop().domain.clone();
            // With several instances on one store, one checks a shop at a time.
            let lock = match self
                .store
                .try_lock_shopify_poller(&format!("webhooks:{shop}"))
                .await
            {
                Ok(Some(lock)) => lock,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(shop = %shop, error = %e, "Could not take the webhook check's lock");
                    continue;
                }
            };
            let result = connect(api, &self.uri, false).await;
            drop(lock);
            match result {
                Ok(r) => {
                    self.metrics.set(
                        "pincapi_shopify_webhooks_missing",
                        &[("shop", &shop)],
                        r.missing_topics.len() as f64,
                    );
                    if !r.missing_topics.is_empty() {
                        tracing::warn!(shop = %shop, topics = ?r.missing_topics, "Shopify webhook subscriptions were missing; re-created them");
                        self.metrics.inc(
                            "pincapi_shopify_webhooks_recreated_total",
                            &[("shop", &shop)],
                            r.missing_topics.len() as u64,
                        );
                        repaired.push(format!("{shop}: {}", r.missing_topics.join(", ")));
                    }
                    if !r.missing_scopes.is_empty() {
                        tracing::warn!(shop = %shop, scopes = ?r.missing_scopes, "The Shopify app lacks scopes it needs");
                    }
                }
                Err(e) => {
                    tracing::warn!(shop = %shop, error = %format!("{e:#}"), "Could not check the shop's webhook subscriptions");
                    problems.push(format!("{shop}: the check failed: {e}"));
                }
            }
        }
        let verdict = |problem: Option<String>| Verdict {
            rule: WEBHOOKS_MISSING.to_owned(),
            ad_account_id: ALL_ACCOUNTS.to_owned(),
            problem,
        };
        if !repaired.is_empty() {
            let fired = format!(
                "webhook subscriptions were missing: {}",
                repaired.join("; ")
            );
            if let Err(e) = self.alerter.apply(vec![verdict(Some(fired))], now_ms).await {
                tracing::warn!(error = %e, "Could not record the webhooks_missing alert");
            }
        }
        let still = (!problems.is_empty()).then(|| problems.join("; "));
        if let Err(e) = self.alerter.apply(vec![verdict(still)], now_ms).await {
            tracing::warn!(error = %e, "Could not record the webhooks_missing alert");
        }
    }

    /// Runs [`Checker::check_once`] every interval until `stop`.
    pub async fn run(self, clock: crate::clock::SharedClock, mut stop: watch::Receiver<bool>) {
        loop {
            self.check_once(clock.now_ms()).await;
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_named_as_graphql_names_them() {
        assert_eq!(graphql_topic(Topic::OrdersCreate), "ORDERS_CREATE");
        assert_eq!(graphql_topic(Topic::RefundsCreate), "REFUNDS_CREATE");
        assert_eq!(graphql_topic(Topic::CheckoutsUpdate), "CHECKOUTS_UPDATE");
    }
}
