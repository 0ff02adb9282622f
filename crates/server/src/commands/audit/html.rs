//! The audit as one self-contained HTML file: inline CSS and SVG, no script, no font or image
//! from elsewhere, so it opens offline, mails as an attachment and prints to PDF.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::Audit;
use crate::quality::dashboard::escape;
use crate::quality::report::day_label;

const CSS: &str = "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;color:#1d1d1f;\
max-width:980px;margin:24px auto;padding:0 16px}h1{font-size:24px;margin:0 0 4px}\
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}\
.muted{color:#666}.score{font-size:48px;font-weight:700}.grid{display:flex;gap:16px;flex-wrap:wrap}\
.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:150px}\
.card b{display:block;font-size:20px}table{border-collapse:collapse;width:100%;margin:6px 0}\
td,th{border-bottom:1px solid #eee;padding:4px 6px;text-align:left;vertical-align:top}\
th{background:#fafafa}.error{color:#b00020;font-weight:600}.warning{color:#a15c00;font-weight:600}\
.ok{color:#1b7f3b}code{background:#f4f4f4;padding:1px 4px;border-radius:3px}\
svg text{font:11px system-ui,sans-serif;fill:#444}@media print{body{margin:0}h2{break-after:avoid}}";

/// Colours that stay the same on every load: Shopify orders, Pinterest checkouts.
const ORDERS: &str = "#4a6cf7";
const CHECKOUTS: &str = "#e60023";

pub fn render(a: &Audit) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Pinterest tracking audit: {site}</title><style>{CSS}</style></head><body>\
         <h1>Pinterest tracking audit</h1><p class=\"muted\">{site} · {from} to {to} ({days} days) · made by pincapi</p>",
        site = escape(&a.site),
        from = day_label(a.since),
        to = day_label(a.generated_at.div_euclid(86_400) * 86_400),
        days = a.days,
    );
    let v = &a.verdict;
    let opt = |x: Option<i64>| x.map_or("—".to_owned(), |n| n.to_string());
    let _ = write!(
        h,
        "<h2>Verdict</h2><div class=\"grid\"><div class=\"card\">score<b class=\"score\">{score}</b>/100</div>\
         <div class=\"card\">Shopify web orders<b>{orders}</b></div>\
         <div class=\"card\">checkouts Pinterest reports<b>{checkouts}</b>{share}</div>\
         <div class=\"card\">orders Pinterest misses<b>{missed:.1} %</b>{source}</div>\
         <div class=\"card\">ROAS reported<b>{roas}</b></div></div>\
         <p class=\"muted\">{formula}</p>",
        score = a.score,
        orders = opt(v.shopify_orders),
        checkouts = opt(v.pinterest_checkouts),
        share = v
            .reported_share_percent
            .map_or(String::new(), |s| format!("{s:.1} % of orders")),
        missed = v.missed_share_percent,
        source = if a.score_detail.coverage_source == "pincapi" {
            "measured by pincapi"
        } else {
            "estimated: the Tag alone"
        },
        roas = v.roas.map_or("—".to_owned(), |r| format!("{r:.2}")),
        formula = escape(a.score_detail.formula),
    );
    h.push_str("<h2>What to fix, most important first</h2><table><tr><th>severity</th><th>about</th><th>finding</th><th>fix</th></tr>");
    for f in &a.findings {
        let _ = write!(
            h,
            "<tr><td class=\"{sev}\">{sev}</td><td>{subject}</td><td>{message}</td><td>{fix}</td></tr>",
            sev = f.severity,
            subject = escape(&f.subject),
            message = escape(&f.message),
            fix = if f.fix.is_empty() {
                String::new()
            } else {
                format!("<code>{}</code>", escape(&f.fix))
            },
        );
    }
    h.push_str("</table>");

    // Orders and reported checkouts per day, on one chart.
    let mut series: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    if let Some(s) = &a.shopify {
        for d in &s.days {
            series.entry(d.day.clone()).or_default().0 = d.orders;
        }
    }
    if let Some(p) = &a.pinterest {
        for d in &p.days {
            series.entry(d.day.clone()).or_default().1 = d.checkouts;
        }
    }
    if !series.is_empty() {
        h.push_str("<h2>Orders and the checkouts Pinterest reports, per day</h2>");
        h.push_str(&chart(&series));
        let _ = write!(
            h,
            "<p><span style=\"color:{ORDERS}\">■</span> Shopify web orders &nbsp; \
             <span style=\"color:{CHECKOUTS}\">■</span> checkouts Pinterest reports{}</p>",
            a.pinterest
                .as_ref()
                .map_or(String::new(), |p| format!(" ({})", escape(&p.attribution)))
        );
    }

    h.push_str("<h2>Storefront</h2><table><tr><th>page</th><th>verdict</th><th>Tag</th><th>events</th></tr>");
    for p in &a.storefront.pages {
        let tags: Vec<String> = p
            .installs
            .iter()
            .map(|i| format!("{} {}", i.kind, i.tag_id.as_deref().unwrap_or("?")))
            .collect();
        let events: Vec<&str> = p.events.iter().map(|e| e.event.as_str()).collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.url),
            if p.ok { "ok" } else { "error" },
            if p.ok { "pass" } else { "fail" },
            escape(&tags.join(", ")),
            escape(&events.join(", ")),
        );
    }
    let _ = write!(
        h,
        "</table><p class=\"muted\">sitemap {} ({})</p>",
        escape(&a.storefront.sitemap),
        if a.storefront.sitemap_read {
            "read"
        } else {
            "not readable"
        }
    );

    if let Some(s) = &a.shopify {
        let k = &s.key_shares;
        let _ = write!(
            h,
            "<h2>Shopify: {shop}</h2><div class=\"grid\">\
             <div class=\"card\">orders listed<b>{listed}</b></div>\
             <div class=\"card\">web orders<b>{web}</b>value {value:.2} {cur}</div>\
             <div class=\"card\">POS<b>{pos:.1} %</b></div><div class=\"card\">test<b>{test:.1} %</b></div></div>\
             <table><tr><th>match key CAPI would send</th><th>share of web orders</th></tr>\
             <tr><td>email</td><td>{em:.1} %</td></tr><tr><td>phone</td><td>{ph:.1} %</td></tr>\
             <tr><td>address</td><td>{ad:.1} %</td></tr><tr><td>IP address</td><td>{ip:.1} %</td></tr></table>\
             <p>Webhooks: {hooks}. Missing: {missing}. Consent: <code>{consent}</code>.</p>",
            shop = escape(&s.shop),
            listed = s.listed,
            web = s.web_orders,
            value = s.value,
            cur = escape(s.currency.as_deref().unwrap_or("")),
            pos = s.pos_percent,
            test = s.test_percent,
            em = k.email,
            ph = k.phone,
            ad = k.address,
            ip = k.ip,
            hooks = escape(&s.webhooks.join(", ")),
            missing = if s.webhooks_missing.is_empty() {
                "none".to_owned()
            } else {
                escape(&s.webhooks_missing.join(", "))
            },
            consent = escape(&s.consent),
        );
    }
    if let Some(p) = &a.pinterest {
        let _ = write!(
            h,
            "<h2>Pinterest: ad account {acct}</h2><p class=\"muted\">attribution: {attr}</p>\
             <div class=\"grid\"><div class=\"card\">checkouts<b>{c}</b></div>\
             <div class=\"card\">checkout value<b>{v:.2}</b></div><div class=\"card\">spend<b>{s:.2}</b></div>\
             <div class=\"card\">CPA<b>{cpa}</b></div></div><table><tr><th>conversion tag</th><th>status</th>\
             <th>automatic enhanced match</th></tr>",
            acct = escape(&p.ad_account_id),
            attr = escape(&p.attribution),
            c = p.checkouts,
            v = p.value,
            s = p.spend,
            cpa = p.cpa.map_or("—".to_owned(), |c| format!("{c:.2}")),
        );
        for t in &p.tags {
            let _ = write!(
                h,
                "<tr><td>{} {}</td><td>{}</td><td>{}</td></tr>",
                escape(&t.id),
                escape(&t.name),
                escape(&t.status),
                if t.automatic_enhanced_match {
                    "on"
                } else {
                    "off"
                }
            );
        }
        h.push_str("</table>");
        if !p.eqs.is_empty() {
            let eqs: Vec<String> = p.eqs.iter().map(|(pl, st)| format!("{pl}: {st}")).collect();
            let _ = write!(
                h,
                "<p>Event Quality Score (CAPI, 14 days): {}</p>",
                escape(&eqs.join(", "))
            );
        }
    }
    if let Some(g) = &a.gateway {
        let _ = write!(
            h,
            "<h2>pincapi</h2><div class=\"grid\"><div class=\"card\">orders<b>{}</b></div>\
             <div class=\"card\">purchases delivered<b>{}</b></div>\
             <div class=\"card\">the Tag lost<b>{:.1} %</b></div>\
             <div class=\"card\">recovered by CAPI<b>{:.1} %</b></div></div>",
            g.orders, g.delivered_purchases, g.browser_loss_percent, g.recovered_percent
        );
    }
    h.push_str("</body></html>\n");
    h
}

