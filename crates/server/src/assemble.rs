//! How a configuration becomes an [`AppState`]: the parts that carry over from one
//! configuration to the next ([`Shared`]), the ad accounts it resolves to, and the state built
//! around them. `App::build` assembles the first; a reload (`reload.rs`) assembles the next.

use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::SharedStore;

/// What carries over from one configuration to the next: the store, the clock, the metrics,
/// the delivery engine and the queue's backpressure, dashboard sign-ins.
#[derive(Debug, Clone)]
pub struct Shared {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub delivery: Arc<Delivery>,
    pub backpressure: Arc<crate::backpressure::Backpressure>,
    pub sign_ins: Arc<crate::sign_in::SignIns>,
    pub schema_version: i64,
}

impl Shared {
    /// The parts of `state` that carry over.
    pub fn of(state: &AppState) -> Shared {
        Shared {
            store: state.store.clone(),
            clock: Arc::clone(&state.clock),
            metrics: Arc::clone(&state.metrics),
            delivery: Arc::clone(&state.delivery),
            backpressure: Arc::clone(&state.backpressure),
            sign_ins: Arc::clone(&state.sign_ins),
            schema_version: state.schema_version,
        }
    }
}

/// Checks that sealed credentials can be opened, and adds the ad accounts connected with
/// `pincapi pinterest connect --ad-account` to the configured ones; refuses a configuration
/// that then has none.
pub async fn resolve_accounts(config: &mut Config, store: &SharedStore) -> Result<(), String> {
    crate::shopify::access::check_key(config, store.as_ref()).await?;
    let connected = crate::pinterest_oauth::connected_accounts(config, store).await?;
    for a in connected {
        if !config.all_accounts().iter().any(|c| c.id == a.id) {
            tracing::info!(ad_account_id = %a.id, "Sending to an ad account connected through Pinterest's OAuth");
            config.accounts.push(a);
        }
    }
    if config.all_accounts().is_empty() {
        return Err(
            "ad_account_id: no Pinterest ad account is configured or connected; set \
             PINCAPI_AD_ACCOUNT_ID and PINCAPI_PINTEREST_TOKEN, or run `pincapi pinterest \
             connect --ad-account ID`"
                .to_owned(),
        );
    }
    Ok(())
}

/// The state of one configuration (errors name the key): its shops' Admin API access, the Pinterest OAuth token,
/// the caches, around what carries over.
pub fn assemble(config: Config, shared: Shared) -> Result<AppState, String> {
    let Shared {
        store,
        clock,
        metrics,
        delivery,
        backpressure,
        sign_ins,
        schema_version,
    } = shared;
    let shopify = Arc::new(
        crate::shopify::access::ShopAccess::new(&config, Some(store.clone()), Arc::clone(&clock))
            .map_err(|e| e.to_string())?,
    );
    let pinterest = crate::pinterest_oauth::OAuthTokens::new(
        &config,
        Some(store.clone()),
        Arc::clone(&clock),
        Some(Arc::clone(&metrics)),
    );
    let census = Arc::new(crate::quality::census::CensusCache::new(
        &config,
        &shopify,
        crate::quality::census::CACHE_TTL,
    ));
    let results = Arc::new(crate::quality::results::ResultsCache::new(
        &config,
        Arc::clone(&pinterest),
    ));
    Ok(AppState {
        backpressure,
        census,
        results,
        default_account: config.all_accounts().first().map(|a| a.id.clone()),
        config: Arc::new(config),
        store,
        clock,
        metrics,
        delivery,
        sign_ins,
        shopify,
        pinterest,
        schema_version,
        setup: Arc::new(crate::setup::SetupCache::new(
            std::time::Duration::from_secs(300),
        )),
    })
}
