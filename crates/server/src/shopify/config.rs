//! `[shopify]` configuration.

use serde::{Deserialize, Serialize};

/// Shopify settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShopifyConfig {}
