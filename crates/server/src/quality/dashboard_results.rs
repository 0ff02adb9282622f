//! The dashboard's account selector and results panel: per ad account and day, the checkouts,
//! value and spend Pinterest reports, CPA and ROAS, beside the shop's orders and pincapi's
//! delivered purchases, with the go-live day marked and the learning period shaded. Inline
//! SVG, no script; the figures are `report.results`, as `/api/quality` serves them.

use std::fmt::Write;

use super::dashboard::escape;
use super::report::Report;
use super::results::AccountResults;

/// Fixed colours per series, the same on every load.
pub const PINTEREST: &str = "#e60023";
pub const ORDERS: &str = "#3465a4";
pub const DELIVERED: &str = "#4e9a06";

/// Links to the report of each account, and of all of them.
pub fn selector(out: &mut String, report: &Report, since: &str) {
    if report.accounts.len() < 2 && report.ad_account_id.is_none() {
        return;
    }
    out.push_str("<nav id=\"accounts\" class=\"sub\">Ad account: ");
    let current = report.ad_account_id.as_deref();
    let link = |label: &str, query: String, on: bool| {
        if on {
            format!("<b>{}</b>", escape(label))
        } else {
            format!(
                "<a href=\"/dashboard?{}\">{}</a>",
                escape(&query),
                escape(label)
            )
        }
    };
    let mut parts = vec![link("all", format!("since={since}"), current.is_none())];
    for a in &report.accounts {
        parts.push(link(
            a,
            format!("since={since}&account={a}"),
            current == Some(a.as_str()),
        ));
    }
    out.push_str(&parts.join(" · "));
    out.push_str("</nav>");
}

/// The results panel of every account in the report.
pub fn panel(out: &mut String, report: &Report) {
    for r in &report.results {
        account(out, r);
    }
}

fn money(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.2}"))
}

fn account(out: &mut String, r: &AccountResults) {
    let _ = write!(
        out,
        "<section class=\"results\" id=\"results-{id}\"><h2>Results: ad account {id}</h2>\
         <p class=\"sub\">What Pinterest reports (attribution: {attr}) beside the shop's orders and \
         what pincapi delivered.{golive}</p>",
        id = escape(&r.ad_account_id),
        attr = escape(&r.attribution),
        golive = match (&r.go_live_day, &r.learning_until) {
            (Some(g), Some(l)) => format!(
                " Go-live {}: campaigns learn from the new conversions over the next 2–4 weeks \
                 (shaded, to {}).",
                escape(g),
                escape(l)
            ),
            _ => String::new(),
        }
    );
    if let Some(e) = &r.error {
        let _ = write!(
            out,
            "<p class=\"bad\" id=\"results-error\">{}</p>",
            escape(e)
        );
    }
    chart(out, r);
    let t = &r.total;
    let _ = write!(
        out,
        "<p class=\"legend\"><span><i style=\"background:{ORDERS}\"></i>Shopify orders</span> \
         <span><i style=\"background:{DELIVERED}\"></i>purchases pincapi delivered</span> \
         <span><i style=\"background:{PINTEREST}\"></i>checkouts Pinterest reports</span></p>\
         <table class=\"results-table\"><tr><th>day</th><th>orders</th><th>delivered</th>\
         <th>recovered</th><th>Pinterest checkouts</th><th>value</th><th>spend</th><th>CPA</th>\
         <th>ROAS</th></tr>"
    );
    let opt = |v: Option<i64>| v.map_or("–".to_owned(), |v| v.to_string());
    for d in r.days.iter().chain(std::iter::once(t)) {
        let _ = write!(
            out,
            "<tr><th>{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&d.day),
            opt(d.shopify_orders),
            d.delivered_purchases,
            opt(d.recovered),
            d.pinterest_checkouts,
            d.pinterest_value,
            d.spend,
            money(d.cpa),
            money(d.roas),
        );
    }
    out.push_str("</table></section>");
}

/// Three bars a day, the go-live line and the learning period's band.
fn chart(out: &mut String, r: &AccountResults) {
    let (w, h, pad) = (720.0_f64, 200.0_f64, 30.0_f64);
    let n = r.days.len().max(1) as f64;
    let slot = (w - pad) / n;
    let max = r
        .days
        .iter()
        .map(|d| {
            d.pinterest_checkouts
                .max(d.delivered_purchases)
                .max(d.shopify_orders.unwrap_or(0))
        })
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let _ = write!(
        out,
        "<svg id=\"chart-results-{}\" viewBox=\"0 0 {w} {}\" width=\"100%\" role=\"img\" \
         aria-label=\"results per day\"><text x=\"0\" y=\"12\" class=\"axis\">{max}</text>",
        escape(&r.ad_account_id),
        h + 20.0
    );
    let index = |day: &str| r.days.iter().position(|d| d.day == day);
    if let Some(g) = r.go_live_day.as_deref() {
        // The band starts at go-live (or the first day shown, when go-live is earlier).
        let start = index(g).unwrap_or(0);
        let end = r
            .learning_until
            .as_deref()
            .and_then(index)
            .unwrap_or(r.days.len().saturating_sub(1));
        let (x0, x1) = (pad + slot * start as f64, pad + slot * (end as f64 + 1.0));
        let _ = write!(
            out,
            "<rect id=\"learning-period\" x=\"{x0:.1}\" y=\"14\" width=\"{:.1}\" height=\"{:.1}\" \
             fill=\"#f4e7a1\" opacity=\"0.5\"><title>learning period</title></rect>",
            x1 - x0,
            h - 14.0
        );
        if let Some(i) = index(g) {
            let x = pad + slot * i as f64;
            let _ = write!(
                out,
                "<line id=\"go-live\" x1=\"{x:.1}\" y1=\"14\" x2=\"{x:.1}\" y2=\"{h}\" stroke=\"#222\" \
                 stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"26\" class=\"axis\">go-live</text>",
                x + 3.0
            );
        }
    }
    let bw = (slot / 3.0 * 0.85).max(1.0);
    for (i, d) in r.days.iter().enumerate() {
        let x = pad + slot * i as f64;
        for (k, (v, colour, what)) in [
            (d.shopify_orders.unwrap_or(0), ORDERS, "orders"),
            (d.delivered_purchases, DELIVERED, "delivered"),
            (d.pinterest_checkouts, PINTEREST, "Pinterest checkouts"),
        ]
        .into_iter()
        .enumerate()
        {
            let bh = v as f64 / max * (h - 30.0);
            if bh > 0.0 {
                let _ = write!(
                    out,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"{colour}\">\
                     <title>{} {what}: {v}</title></rect>",
                    x + k as f64 * bw,
                    h - bh,
                    escape(&d.day)
                );
            }
        }
        if r.days.len() <= 14 || i % (r.days.len() / 10).max(1) == 0 {
            let _ = write!(
                out,
                "<text x=\"{x:.1}\" y=\"{}\" class=\"axis\">{}</text>",
                h + 15.0,
                escape(d.day.get(5..).unwrap_or(&d.day))
            );
        }
    }
    out.push_str("</svg>");
}
