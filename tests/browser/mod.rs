//! A headless Chromium driven over the Chrome DevTools Protocol, as much of it as the dashboard's
//! tests need: navigate, evaluate JavaScript (awaiting promises), type text, take PNG screenshots.
//! The browser is Debian's `/usr/bin/chromium` (or `CHROMIUM_BIN`); nothing is downloaded. It runs
//! with a fresh profile in a temporary directory and is killed on `Drop`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where the browser is: `CHROMIUM_BIN`, else Debian's package.
pub fn chromium_bin() -> PathBuf {
    std::env::var_os("CHROMIUM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Whether a browser test can run: `None` when it can; otherwise the reason. With `CI` set a
/// missing browser is a failure (panics), without it the test is skipped.
pub fn skip_reason() -> Option<String> {
    let bin = chromium_bin();
    if bin.exists() {
        return None;
    }
    let why = format!(
        "{} is not installed (apt-get install -y chromium, or set CHROMIUM_BIN)",
        bin.display()
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set and the browser test cannot run: {why}"
    );
    Some(why)
}

/// A running headless Chromium and its one page.
pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// What the page logged as errors (uncaught exceptions, `console.error`), for failure messages.
    pub console: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts the browser with a `width`x`height` window and attaches to its page.
    pub async fn launch(width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new(chromium_bin())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let browser_ws = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium exited before it listened for DevTools");
        })
        .await
        .expect("chromium listens for DevTools within 30 s");
        // Keep draining its stderr so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = browser_ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host:port")
            .to_owned();
        let targets: Value = reqwest::get(format!("http://{port}/json/list"))
            .await
            .expect("the DevTools target list")
            .json()
            .await
            .expect("JSON");
        let page = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(page)
            .await
            .expect("the page's DevTools socket");
        let mut b = Browser {
            child,
            ws,
            next_id: 0,
            console: Vec::new(),
            _profile: profile,
        };
        b.call("Runtime.enable", json!({})).await;
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        b
    }

    /// Sends one DevTools command and returns its result (panics on a protocol error).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::text(msg))
            .await
            .expect("DevTools send");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 60 s"))
                .expect("the DevTools socket is open")
                .expect("a DevTools frame");
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
            match v["method"].as_str() {
                Some("Runtime.exceptionThrown") => self.console.push(
                    v["params"]["exceptionDetails"]["exception"]["description"]
                        .as_str()
                        .unwrap_or("an exception")
                        .to_owned(),
                ),
                Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                    self.console.push(v["params"]["args"].to_string())
                }
                _ => {}
            }
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method} failed: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Loads `url`.
    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value; panics when it
    /// throws.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy; returns how long it took. Panics after `within`, saying
    /// what `describe` (another expression) shows then.
    pub async fn wait_for(
        &mut self,
        expression: &str,
        within: Duration,
        describe: &str,
    ) -> Duration {
        let start = Instant::now();
        let check = format!(
            "(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()"
        );
        loop {
            if self.eval(&check).await == Value::Bool(true) {
                return start.elapsed();
            }
            if start.elapsed() > within {
                let shown = self.eval(describe).await;
                panic!(
                    "waited {within:?} for `{expression}`; the page shows {shown}; its errors: {:?}",
                    self.console
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Types `text` into the focused element, as a keyboard would.
    pub async fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Saves a PNG of the whole page to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let data = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("image data"))
            .expect("base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot folder");
        }
        std::fs::write(path, data).expect("the screenshot is written");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
