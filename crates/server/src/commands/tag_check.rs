//! `pincapi tag check URL...`: is the Pinterest Tag on these storefront pages exactly once,
//! with our Tag id and enhanced match, and which events fire?
//!
//! Without `--browser` the pages' HTML is read (and any pincapi tag.js they include, to learn
//! its Tag id). With `--browser` each page is also loaded in headless Chromium and the
//! `pintrk` calls and collector beacons that actually happened are reported. Errors (the page
//! fails): no Tag, more than one (a theme snippet plus an app counts every event twice), a Tag
//! id other than ours, the same event fired twice on one load. Warnings: no enhanced match,
//! events without an event_id (Pinterest cannot de-duplicate them against CAPI).
//!
//! Addresses: private, loopback and link-local targets are refused unless `--allow-private`,
//! checked after DNS resolution and on every redirect, with the connection pinned to the
//! address checked, so a public name cannot be pointed at the internal network.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use reqwest::Url;
use serde::Serialize;
use serde_json::Value;

use super::webdriver::{BrowserOptions, Chromedriver, Session};
use crate::browser::scan::{Call, Scan, scan_html};
use crate::browser::script::MARKER;
use crate::commands::egress::proxy::FilteringProxy;
use crate::commands::egress::{AddressArgs, Fetcher};

/// `pincapi tag ...`.
#[derive(Debug, clap::Args)]
pub struct TagArgs {
    #[command(subcommand)]
    pub command: TagCommand,
}

/// The `tag` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TagCommand {
    /// Check storefront pages: the Pinterest base code exactly once, the configured tag id,
    /// enhanced match, and the events that fire. Exits 1 when a page has an error.
    Check(CheckArgs),
}

/// Options of `pincapi tag check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Pages to check (http or https).
    #[arg(required = true)]
    pub urls: Vec<String>,
    /// Also load each page in headless Chromium and report what actually fired.
    #[arg(long)]
    pub browser: bool,
    #[command(flatten)]
    pub addresses: AddressArgs,
    /// The Tag id the pages must use (default: tag_id from the configuration, PINCAPI_TAG_ID).
    #[arg(long)]
    pub tag_id: Option<String>,
    /// TOML configuration file, for tag_id.
    #[arg(long, short, env = "PINCAPI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the reports as JSON.
    #[arg(long)]
    pub json: bool,
    /// The Chromium binary for --browser (default: chromium from PATH).
    #[arg(long)]
    pub chromium: Option<PathBuf>,
    /// The chromedriver binary for --browser (default: chromedriver from PATH).
    #[arg(long)]
    pub chromedriver: Option<PathBuf>,
}

/// One Tag installation found on a page.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Install {
    /// `base_code` (Pinterest's snippet, `pintrk('load', ...)`), `pinterest_app` (the same
    /// snippet from Pinterest's Shopify app, `np: 'shopify'`) or `pincapi` (tag.js).
    pub kind: &'static str,
    /// Where: the script URL for tag.js.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// The Tag id, when written as a literal.
    pub tag_id: Option<String>,
    /// Whether this installation passes an email for enhanced match.
    pub enhanced_match: bool,
}

/// One event call found in the HTML.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FoundEvent {
    /// `pintrk` or `pincapi`.
    pub via: &'static str,
    /// The name as written.
    pub event: String,
    /// Whether it carries an event_id (tag.js always adds one).
    pub event_id: bool,
}

/// What the browser saw on one page load.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Observed {
    /// Every `pintrk(...)` call, arguments as JSON.
    pub pintrk_calls: Vec<Value>,
    /// Requests to a `/collect` endpoint: `{url, transport, event_name, event_id, source}`.
    pub beacons: Vec<Value>,
    /// Requests the browser made that the address rule refused (`URL: why`): a frame, a
    /// script, a redirect or a fetch to a private, loopback or link-local address.
    #[serde(default)]
    pub refused: Vec<String>,
}

/// One problem on a page, named by its check (the audit lists them with their fix).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// `tag_missing`, `tag_duplicate`, `tag_wrong_id`, `tag_id_not_literal`,
    /// `pinterest_app_tag`, `tag_manager`, `no_enhanced_match`, `event_without_event_id`,
    /// `page_unreachable`, `browser_no_load`, `browser_double_load`, `browser_wrong_id`,
    /// `browser_event_twice`, `browser_beacon_missing`, `browser_private_address`.
    pub check: &'static str,
    /// `error` or `warning`.
    pub severity: &'static str,
    pub message: String,
}

