//! The dashboard page: server-side HTML with inline SVG charts, no script and nothing loaded
//! from elsewhere, so it works offline and its numbers are in the HTML itself. Every headline
//! tile carries its value in a `data-value` attribute (what the browser test compares with
//! `GET /api/quality`).

use std::collections::BTreeMap;
use std::fmt::Write;

use pincapi_core::quality::duration_label;

use super::report::{Report, day_label};
use crate::quality::census::{BROWSER_ONLY, NEVER_RECEIVED};
use crate::store::Source;

/// The login form (also the answer to an unauthenticated visit).
pub fn login_page(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>pincapi dashboard: sign in</title><style>{CSS}</style></head><body>\
         <main class=\"login\"><h1>pincapi</h1><p>Sign in with the admin key.</p>{error}\
         <form method=\"post\" action=\"/dashboard/login\">\
         <label for=\"key\">Admin key</label>\
         <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"current-password\" required>\
         <button id=\"sign-in\" type=\"submit\">Sign in</button></form></main></body></html>"
    )
}

/// The dashboard for `report`.
pub fn render(report: &Report, setup: &[crate::setup::Check]) -> String {
    let h = &report.headline;
    let mut out = String::with_capacity(32 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>pincapi: conversion quality</title><style>{CSS}</style></head><body><main>\
         <form class=\"logout\" method=\"post\" action=\"/dashboard/logout\">\
         <button type=\"submit\">Sign out</button></form>\
         <h1>Does Pinterest see every order, once, with strong match keys?</h1>\
         <p class=\"sub\">Since {} (UTC). Figures per day of receipt; percentiles are bucket bounds.</p>",
        day_label(report.since)
    );
    // Links keep the period: the number of days it covers.
    let days = (report.generated_at_ms / 1000 - report.since).div_euclid(86_400) + 1;
    let mut nav = String::new();
    super::dashboard_results::selector(&mut nav, report, &format!("{days}d"));
    out.push_str(&nav);
    out.push_str("<section class=\"tiles\">");
    let lag = h.p95_lag_secs.map_or("–".to_owned(), duration_label);
    let problems_class = if h.open_problems > 0 { "bad" } else { "good" };
    tile(
        &mut out,
        "tile-orders",
        "Orders → delivered purchases",
        &format!("{} → {}", h.orders, h.delivered_purchases),
        &format!("{}/{}", h.orders, h.delivered_purchases),
        &format!("orders counted from the {}", h.orders_source),
    );
    tile(
        &mut out,
        "tile-recovered",
        "Recovered by the Conversions API",
        &format!("{} %", h.recovered_percent),
        &h.recovered_percent.to_string(),
        &format!("browser loss {} %", h.browser_loss_percent),
    );
    tile(
        &mut out,
        "tile-score",
        "Match quality (purchases)",
        &format!("{}", h.match_score),
        &h.match_score.to_string(),
        h.match_grade,
    );
    tile(
        &mut out,
        "tile-p95",
        "p95 send lag",
        &lag,
        &h.p95_lag_secs.map_or(String::new(), |v| v.to_string()),
        "Pinterest counts events over 1 h late as offline",
    );
    let _ = write!(
        out,
        "<div class=\"tile {problems_class}\" id=\"tile-problems\" data-value=\"{}\">\
         <div class=\"label\">Open problems</div><div class=\"value\">{}</div><ul>",
        h.open_problems, h.open_problems
    );
    for a in &report.alerts {
        let _ = write!(
            out,
            "<li><b>{}</b> ({}): {}</li>",
            escape(&a.rule),
            escape(&a.ad_account_id),
            escape(&a.detail)
        );
    }
    for p in report.shopify.census.iter().flat_map(|c| c.problems.iter()) {
        let _ = write!(out, "<li><b>order census</b>: {}</li>", escape(p));
    }
    out.push_str("</ul></div></section>");
    super::dashboard_results::panel(&mut out, report);

    // Per day over every event name.
    let mut per_day: BTreeMap<&str, DayTotals> = BTreeMap::new();
    for d in &report.days {
        let e = per_day.entry(d.day.as_str()).or_default();
        for (s, n) in &d.volume.by_source {
            *e.0.entry(s).or_default() += n;
        }
        e.1 += d.volume.delivered;
        e.2 = e.2.max(d.freshness.p95_secs);
    }
    out.push_str("<section><h2>Events by source</h2>");
    let series: Vec<(&str, Vec<f64>)> = Source::ALL
        .iter()
        .map(|s| {
            (
                s.as_str(),
                per_day
                    .values()
                    .map(|v| v.0.get(s.as_str()).copied().unwrap_or(0) as f64)
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, v)| v.iter().any(|x| *x > 0.0))
        .collect();
    let labels: Vec<&str> = per_day.keys().copied().collect();
    stacked_bars(&mut out, "chart-sources", &labels, &series, "events");
    out.push_str("</section>");

    out.push_str("<section><h2>Match-key coverage (whole period)</h2>");
    let mut rows = String::new();
    for t in &report.totals {
        let _ = write!(rows, "<tr><th>{}</th>", escape(&t.event_name));
        for v in t.match_quality.coverage.values() {
            let _ = write!(rows, "<td>{}</td>", bar_cell(*v));
        }
        let _ = write!(
            rows,
            "<td class=\"num\">{} <small>{}</small></td></tr>",
            t.match_quality.score, t.match_quality.grade
        );
    }
    let head: String = report
        .totals
        .first()
        .map(|t| {
            t.match_quality
                .coverage
                .keys()
                .map(|k| format!("<th title=\"{k}\">{}</th>", key_label(k)))
                .collect()
        })
        .unwrap_or_default();
    let _ = write!(
        out,
        "<table id=\"coverage\"><tr><th>event</th>{head}<th>score</th></tr>{rows}</table></section>"
    );

    out.push_str("<section><h2>p95 send lag per day</h2>");
    let lags: Vec<f64> = per_day
        .values()
        .map(|v| v.2.unwrap_or(0) as f64 / 60.0)
        .collect();
    stacked_bars(
        &mut out,
        "chart-lag",
        &labels,
        &[("p95 lag", lags)],
        "minutes",
    );
    out.push_str("</section>");

    let s = &report.shopify;
    let source = s.orders_source;
    let source_note = if source == "census" {
        "Orders counted by the order census (the Admin API's list of the shop's orders) with the \
         order ledger: orders no webhook, poll or browser reported are counted and listed."
    } else {
        "Orders counted from the order ledger: orders no webhook or poll reported are unknown \
         here. An Admin API access token lets the order census count them."
    };
    let _ = write!(
        out,
        "<section><h2>Shopify orders against Pinterest</h2>\
         <p id=\"orders-source\" data-value=\"{source}\">{source_note}</p>\
         <table id=\"shopify\"><tr><th>day</th>\
         <th>orders</th><th>delivered</th><th>browser saw</th><th>recovered</th>\
         <th>browser loss</th><th>recovered %</th><th>missing</th></tr>"
    );
    for d in s.days.iter().chain(std::iter::once(&s.total)) {
        let _ = write!(
            out,
            "<tr><th>{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{} %</td><td class=\"num\">{} %</td>\
             <td class=\"num\">{}</td></tr>",
            d.day,
            d.orders,
            d.delivered_purchases,
            d.browser_seen,
            d.recovered,
            d.browser_loss_percent,
            d.recovered_percent,
            d.missing
        );
    }
    out.push_str("</table>");
    if !s.missing_orders.is_empty() {
        out.push_str("<p>Orders with no delivered purchase: <span id=\"missing-orders\">");
        let ids: Vec<String> = s
            .missing_orders
            .iter()
            .map(|m| escape(&m.order_id))
            .collect();
        out.push_str(&ids.join(", "));
        out.push_str("</span></p>");
        let unreported: Vec<_> = s
            .missing_orders
            .iter()
            .filter(|m| m.outcome == NEVER_RECEIVED || m.outcome == BROWSER_ONLY)
            .collect();
        if !unreported.is_empty() {
            out.push_str(
                "<p>Orders the gateway never received from Shopify (found by the census):</p>\
                 <ul id=\"never-received\">",
            );
            for m in unreported {
                let _ = write!(
                    out,
                    "<li data-order-id=\"{}\" data-outcome=\"{}\"><b>{}</b> ({}): {}</li>",
                    escape(&m.order_id),
                    escape(&m.outcome),
                    escape(&m.order_id),
                    escape(&m.shop),
                    escape(m.reason.as_deref().unwrap_or(""))
                );
            }
            out.push_str("</ul>");
        }
    }
    if let Some(c) = &s.census {
        out.push_str(
            "<table id=\"census\"><tr><th>shop</th><th>listed</th><th>pages</th>\
             <th>orders</th><th>not in ledger</th><th>never received</th><th>note</th></tr>",
        );
        for shop in &c.shops {
            let note = match (&shop.error, shop.truncated) {
                (Some(e), _) => format!("failed: {e}"),
                (None, true) => "truncated at the page limit".to_owned(),
                (None, false) => String::new(),
            };
            let _ = write!(
                out,
                "<tr><th>{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td>{}</td></tr>",
                escape(&shop.shop),
                shop.listed,
                shop.pages,
                shop.orders,
                shop.not_in_ledger,
                shop.never_received,
                escape(&note)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");

    let a = &report.api_health;
    let _ = write!(
        out,
        "<section><h2>Pinterest API</h2><p>{} retries, {} rate-limit waits, {} warnings.</p>\
         <table><tr><th>day</th><th>kind</th><th>count</th><th>message</th></tr>",
        a.retried, a.rate_limit_waits, a.warned
    );
    for m in a.messages.iter().rev().take(20) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            day_label(m.day),
            escape(&m.kind),
            m.count,
            escape(&m.message)
        );
    }
    out.push_str("</table></section>");

    let _ = write!(
        out,
        "<section><h2>Pinterest's Event Quality Score</h2><p id=\"eqs-note\">{}</p><table id=\"eqs-scores\">",
        escape(&report.eqs.note)
    );
    for e in &report.eqs.scores {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b></td></tr>",
            escape(&e.ad_account_id),
            escape(&e.ingestion_source),
            escape(&e.lookback_period),
            escape(&e.source_platform),
            escape(&e.overall_status)
        );
    }
    out.push_str("</table></section>");
    render_setup(&mut out, setup);
    out.push_str("</main></body></html>");
    out
}

/// The Setup panel: every go-live check that is not ok, with its fix, and how many are.
fn render_setup(out: &mut String, setup: &[crate::setup::Check]) {
    let ok = setup.iter().filter(|c| c.status == "ok").count();
    let _ = write!(
        out,
        "<section id=\"setup\"><h2>Setup</h2><p>{ok} of {} checks ok (as `pincapi status` \
         runs them; kept five minutes).</p><table>",
        setup.len()
    );
    for c in setup.iter().filter(|c| c.status != "ok") {
        let class = if c.status == "failing" { "bad" } else { "" };
        let _ = write!(
            out,
            "<tr class=\"{class}\"><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(c.status),
            escape(c.check),
            escape(&c.subject),
            escape(&c.detail),
            escape(c.fix.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table></section>");
}

/// Events per source, delivered events and the p95 lag of one day, over every event name.
type DayTotals = (BTreeMap<&'static str, i64>, i64, Option<i64>);

fn tile(out: &mut String, id: &str, label: &str, shown: &str, value: &str, note: &str) {
    let _ = write!(
        out,
        "<div class=\"tile\" id=\"{id}\" data-value=\"{}\"><div class=\"label\">{}</div>\
         <div class=\"value\">{}</div><div class=\"note\">{}</div></div>",
        escape(value),
        escape(label),
        escape(shown),
        escape(note)
    );
}

fn bar_cell(pct: f64) -> String {
    format!(
        "<svg width=\"60\" height=\"10\" role=\"img\" aria-label=\"{pct} %\">\
         <rect width=\"60\" height=\"10\" fill=\"#eee\"/><rect width=\"{:.1}\" height=\"10\" fill=\"#2a7\"/></svg> {pct} %",
        pct.clamp(0.0, 100.0) * 0.6
    )
}

const COLOURS: [&str; 6] = [
    "#3465a4", "#e9b96e", "#75507b", "#4e9a06", "#cc0000", "#888a85",
];

/// A series' colour, fixed by its name (the sources in their fixed order), so a chart's
/// legend keeps its colours whichever series a period happens to have.
fn colour_of(name: &str) -> &'static str {
    let i = Source::ALL
        .iter()
        .position(|s| s.as_str() == name)
        .unwrap_or(Source::ALL.len());
    COLOURS[i % COLOURS.len()]
}

/// The words for a match key's name in `coverage` (the JSON keeps the short names).
fn key_label(key: &str) -> &str {
    match key {
        "em" => "email",
        "ph" => "phone",
        "external_id" => "customer id",
        "click_id" => "click id (epik)",
        "ip_ua" => "IP + user agent",
        "name" => "name",
        "address" => "address",
        "hashed_maids" => "mobile ad id",
        other => other,
    }
}

/// A stacked bar chart, one bar per label, as inline SVG with a legend.
fn stacked_bars(
    out: &mut String,
    id: &str,
    labels: &[&str],
    series: &[(&str, Vec<f64>)],
    unit: &str,
) {
    let (w, h, pad) = (720.0, 200.0, 30.0);
    let n = labels.len().max(1) as f64;
    let totals: Vec<f64> = (0..labels.len())
        .map(|i| series.iter().map(|(_, v)| v[i]).sum())
        .collect();
    let max = totals.iter().cloned().fold(0.0, f64::max).max(1.0);
    let bw = ((w - pad) / n * 0.8).min(40.0);
    let _ = write!(
        out,
        "<svg id=\"{id}\" viewBox=\"0 0 {w} {}\" width=\"100%\" role=\"img\" aria-label=\"{unit}\">\
         <text x=\"0\" y=\"12\" class=\"axis\">{} {unit}</text>",
        h + 20.0,
        fmt_num(max)
    );
    for (i, label) in labels.iter().enumerate() {
        let x = pad + (w - pad) / n * i as f64;
        let mut y = h;
        for (name, values) in series {
            let bh = values[i] / max * (h - 20.0);
            if bh > 0.0 {
                y -= bh;
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"{}\">\
                     <title>{label} {name}: {}</title></rect>",
                    colour_of(name),
                    fmt_num(values[i])
                );
            }
        }
        let _ = write!(
            out,
            "<text x=\"{x:.1}\" y=\"{}\" class=\"axis\">{}</text>",
            h + 15.0,
            label.get(5..).unwrap_or(label)
        );
    }
    out.push_str("</svg><p class=\"legend\">");
    for (name, _) in series {
        let _ = write!(
            out,
            "<span><i style=\"background:{}\"></i>{name}</span> ",
            colour_of(name)
        );
    }
    out.push_str("</p>");
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// HTML-escapes text.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f6f6f4;color:#222}\
main{max-width:1000px;margin:0 auto;padding:16px}.logout{float:right}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:28px}\
.sub{color:#666}.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:12px}\
.tile{background:#fff;border-radius:8px;padding:12px;box-shadow:0 1px 2px #0002}\
.tile .label{color:#555;font-size:.85em}.tile .value{font-size:1.8em;font-weight:600;margin:4px 0}\
.tile .note{color:#777;font-size:.8em}.tile.bad{border-left:4px solid #c00}.tile.good{border-left:4px solid #2a7}\
table{border-collapse:collapse;background:#fff;width:100%}td,th{padding:4px 8px;border-bottom:1px solid #eee;text-align:left;font-size:.9em}\
.num{text-align:right}.axis{font-size:10px;fill:#666}.legend i{display:inline-block;width:10px;height:10px;margin:0 4px 0 8px}\
.login{max-width:320px;margin-top:10vh}.login input{display:block;width:100%;margin:8px 0;padding:6px}\
.error{color:#c00}";
