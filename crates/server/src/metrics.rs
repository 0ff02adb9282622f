//! Prometheus metrics: counters, gauges and histograms kept in memory and rendered in the
//! text exposition format at `GET /metrics`.
//!
//! Small on purpose: a handful of series labelled by ad account and event name, updated once
//! per request or batch (never per byte), so one mutex is plenty.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// A metric's name, type and help text.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "pincapi_events_ingested_total",
        kind: "counter",
        help: "Events accepted and stored durably, by source.",
    },
    Family {
        name: "pincapi_events_duplicate_total",
        kind: "counter",
        help: "Events not stored because the (ad account, event_id) was already stored.",
    },
    Family {
        name: "pincapi_events_rejected_total",
        kind: "counter",
        help: "Events refused at ingest because of invalid input.",
    },
    Family {
        name: "pincapi_events_delivered_total",
        kind: "counter",
        help: "Events Pinterest processed.",
    },
    Family {
        name: "pincapi_events_failed_total",
        kind: "counter",
        help: "Events Pinterest refused (status failed); each goes to the dead-letter table.",
    },
    Family {
        name: "pincapi_events_retried_total",
        kind: "counter",
        help: "Events put back for another attempt, by reason.",
    },
    Family {
        name: "pincapi_events_dead_lettered_total",
        kind: "counter",
        help: "Events moved to the dead-letter table.",
    },
    Family {
        name: "pincapi_events_warned_total",
        kind: "counter",
        help: "Events Pinterest processed with a warning.",
    },
    Family {
        name: "pincapi_pinterest_requests_total",
        kind: "counter",
        help: "Requests to Pinterest's events endpoint, by HTTP status (0 = no answer).",
    },
    Family {
        name: "pincapi_connections_refused_total",
        kind: "counter",
        help: "Connections closed as soon as they were accepted because server.max_connections were open.",
    },
    Family {
        name: "pincapi_events_retaken_total",
        kind: "counter",
        help: "Events claimed again after an earlier claim's lease ended unsettled (an instance died or stalled mid-batch): each may reach Pinterest twice, which de-duplicates by event_id.",
    },
    Family {
        name: "pincapi_config_reloads_total",
        kind: "counter",
        help: "Configuration reloads (SIGHUP), by result: applied, or refused (the running configuration kept).",
    },
    Family {
        name: "pincapi_events_released_at_start",
        kind: "gauge",
        help: "Events an embedded store's previous process had claimed and not settled, released at start: each may reach Pinterest twice, which de-duplicates by event_id.",
    },
    Family {
        name: "pincapi_pinterest_unreadable_answers_total",
        kind: "counter",
        help: "Answers to a batch that were not Pinterest's (a 2xx without one result per event, a redirect), by HTTP status; their events are retried.",
    },
    Family {
        name: "pincapi_queue_depth",
        kind: "gauge",
        help: "Events waiting to be delivered.",
    },
    Family {
        name: "pincapi_dead_letters",
        kind: "gauge",
        help: "Events in the dead-letter table.",
    },
    Family {
        name: "pincapi_account_blocked",
        kind: "gauge",
        help: "1 while an ad account is stopped by an authorisation failure (401/403).",
    },
    Family {
        name: "pincapi_shopify_webhooks_total",
        kind: "counter",
        help: "Shopify webhook deliveries, by topic and answer (accepted, duplicate, ignored, skipped, recorded, unauthorized, invalid, too_large, unavailable).",
    },
    Family {
        name: "pincapi_shopify_orders_total",
        kind: "counter",
        help: "Shopify orders seen on the purchase topic or by the poller, by source and outcome (sent, skipped, ignored).",
    },
    Family {
        name: "pincapi_shopify_polls_total",
        kind: "counter",
        help: "Runs of the Shopify Admin API poller, by shop and result (ok, error).",
    },
    Family {
        name: "pincapi_oauth_token_expiry_seconds",
        kind: "gauge",
        help: "Seconds until Pinterest's OAuth access token expires (it is refreshed at 80 % of its life).",
    },
    Family {
        name: "pincapi_oauth_refreshes_total",
        kind: "counter",
        help: "Refreshes of Pinterest's OAuth token, by result (ok, error).",
    },
    Family {
        name: "pincapi_shopify_webhooks_missing",
        kind: "gauge",
        help: "Webhook subscriptions a shop needs that were missing at the last check, by shop.",
    },
    Family {
        name: "pincapi_shopify_webhooks_recreated_total",
        kind: "counter",
        help: "Webhook subscriptions the check found missing (Shopify deletes one after 8 failed deliveries) and set up again, by shop.",
    },
    Family {
        name: "pincapi_shopify_token_renewals_total",
        kind: "counter",
        help: "Shopify Admin API tokens obtained (client credentials or refresh), by shop.",
    },
    Family {
        name: "pincapi_shopify_compliance_total",
        kind: "counter",
        help: "Shopify compliance webhooks carried out, by topic (customers/redact, shop/redact, customers/data_request).",
    },
    Family {
        name: "pincapi_collector_refused_total",
        kind: "counter",
        help: "Browser collector requests refused before mapping, by reason (origin, rate_limited, too_large, content_type).",
    },
    // --- Retention and back-pressure ---
    Family {
        name: "pincapi_ingest_shed_total",
        kind: "counter",
        help: "Requests refused with 503 because the queue was at ingest.max_queue_depth, by route.",
    },
    Family {
        name: "pincapi_queue_limit",
        kind: "gauge",
        help: "ingest.max_queue_depth: pending events at which ingest sheds load (0 = never).",
    },
    Family {
        name: "pincapi_ingest_shedding",
        kind: "gauge",
        help: "1 while ingest refuses new events because the queue is at its limit.",
    },
    Family {
        name: "pincapi_events_purged_total",
        kind: "counter",
        help: "Delivered and dropped events deleted after retention.delivered_days.",
    },
    Family {
        name: "pincapi_alert_active",
        kind: "gauge",
        help: "1 while an alert rule fires for an ad account (rule: auth_failure, dead_letter, coverage_<key>, volume_drop, p95_send_lag, purchases_missing).",
    },
    Family {
        name: "pincapi_alert_transitions_total",
        kind: "counter",
        help: "Alert state changes, by rule, ad account and transition (fired, cleared).",
    },
    Family {
        name: "pincapi_quality_coverage_percent",
        kind: "gauge",
        help: "Share of events received in the last 24 hours that carry each match key, by event name and key.",
    },
    Family {
        name: "pincapi_quality_match_score",
        kind: "gauge",
        help: "Local match-quality score (0-100, EQS user-matching components) of events received in the last 24 hours, by event name.",
    },
    Family {
        name: "pincapi_quality_send_lag_p95_seconds",
        kind: "gauge",
        help: "p95 of send time minus event_time (a bucket bound) of events received in the last 24 hours, by event name.",
    },
    Family {
        name: "pincapi_quality_late_percent",
        kind: "gauge",
        help: "Share of the delivered events received in the last 24 hours that were sent more than an hour after event_time, by event name.",
    },
    Family {
        name: "pincapi_shopify_orders_recent",
        kind: "gauge",
        help: "Shopify orders created in the last 24 hours (non-test), by state: orders, delivered, browser_seen, recovered, missing.",
    },
    Family {
        name: "pincapi_shopify_browser_loss_percent",
        kind: "gauge",
        help: "Shopify orders of the last 24 hours whose purchase the browser never reported, percent of orders.",
    },
    Family {
        name: "pincapi_shopify_recovered_percent",
        kind: "gauge",
        help: "Delivered purchases of the last 24 hours' Shopify orders that the browser never reported, percent of orders.",
    },
    Family {
        name: "pincapi_eqs_polls_total",
        kind: "counter",
        help: "Polls of Pinterest's Event Quality Score, by ad account and result (ok, error).",
    },
    Family {
        name: "pincapi_eqs_status",
        kind: "gauge",
        help: "Pinterest's Event Quality Score overall status as last polled: 0 NEEDS_IMPROVEMENT, 1 FAIR, 2 GOOD.",
    },
    Family {
        name: "pincapi_audience_sync_runs_total",
        kind: "counter",
        help: "Audience sync runs, by result (ok, error); a scheduled run that fails is logged and counted every interval.",
    },
    Family {
        name: "pincapi_audience_sync_failing",
        kind: "gauge",
        help: "1 while the last audience sync failed (missing or expired OAuth token, missing scope, Pinterest error).",
    },
    Family {
        name: "pincapi_audience_members",
        kind: "gauge",
        help: "Members of a segment's customer list at the last sync, by ad account, segment and kind (email, maid).",
    },
    Family {
        name: "pincapi_audience_records_sent_total",
        kind: "counter",
        help: "Hashed members sent in customer-list creates and updates, by operation (add, remove).",
    },
    Family {
        name: "pincapi_audience_sync_skipped_total",
        kind: "counter",
        help: "Audience syncs of an ad account skipped because another run (another instance, or the CLI) was syncing it, by ad account.",
    },
    Family {
        name: "pincapi_send_lag_seconds",
        kind: "histogram",
        help: "Time from event_time to delivery. Past 3600 s Pinterest counts the event as offline.",
    },
    Family {
        name: "pincapi_queue_delay_seconds",
        kind: "histogram",
        help: "Time from acceptance by the gateway to delivery.",
    },
];

const BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
    86400.0, 604800.0,
];

/// Label pairs of one series.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// The metric registry.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn labels(l: &[(&'static str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Metrics {
    /// Adds `by` to a counter.
    pub fn inc(&self, name: &'static str, l: &[(&'static str, &str)], by: u64) {
        if by == 0 {
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            *g.counters.entry((name, labels(l))).or_default() += by;
        }
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, l: &[(&'static str, &str)], v: f64) {
        if let Ok(mut g) = self.inner.lock() {
            g.gauges.insert((name, labels(l)), v);
        }
    }

    /// Replaces every series of a gauge at once (used for values read from the store, so a
    /// series that dropped to nothing disappears instead of going stale).
    pub fn replace_gauge(&self, name: &'static str, series: Vec<(Labels, f64)>) {
        if let Ok(mut g) = self.inner.lock() {
            g.gauges.retain(|(n, _), _| *n != name);
            for (l, v) in series {
                g.gauges.insert((name, l), v);
            }
        }
    }

    /// Records `v` in a histogram `n` times.
    pub fn observe(&self, name: &'static str, l: &[(&'static str, &str)], v: f64, n: u64) {
        if n == 0 {
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            let h = g.histograms.entry((name, labels(l))).or_default();
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            for (i, b) in BUCKETS.iter().enumerate() {
                if v <= *b {
                    h.counts[i] += n;
                }
            }
            h.sum += v * n as f64;
            h.count += n;
        }
    }

    /// Records each of `values` in a histogram, under one lock.
    pub fn observe_many(&self, name: &'static str, l: &[(&'static str, &str)], values: &[f64]) {
        if values.is_empty() {
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            let h = g.histograms.entry((name, labels(l))).or_default();
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            for &v in values {
                // Buckets are cumulative: count v in every bucket whose bound it does not pass.
                let first = BUCKETS.partition_point(|b| *b < v);
                for c in &mut h.counts[first..] {
                    *c += 1;
                }
                h.sum += v;
                h.count += 1;
            }
        }
    }

    /// The current value of a counter (tests and the dashboard).
    pub fn counter(&self, name: &str, l: &[(&'static str, &str)]) -> u64 {
        let want = labels(l);
        self.inner
            .lock()
            .map(|g| {
                g.counters
                    .iter()
                    .filter(|((n, ls), _)| *n == name && want.iter().all(|w| ls.contains(w)))
                    .map(|(_, v)| *v)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Renders everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let Ok(g) = self.inner.lock() else {
            return String::new();
        };
        let mut out = String::new();
        for fam in FAMILIES {
            let _ = writeln!(out, "# HELP {} {}", fam.name, fam.help);
            let _ = writeln!(out, "# TYPE {} {}", fam.name, fam.kind);
            match fam.kind {
                "counter" => {
                    for ((n, l), v) in &g.counters {
                        if *n == fam.name {
                            let _ = writeln!(out, "{}{} {}", n, fmt_labels(l, None), v);
                        }
                    }
                }
                "gauge" => {
                    for ((n, l), v) in &g.gauges {
                        if *n == fam.name {
                            let _ = writeln!(out, "{}{} {}", n, fmt_labels(l, None), v);
                        }
                    }
                }
                _ => {
                    for ((n, l), h) in &g.histograms {
                        if *n != fam.name {
                            continue;
                        }
                        for (i, b) in BUCKETS.iter().enumerate() {
                            let le = format!("{b}");
                            let _ = writeln!(
                                out,
                                "{n}_bucket{} {}",
                                fmt_labels(l, Some(&le)),
                                h.counts[i]
                            );
                        }
                        let _ =
                            writeln!(out, "{n}_bucket{} {}", fmt_labels(l, Some("+Inf")), h.count);
                        let _ = writeln!(out, "{n}_sum{} {}", fmt_labels(l, None), h.sum);
                        let _ = writeln!(out, "{n}_count{} {}", fmt_labels(l, None), h.count);
                    }
                }
            }
        }
        out
    }
}

fn fmt_labels(l: &Labels, le: Option<&str>) -> String {
    if l.is_empty() && le.is_none() {
        return String::new();
    }
    let mut s = String::from("{");
    let mut first = true;
    let le_pair = le.map(|v| ("le", v.to_owned()));
    for (k, v) in l.iter().chain(le_pair.iter()) {
        if !first {
            s.push(',');
        }
        first = false;
        let _ = write!(s, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::default();
        m.inc(
            "pincapi_events_delivered_total",
            &[("ad_account_id", "1"), ("event_name", "checkout")],
            3,
        );
        m.set("pincapi_account_blocked", &[("ad_account_id", "1")], 1.0);
        m.observe(
            "pincapi_send_lag_seconds",
            &[("ad_account_id", "1")],
            4.0,
            2,
        );
        let text = m.render();
        assert!(text.contains(
            "pincapi_events_delivered_total{ad_account_id=\"1\",event_name=\"checkout\"} 3"
        ));
        assert!(text.contains("pincapi_account_blocked{ad_account_id=\"1\"} 1"));
        assert!(text.contains("pincapi_send_lag_seconds_bucket{ad_account_id=\"1\",le=\"5\"} 2"));
        assert!(text.contains("pincapi_send_lag_seconds_bucket{ad_account_id=\"1\",le=\"2\"} 0"));
        assert!(text.contains("pincapi_send_lag_seconds_count{ad_account_id=\"1\"} 2"));
        assert_eq!(
            m.counter(
                "pincapi_events_delivered_total",
                &[("event_name", "checkout")]
            ),
            3
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.inc("pincapi_events_rejected_total", &[("source", "a\"b\\c")], 1);
        assert!(m.render().contains("source=\"a\\\"b\\\\c\""));
    }
}
