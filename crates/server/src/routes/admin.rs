//! Admin endpoints (bearer `admin_key`): the dead-letter table.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api_error::{ApiError, bearer_matches};
use crate::state::AppState;
use crate::store::Selection;

/// `?limit=` for listings.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub limit: Option<usize>,
}

/// Body of retry/drop: `{"ids": [..]}` or `{"all": true}`.
#[derive(Debug, Deserialize)]
pub struct SelectionBody {
    #[serde(default)]
    pub ids: Vec<i64>,
    #[serde(default)]
    pub all: bool,
}

impl SelectionBody {
    fn selection(self) -> Result<Selection, ApiError> {
        Selection::from_parts(self.all, self.ids).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_selection",
                "send either {\"ids\": [...]} or {\"all\": true}",
            )
        })
    }
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    ApiError::unavailable(e.to_string())
}

fn check(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if bearer_matches(headers, &state.config.admin_key) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// `GET /admin/dead-letters`.
pub async fn list_dead(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    check(&state, &headers)?;
    let rows = state
        .store
        .dead_letters(q.limit.unwrap_or(100).min(10_000))
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "dead_letters": rows })))
}

/// `POST /admin/dead-letters/retry`.
pub async fn retry_dead(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<SelectionBody>,
) -> Result<Json<Value>, ApiError> {
    check(&state, &headers)?;
    let n = state
        .store
        .retry_dead(body.selection()?, state.clock.now_ms())
        .await
        .map_err(store_error)?;
    for a in state.delivery.account_ids() {
        state.delivery.wake(&a);
    }
    Ok(Json(json!({ "retried": n })))
}

/// `POST /admin/dead-letters/drop`.
pub async fn drop_dead(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<SelectionBody>,
) -> Result<Json<Value>, ApiError> {
    check(&state, &headers)?;
    let n = state
        .store
        .drop_dead(body.selection()?)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "dropped": n })))
}
