//! [`AppState`]: what every handler and background task can reach. Imports no feature's
//! routes, only the services they share.

use std::sync::Arc;

use crate::backpressure::Backpressure;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::metrics::Metrics;
use crate::quality::census::CensusCache;
use crate::shopify::access::ShopAccess;
use crate::sign_in::SignIns;
use crate::store::SharedStore;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: SharedStore,
    /// What every handler and background task reads the time from.
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub delivery: Arc<Delivery>,
    /// Where `POST /v1/events` goes: the first configured account.
    pub default_account: Option<String>,
    /// The quality report's Shopify order census, kept a few minutes.
    pub census: Arc<CensusCache>,
    /// Pinterest's reported results (analytics) per ad account, kept an hour.
    pub results: Arc<crate::quality::results::ResultsCache>,
    /// The queue's depth and whether ingest sheds load.
    pub backpressure: Arc<Backpressure>,
    /// Dashboard sessions signed out and wrong keys counted.
    pub sign_ins: Arc<SignIns>,
    /// Every configured Shopify shop, with its Admin API client and tokens.
    pub shopify: Arc<ShopAccess>,
    /// The store's schema version, as migrated at start.
    pub schema_version: i64,
    /// The go-live checks, kept five minutes.
    pub setup: Arc<crate::setup::SetupCache>,
    /// Pinterest's OAuth token for the Ads API, refreshed.
    pub pinterest: Arc<crate::pinterest_oauth::OAuthTokens>,
}