/// A bar chart of two series per day, as inline SVG.
fn chart(series: &BTreeMap<String, (i64, i64)>) -> String {
    let (w, ht, pad) = (900.0_f64, 220.0_f64, 30.0_f64);
    let max = series
        .values()
        .map(|(a, b)| (*a).max(*b))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let n = series.len() as f64;
    let slot = (w - 2.0 * pad) / n;
    let bar = (slot / 2.0 - 1.0).max(1.0);
    let mut s = format!(
        "<svg viewBox=\"0 0 {w} {ht}\" width=\"100%\" role=\"img\" aria-label=\"orders and checkouts per day\">\
         <line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <text x=\"2\" y=\"{top}\">{max}</text><text x=\"2\" y=\"{y0}\">0</text>",
        y0 = ht - pad,
        x1 = w - pad,
        top = pad,
        max = max as i64,
    );
    for (i, (day, (orders, checkouts))) in series.iter().enumerate() {
        let x = pad + i as f64 * slot;
        for (j, (v, colour)) in [(*orders, ORDERS), (*checkouts, CHECKOUTS)]
            .iter()
            .enumerate()
        {
            let bh = (ht - 2.0 * pad) * (*v as f64) / max;
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\" fill=\"{colour}\"><title>{day}: {v}</title></rect>",
                x + j as f64 * (bar + 1.0),
                ht - pad - bh,
            );
        }
        if series.len() <= 12 || i % (series.len() / 8).max(1) == 0 {
            let _ = write!(
                s,
                "<text x=\"{x:.1}\" y=\"{:.1}\">{}</text>",
                ht - pad + 14.0,
                &day[5..]
            );
        }
    }
    s.push_str("</svg>");
    s
}
