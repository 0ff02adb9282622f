//! `[browser]` configuration.

use serde::{Deserialize, Serialize};

/// Browser-side settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrowserConfig {}
