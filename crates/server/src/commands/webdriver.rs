//! A small WebDriver client for headless Chromium through `chromedriver`: plain HTTP and JSON
//! over the client the gateway already has, so `pincapi tag check --browser` and the browser
//! tests need Debian's `chromium` and `chromium-driver` and nothing else.
//!
//! Chromium runs with a fresh profile directory and without background networking, so a run
//! talks only to the pages it is sent to. Chrome DevTools commands (init scripts, URL blocking)
//! go through chromedriver's `goog/cdp/execute` endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where to find the programs; `None` searches `PATH`.
#[derive(Debug, Clone, Default)]
pub struct BrowserOptions {
    pub chromium: Option<PathBuf>,
    pub chromedriver: Option<PathBuf>,
    /// Send every request, loopback included, through this HTTP proxy.
    pub proxy: Option<SocketAddr>,
}

/// A running chromedriver. Killed when dropped.
#[derive(Debug)]
pub struct Chromedriver {
    /// Held for its `Drop`, which ends chromedriver.
    _process: Driver,
    url: String,
    http: reqwest::Client,
    chromium: PathBuf,
    proxy: Option<SocketAddr>,
}

impl Chromedriver {
    /// Starts chromedriver on a free loopback port and waits until it listens.
    pub async fn start(options: &BrowserOptions) -> anyhow::Result<Chromedriver> {
        let driver = match &options.chromedriver {
            Some(p) => p.clone(),
            None => find_program(&["chromedriver"]).ok_or_else(|| {
                anyhow!(
                    "chromedriver not found; install it (Debian: apt-get install chromium \
                     chromium-driver) or pass --chromedriver PATH"
                )
            })?,
        };
        let chromium = match &options.chromium {
            Some(p) => p.clone(),
            None => find_program(&[
                "chromium",
                "chromium-browser",
                "google-chrome",
                "google-chrome-stable",
            ])
            .ok_or_else(|| {
                anyhow!(
                    "Chromium not found; install it (Debian: apt-get install chromium \
                     chromium-driver) or pass --chromium PATH"
                )
            })?,
        };
        let mut child = Command::new(&driver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("while starting {}", driver.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("chromedriver has no stdout"))?;
        // chromedriver prints the port it picked; the reader thread then keeps draining the
        // pipe so chromedriver never blocks on it, and ends when chromedriver exits.
        let (tx, rx) = tokio::sync::oneshot::channel::<Option<u16>>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(digits.parse().ok());
                    }
                }
            }
        });
        let driver_process = Driver(Some(child));
        let port = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(Some(port))) => port,
            Ok(_) => bail!("chromedriver exited before it was ready"),
            Err(_) => bail!("chromedriver did not start within 30 s"),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()?;
        Ok(Chromedriver {
            _process: driver_process,
            url: format!("http://127.0.0.1:{port}"),
            http,
            chromium,
            proxy: options.proxy,
        })
    }

    /// Opens a headless Chromium with a fresh profile.
    pub async fn session(&self) -> anyhow::Result<Session> {
        let profile = std::env::temp_dir().join(format!(
            "pincapi-chromium-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&profile)
            .with_context(|| format!("while creating {}", profile.display()))?;
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        if let Some(proxy) = self.proxy {
            // `<-loopback>` takes away Chromium's implicit bypass for localhost, and WebRTC
            // may use no UDP the proxy does not carry.
            args.push(format!("--proxy-server=http://{proxy}"));
            args.push("--proxy-bypass-list=<-loopback>".to_owned());
            args.push("--force-webrtc-ip-handling-policy=disable_non_proxied_udp".to_owned());
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": 60_000, "script": 30_000},
            "goog:chromeOptions": {"binary": self.chromium, "args": args},
        }}});
        let resp = call(
            &self.http,
            reqwest::Method::POST,
            &format!("{}/session", self.url),
            Some(caps),
        )
        .await
        .context("while starting Chromium")?;
        let id = resp["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("chromedriver answered without a session id: {resp}"))?;
        Ok(Session {
            http: self.http.clone(),
            base: format!("{}/session/{id}", self.url),
            profile,
            open: true,
        })
    }

    /// Stops chromedriver.
    pub async fn stop(self) {
        drop(self);
    }
}