/// The verdict on one page.
#[derive(Debug, Clone, Serialize)]
pub struct PageReport {
    pub url: String,
    pub ok: bool,
    pub installs: Vec<Install>,
    pub enhanced_match: bool,
    pub events: Vec<FoundEvent>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// The errors and warnings again, each with the check that found it.
    pub problems: Vec<Problem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser: Option<Observed>,
}

impl PageReport {
    fn error(&mut self, check: &'static str, message: String) {
        self.errors.push(message.clone());
        self.problems.push(Problem {
            check,
            severity: "error",
            message,
        });
    }

    fn warning(&mut self, check: &'static str, message: String) {
        self.warnings.push(message.clone());
        self.problems.push(Problem {
            check,
            severity: "warning",
            message,
        });
    }
}

/// Runs `pincapi tag check`.
pub async fn run(args: TagArgs) -> anyhow::Result<ExitCode> {
    let TagCommand::Check(args) = args.command;
    let expected = match &args.tag_id {
        Some(id) => Some(id.clone()),
        None => crate::config::load(args.config.as_deref())?.tag_id,
    };
    let reports = check_pages(&args, expected.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            print!("{}", render(r));
        }
    }
    Ok(if reports.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Checks every page; a page that cannot be fetched is a failed report, not an abort.
pub async fn check_pages(
    args: &CheckArgs,
    expected: Option<&str>,
) -> anyhow::Result<Vec<PageReport>> {
    let policy = args.addresses.policy();
    let fetcher = Fetcher {
        policy: policy.clone(),
    };
    // The browser reaches the network only through the filtering proxy: every request,
    // redirect, frame and sub-resource is checked as the pages themselves were.
    let browser = if args.browser {
        let proxy = FilteringProxy::start(policy).await?;
        let options = BrowserOptions {
            chromium: args.chromium.clone(),
            chromedriver: args.chromedriver.clone(),
            proxy: Some(proxy.addr()),
        };
        let driver = Chromedriver::start(&options).await?;
        let session = driver.session().await?;
        session.add_init_script(RECORDER).await?;
        Some((driver, session, proxy))
    } else {
        None
    };
    let mut reports = Vec::new();
    for url in &args.urls {
        // A page that cannot be fetched (or is refused) is not loaded in the browser either.
        let (mut report, fetched) = match check_static(&fetcher, url, expected).await {
            Ok(r) => (r, true),
            Err(e) => (failed(url, format!("{e:#}")), false),
        };
        if let (true, Some((_, session, proxy))) = (fetched, &browser) {
            proxy.take_refused();
            match observe(session, url).await {
                Ok(mut seen) => {
                    seen.refused = proxy.take_refused();
                    judge_observed(&mut report, &seen, expected);
                }
                Err(e) => report.error(
                    "page_unreachable",
                    format!("the browser could not load the page: {e:#}"),
                ),
            }
        }
        report.ok = report.errors.is_empty();
        reports.push(report);
    }
    if let Some((driver, session, proxy)) = browser {
        session.quit().await;
        driver.stop().await;
        drop(proxy);
    }
    Ok(reports)
}

/// Fetches and judges one page's HTML.
async fn check_static(
    fetcher: &Fetcher,
    url: &str,
    expected: Option<&str>,
) -> anyhow::Result<PageReport> {
    let page_url = Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    let (final_url, html) = fetcher.get(page_url).await?;
    let scan = scan_html(&html);
    let mut installs = Vec::new();
    for src in &scan.script_srcs {
        let Ok(script_url) = final_url.join(src) else {
            continue;
        };
        // Only scripts named like ours are fetched: reading every script of a theme is slow
        // and tells nothing about the Tag.
        if !script_url.path().ends_with("tag.js") {
            continue;
        }
        if let Ok((_, text)) = fetcher.get(script_url.clone()).await
            && text.contains(MARKER)
        {
            installs.push(Install {
                kind: "pincapi",
                src: Some(script_url.to_string()),
                tag_id: tag_id_in_script(&text),
                enhanced_match: false,
            });
        }
    }
    Ok(judge_static(final_url.as_str(), &scan, installs, expected))
}

/// The page verdict from its HTML. `pincapi_installs` are the tag.js scripts found.
pub fn judge_static(
    url: &str,
    scan: &Scan,
    pincapi_installs: Vec<Install>,
    expected: Option<&str>,
) -> PageReport {
    let mut installs: Vec<Install> = scan
        .calls
        .iter()
        .filter(|c| c.function == "pintrk" && c.str_arg(0).as_deref() == Some("load"))
        .map(|c| Install {
            // Pinterest's Shopify app marks its Tag as the named partner `np: 'shopify'`.
            kind: if c.args.get(2).is_some_and(|a| {
                c.arg_has_key(2, "np") && (a.contains("'shopify'") || a.contains("\"shopify\""))
            }) {
                "pinterest_app"
            } else {
                "base_code"
            },
            src: None,
            tag_id: c.str_arg(1),
            enhanced_match: c.arg_has_key(2, "em"),
        })
        .collect();
    let pincapi_em = scan.calls.iter().any(|c| {
        c.function == "pincapi"
            && matches!(c.str_arg(0).as_deref(), Some("load" | "set"))
            && c.arg_has_key(1, "em")
    });
    installs.extend(pincapi_installs.into_iter().map(|mut i| {
        i.enhanced_match = pincapi_em;
        i
    }));
    let events: Vec<FoundEvent> = scan
        .calls
        .iter()
        .filter(|c| c.str_arg(0).as_deref() == Some("track"))
        .filter_map(event_of)
        .collect();

    let enhanced_match = installs.iter().any(|i| i.enhanced_match);
    let mut report = PageReport {
        url: url.to_owned(),
        ok: false,
        installs: Vec::new(),
        enhanced_match,
        events: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
        problems: Vec::new(),
        browser: None,
    };
    match installs.len() {
        0 if scan.loaders > 0 => report.error(
            "tag_missing",
            "the base code loads Pinterest's core.js but never calls pintrk('load', TAG_ID)"
                .to_owned(),
        ),
        0 => report.error(
            "tag_missing",
            "no Pinterest Tag on this page (no base code, no pincapi tag.js)".to_owned(),
        ),
        1 => {}
        n => report.error(
            "tag_duplicate",
            format!(
                "the Pinterest base code is on this page {n} times ({}): every event is counted \
                 {n} times; keep one (remove the theme snippet or the other app)",
                installs.iter().map(describe).collect::<Vec<_>>().join(", ")
            ),
        ),
    }
    if installs.iter().any(|i| i.kind == "pinterest_app") {
        let beside = if installs.len() > 1 {
            "beside another Tag: every event is counted twice, "
        } else {
            ""
        };
        report.warning(
            "pinterest_app_tag",
            format!(
                "Pinterest's Shopify app installs its own Tag here (np: 'shopify'); {beside}its \
                 checkout carries no event_id pincapi knows, so Pinterest cannot de-duplicate it \
                 against pincapi's order-<id> purchase: run one of them for the Tag (see \
                 README, \"Beside Pinterest's Shopify app\")"
            ),
        );
    }
    for i in &installs {
        match (&i.tag_id, expected) {
            (Some(id), Some(want)) if id != want => report.error(
                "tag_wrong_id",
                format!("wrong tag id {id} in {}: this shop's Tag is {want}", describe(i)),
            ),
            (Some(id), None) => report.warning(
                "tag_id_unchecked",
                format!(
                    "found tag id {id}; no tag id is configured to compare with (--tag-id or PINCAPI_TAG_ID)"
                ),
            ),
            (None, _) => report.warning(
                "tag_id_not_literal",
                format!(
                    "the tag id in {} is not written literally (a template variable?); it cannot be checked here, try --browser",
                    describe(i)
                ),
            ),
            _ => {}
        }
    }
    if scan.gtm {
        report.warning(
            "tag_manager",
            "Google Tag Manager is loaded on this page: a Pinterest Tag inside its container \
             cannot be seen in the HTML and would be a second Tag; check the container, or run \
             with --browser to see what fires"
                .to_owned(),
        );
    }
    if !installs.is_empty() && !enhanced_match {
        report.warning(
            "no_enhanced_match",
            "no enhanced match: pass the buyer's email when it is known (pincapi('load', {em}) or \
             pintrk('load', TAG_ID, {em}))"
                .to_owned(),
        );
    }
    for e in events.iter().filter(|e| !e.event_id) {
        report.warning(
            "event_without_event_id",
            format!(
                "{}('track', '{}') has no event_id: Pinterest cannot de-duplicate it against the server's copy",
                e.via, e.event
            ),
        );
    }
    report.installs = installs;
    report.events = events;
    report.ok = report.errors.is_empty();
    report
}

/// Adds what the browser saw to a report.
pub fn judge_observed(report: &mut PageReport, seen: &Observed, expected: Option<&str>) {
    if !seen.refused.is_empty() {
        report.error(
            "browser_private_address",
            format!(
                "in the browser: the page reached for {} address(es) the check may not load, refused: {}",
                seen.refused.len(),
                seen.refused.join("; ")
            ),
        );
    }
    let method = |c: &Value| c[0].as_str().map(str::to_owned);
    let loads: Vec<&Value> = seen
        .pintrk_calls
        .iter()
        .filter(|c| method(c).as_deref() == Some("load"))
        .collect();
    match loads.len() {
        0 => report.error(
            "browser_no_load",
            "in the browser: the Pinterest Tag was never loaded (no pintrk('load'))".to_owned(),
        ),
        1 => {}
        n => report.error(
            "browser_double_load",
            format!("in the browser: pintrk('load') ran {n} times: two Tags on one page"),
        ),
    }
    for l in &loads {
        if let (Some(id), Some(want)) = (l[1].as_str(), expected)
            && id != want
        {
            report.error(
                "browser_wrong_id",
                format!("in the browser: the Tag loaded with tag id {id}, not {want}"),
            );
        }
    }
    if loads.iter().any(|l| l[2]["em"].is_string()) {
        report.enhanced_match = true;
    }
    let mut fired: BTreeMap<String, usize> = BTreeMap::new();
    for c in seen
        .pintrk_calls
        .iter()
        .filter(|c| method(c).as_deref() == Some("track"))
    {
        let name = c[1].as_str().unwrap_or("?").to_ascii_lowercase();
        *fired.entry(name.clone()).or_default() += 1;
        match c[2]["event_id"].as_str() {
            None => report.warning(
                "event_without_event_id",
                format!("in the browser: pintrk('track', '{name}') ran without an event_id"),
            ),
            Some(id) => {
                let mirrored = seen.beacons.iter().any(|b| b["event_id"] == id);
                let pincapi_page = report.installs.iter().any(|i| i.kind == "pincapi");
                if pincapi_page && !mirrored {
                    report.warning(
                        "browser_beacon_missing",
                        format!(
                            "in the browser: {name} {id} reached the Tag but not the collector"
                        ),
                    );
                }
            }
        }
    }
    for (name, n) in fired {
        if n > 1 {
            report.error(
                "browser_event_twice",
                format!(
                    "in the browser: {name} fired {n} times on one page load: it is counted {n} times"
                ),
            );
        }
    }
    report.browser = Some(seen.clone());
    report.ok = report.errors.is_empty();
}

/// Loads a page with the recorder and returns what happened once the page is quiet.
async fn observe(session: &Session, url: &str) -> anyhow::Result<Observed> {
    session.goto(url).await?;
    // A page is done when nothing new was recorded for a while after its load event: Tag
    // calls and beacons follow the load by a few script round trips.
    let quiet = Duration::from_millis(1500);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    let mut since = tokio::time::Instant::now();
    loop {
        let now = session
            .execute(
                "var r = window.__pincapiCheck || {pintrk: [], beacons: []};\
                 return JSON.stringify([document.readyState, r.pintrk.length, r.beacons.length]);",
                Vec::new(),
            )
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if now != last {
            last = now;
            since = tokio::time::Instant::now();
        } else if last.contains("complete") && since.elapsed() >= quiet {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = session
        .execute(
            "return window.__pincapiCheck || {pintrk: [], beacons: []};",
            Vec::new(),
        )
        .await?;
    let mut pintrk_calls = v["pintrk"].as_array().cloned().unwrap_or_default();
    // Enhanced match hands the Tag the buyer's email: the report says it was there, no more.
    for arg in pintrk_calls
        .iter_mut()
        .filter_map(Value::as_array_mut)
        .flatten()
    {
        if let Some(em) = arg.get_mut("em").filter(|e| e.is_string()) {
            *em = Value::String("(an email)".to_owned());
        }
    }
    Ok(Observed {
        pintrk_calls,
        beacons: v["beacons"].as_array().cloned().unwrap_or_default(),
        refused: Vec::new(),
    })
}

/// Runs before every page's own scripts: records each `pintrk(...)` call (through a Proxy, so
/// the Tag's own properties such as `queue` keep working) and each request to `/collect`.
const RECORDER: &str = r#"(function () {
  var rec = window.__pincapiCheck = { pintrk: [], beacons: [] };
  var current;
  var replaying = false;
  function copy(args) {
    try { return JSON.parse(JSON.stringify(Array.prototype.slice.call(args))); }
    catch (e) { return [String(args[0])]; }
  }
  function wrap(f) {
    if (typeof f !== 'function' || typeof Proxy !== 'function') return f;
    return new Proxy(f, { apply: function (target, self, args) {
      if (!replaying) rec.pintrk.push(copy(args));
      return Reflect.apply(target, self, args);
    } });
  }
  try {
    Object.defineProperty(window, 'pintrk', {
      configurable: true, enumerable: true,
      get: function () { return current; },
      set: function (v) {
        var replacing = current !== undefined;
        current = wrap(v);
        // core.js replaces the loader's queue function and may replay the queue at once;
        // those calls were recorded when they were first made.
        if (replacing) { replaying = true; setTimeout(function () { replaying = false; }, 0); }
      }
    });
  } catch (e) {}
  function note(url, body, transport) {
    try {
      if (!/\/collect$/.test(new URL(String(url), location.href).pathname)) return;
      var p = null;
      try { p = typeof body === 'string' ? JSON.parse(body) : null; } catch (e) {}
      rec.beacons.push({ url: String(url), transport: transport,
        event_name: p && p.event_name, event_id: p && p.event_id, source: p && p.source });
    } catch (e) {}
  }
  try {
    if (navigator.sendBeacon) {
      var send = navigator.sendBeacon.bind(navigator);
      navigator.sendBeacon = function (url, data) { note(url, data, 'beacon'); return send(url, data); };
    }
    if (window.fetch) {
      var f = window.fetch;
      window.fetch = function (input, init) {
        note(input && input.url ? input.url : input, init && init.body, 'fetch');
        return f.apply(this, arguments);
      };
    }
  } catch (e) {}
})();"#;

fn event_of(c: &Call) -> Option<FoundEvent> {
    let event = c
        .args
        .get(1)
        .map(|a| crate::browser::scan::string_literal(a).unwrap_or_else(|| a.clone()))?;
    Some(FoundEvent {
        via: c.function,
        event,
        event_id: c.function == "pincapi" || c.arg_has_key(2, "event_id"),
    })
}

fn describe(i: &Install) -> String {
    match (i.kind, &i.src) {
        ("pincapi", Some(src)) => format!("pincapi tag.js {src}"),
        ("pincapi", None) => "pincapi tag.js".to_owned(),
        ("pinterest_app", _) => "the Tag of Pinterest's Shopify app".to_owned(),
        _ => "Pinterest base code".to_owned(),
    }
}

fn failed(url: &str, error: String) -> PageReport {
    PageReport {
        url: url.to_owned(),
        ok: false,
        installs: Vec::new(),
        enhanced_match: false,
        events: Vec::new(),
        errors: vec![error.clone()],
        warnings: Vec::new(),
        problems: vec![Problem {
            check: "page_unreachable",
            severity: "error",
            message: error,
        }],
        browser: None,
    }
}

/// The Tag id in a served tag.js (its `CONFIG` object).
fn tag_id_in_script(text: &str) -> Option<String> {
    let start = text.find("var CONFIG = ")? + "var CONFIG = ".len();
    let mut de = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    let config = de.next()?.ok()?;
    config["tag_id"].as_str().map(str::to_owned)
}

/// The human-readable report of one page.
pub fn render(r: &PageReport) -> String {
    let mut out = format!("{} {}\n", if r.ok { "PASS" } else { "FAIL" }, r.url);
    for e in &r.errors {
        out.push_str(&format!("  error: {e}\n"));
    }
    for w in &r.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    for i in &r.installs {
        out.push_str(&format!(
            "  tag: {}, tag id {}\n",
            describe(i),
            i.tag_id.as_deref().unwrap_or("(not literal)")
        ));
    }
    if !r.installs.is_empty() {
        out.push_str(&format!(
            "  enhanced match: {}\n",
            if r.enhanced_match { "yes" } else { "no" }
        ));
    }
    if !r.events.is_empty() {
        let list: Vec<String> = r
            .events
            .iter()
            .map(|e| {
                format!(
                    "{} ({}{})",
                    e.event,
                    e.via,
                    if e.event_id {
                        ", event_id"
                    } else {
                        ", no event_id"
                    }
                )
            })
            .collect();
        out.push_str(&format!("  events in the HTML: {}\n", list.join("; ")));
    }
    if let Some(b) = &r.browser {
        let calls: Vec<String> = b
            .pintrk_calls
            .iter()
            .map(|c| {
                let args: Vec<String> = c
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| match v {
                                // The email is personal data: say it was there, not what it was.
                                Value::Object(o) if o.contains_key("em") => "{em: …}".to_owned(),
                                Value::Object(o) => match o.get("event_id") {
                                    Some(id) => format!("{{event_id: {id}, …}}"),
                                    None => "{…}".to_owned(),
                                },
                                v => v.to_string(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                format!("pintrk({})", args.join(", "))
            })
            .collect();
        out.push_str(&format!(
            "  browser, Tag calls: {}\n",
            if calls.is_empty() {
                "none".to_owned()
            } else {
                calls.join(" · ")
            }
        ));
        let beacons: Vec<String> = b
            .beacons
            .iter()
            .map(|x| {
                format!(
                    "{} {} ({})",
                    x["event_name"].as_str().unwrap_or("?"),
                    x["event_id"].as_str().unwrap_or("?"),
                    x["transport"].as_str().unwrap_or("?")
                )
            })
            .collect();
        out.push_str(&format!(
            "  browser, collector beacons: {}\n",
            if beacons.is_empty() {
                "none".to_owned()
            } else {
                beacons.join(" · ")
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(html: &str, pincapi: Vec<Install>, expected: Option<&str>) -> PageReport {
        judge_static("https://shop.example/", &scan_html(html), pincapi, expected)
    }

    const BASE: &str = "<script>!function(e){if(!window.pintrk){window.pintrk=function(){\
        window.pintrk.queue.push(Array.prototype.slice.call(arguments))};}}\
        (\"https://s.pinimg.com/ct/core.js\");pintrk('load', '2612345678901');\
        pintrk('page');</script>";

    fn pincapi(id: &str) -> Install {
        Install {
            kind: "pincapi",
            src: Some("https://shop.example/tag.js".into()),
            tag_id: Some(id.into()),
            enhanced_match: false,
        }
    }

    #[test]
    fn one_tag_with_our_id_passes_and_missing_duplicate_and_wrong_ids_fail() {
        let ok = report(BASE, vec![], Some("2612345678901"));
        assert!(ok.ok, "{:?}", ok.errors);
        let missing = report("<p>hi</p>", vec![], Some("2612345678901"));
        assert!(missing.errors[0].starts_with("no Pinterest Tag"));
        let dup = report(BASE, vec![pincapi("2612345678901")], Some("2612345678901"));
        assert!(dup.errors[0].contains("2 times"), "{:?}", dup.errors);
        let wrong = report(BASE, vec![], Some("2610000000000"));
        assert!(wrong.errors[0].starts_with("wrong tag id 2612345678901"));
        let loader_only = report(
            "<script>!function(e){}(\"https://s.pinimg.com/ct/core.js\")</script>",
            vec![],
            None,
        );
        assert!(loader_only.errors[0].contains("never calls pintrk('load'"));
    }

    #[test]
    fn enhanced_match_and_event_ids_are_reported() {
        let r = report(
            "<script>pincapi('load', {em: 'a@b.co'}); pincapi('track', 'page_visit');\
             pintrk('track', 'checkout', {value: 1})</script>",
            vec![pincapi("1")],
            Some("1"),
        );
        assert!(r.ok);
        assert!(r.enhanced_match);
        assert_eq!(r.events.len(), 2);
        assert!(r.events[0].event_id);
        assert!(!r.events[1].event_id);
        assert!(r.warnings.iter().any(|w| w.contains("no event_id")));
    }

    #[test]
    fn the_tag_id_is_read_from_a_served_tag_js() {
        let config = crate::config::Config {
            tag_id: Some("2612345678901".into()),
            ..Default::default()
        };
        let js = crate::browser::script::render(&config);
        assert_eq!(tag_id_in_script(&js).as_deref(), Some("2612345678901"));
    }

    #[test]
    fn observed_calls_find_double_loads_and_double_events() {
        let mut r = report(BASE, vec![], Some("2612345678901"));
        let seen = Observed {
            pintrk_calls: vec![
                serde_json::json!(["load", "2612345678901"]),
                serde_json::json!(["load", "2612345678901", {"em": "x"}]),
                serde_json::json!(["track", "pagevisit"]),
                serde_json::json!(["track", "pagevisit", {"event_id": "e1"}]),
            ],
            beacons: vec![],
            refused: vec![],
        };
        judge_observed(&mut r, &seen, Some("2612345678901"));
        assert!(!r.ok);
        assert!(r.errors.iter().any(|e| e.contains("ran 2 times")));
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("pagevisit fired 2 times"))
        );
        assert!(r.enhanced_match);
    }
}