/// The chromedriver process, killed and reaped when dropped (also when a test panics).
#[derive(Debug)]
struct Driver(Option<Child>);

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One browser window. Quit it with [`Session::quit`]; dropping it quits too, best effort.
#[derive(Debug)]
pub struct Session {
    http: reqwest::Client,
    base: String,
    profile: PathBuf,
    open: bool,
}

impl Session {
    /// Runs `source` in every page before the page's own scripts.
    pub async fn add_init_script(&self, source: &str) -> anyhow::Result<()> {
        self.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": source }),
        )
        .await
        .map(|_| ())
    }

    /// Makes requests to URLs matching any pattern (`*` wildcards) fail, as an ad blocker does.
    pub async fn block_urls(&self, patterns: &[&str]) -> anyhow::Result<()> {
        self.cdp("Network.enable", json!({})).await?;
        self.cdp("Network.setBlockedURLs", json!({ "urls": patterns }))
            .await
            .map(|_| ())
    }

    /// A Chrome DevTools command.
    pub async fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
        self.post("/goog/cdp/execute", json!({"cmd": cmd, "params": params}))
            .await
            .with_context(|| format!("while running {cmd}"))
    }

    /// Loads `url` and waits for its load event.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.post("/url", json!({ "url": url }))
            .await
            .with_context(|| format!("while loading {url}"))
            .map(|_| ())
    }

    /// The address of the current page.
    pub async fn current_url(&self) -> anyhow::Result<String> {
        let v = call(
            &self.http,
            reqwest::Method::GET,
            &format!("{}/url", self.base),
            None,
        )
        .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Clicks the first element matching a CSS selector, as a user would.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let el = self.element(css).await?;
        self.post(&format!("/element/{el}/click"), json!({}))
            .await
            .with_context(|| format!("while clicking {css}"))
            .map(|_| ())
    }

    /// Replaces the text of an input.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let el = self.element(css).await?;
        self.post(&format!("/element/{el}/clear"), json!({}))
            .await?;
        self.post(&format!("/element/{el}/value"), json!({ "text": text }))
            .await
            .map(|_| ())
    }

    /// Polls `js` (an expression) until it is truthy and returns its value; fails with
    /// `what` after `timeout`. Waiting for a state, never for a fixed time.
    pub async fn wait_for(&self, what: &str, js: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let script = format!("try {{ return ({js}); }} catch (e) {{ return null; }}");
        loop {
            // A navigation in progress can make one poll fail; the next one sees the new page.
            if let Ok(v) = self.execute(&script, Vec::new()).await
                && truthy(&v)
            {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG of the current page's viewport.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        use base64::Engine;
        let v = call(
            &self.http,
            reqwest::Method::GET,
            &format!("{}/screenshot", self.base),
            None,
        )
        .await
        .context("while taking a screenshot")?;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .context("the screenshot is not base64")
    }

    /// Closes the browser and removes its profile.
    pub async fn quit(mut self) {
        self.open = false;
        let _ = call(&self.http, reqwest::Method::DELETE, &self.base, None).await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }

    async fn element(&self, css: &str) -> anyhow::Result<String> {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await
            .with_context(|| format!("while finding {css}"))?;
        v[ELEMENT_KEY]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no element reference for {css}: {v}"))
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        call(
            &self.http,
            reqwest::Method::POST,
            &format!("{}{path}", self.base),
            Some(body),
        )
        .await
    }
}

impl Drop for Session {
    /// A session dropped without `quit` (a failed test) still closes its browser: a blocking
    /// `DELETE` on loopback, so no Chromium outlives its chromedriver.
    fn drop(&mut self) {
        if self.open {
            let _ = delete_blocking(&self.base);
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}

/// One WebDriver command; WebDriver errors become `Err` with the driver's message.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.context("chromedriver did not answer")?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .context("chromedriver answered with something other than JSON")?;
    if !status.is_success() {
        let err = v["value"]["error"].as_str().unwrap_or("error");
        let msg = v["value"]["message"].as_str().unwrap_or("");
        let first = msg.lines().next().unwrap_or("");
        bail!("WebDriver {err}: {first}");
    }
    Ok(v["value"].clone())
}

fn delete_blocking(session_url: &str) -> std::io::Result<()> {
    let rest = session_url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("not http"))?;
    let (host, path) = rest
        .split_once('/')
        .ok_or_else(|| std::io::Error::other("no path"))?;
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    Ok(())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// The first of `names` found in `PATH`.
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    })
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}
