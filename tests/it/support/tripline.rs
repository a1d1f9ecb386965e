//! Runs the real `tripline` binary: writes a config and sensors into a temp
//! dir, starts `tripline serve` on a free port, waits for `/readyz`, and
//! kills it (by PID) on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::brokers::free_port;

pub const BIN: &str = env!("CARGO_BIN_EXE_tripline");

/// Where the repository's files are (fixtures, examples, sensors).
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(repo("tests/fixtures").join(path))
        .unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// The real GitHub push fixture, made a push to `main`.
pub fn push_to_main() -> Value {
    let mut push: Value = serde_json::from_slice(&fixture("github/push.payload.json")).unwrap();
    push["ref"] = "refs/heads/main".into();
    push
}

pub struct Tripline {
    pub dir: TempDir,
    /// The public listener: webhook paths and `/healthz`.
    pub port: u16,
    /// The admin listener: `/readyz`, `/metrics`, `/explain/…`.
    pub admin_port: u16,
    child: Option<Child>,
    env: Vec<(String, String)>,
    config: PathBuf,
    args: Vec<String>,
    /// For `/readyz` and `/metrics`: one connection pool, not one per poll.
    client: reqwest::Client,
}

impl Tripline {
    /// Writes `config` (YAML, without `listen:`; `{dir}` is replaced by the
    /// temp dir) and `sensors` (file name, YAML) into a temp dir and starts
    /// `tripline serve` there with `env` added to its environment.
    /// `TRIPLINE_LOG` is `info,tripline=debug` unless `env` sets it; the log
    /// goes to `<dir>/tripline.log` ([`Tripline::log`]).
    pub async fn start(config: &str, sensors: &[(&str, &str)], env: &[(&str, &str)]) -> Tripline {
        let mut t = Self::prepare(config, sensors, env);
        t.spawn().await;
        t
    }

    /// Like [`Tripline::start`], but returns as soon as the process is spawned,
    /// without waiting for `/readyz`: for a bench that times from the first
    /// event, which can come before `/readyz` is polled. [`Tripline::try_metric`]
    /// answers `None` until the process listens.
    pub fn launch(config: &str, sensors: &[(&str, &str)], env: &[(&str, &str)]) -> Tripline {
        let mut t = Self::prepare(config, sensors, env);
        t.spawn_process();
        t
    }

    /// The temp dir of [`Tripline::start`], written; not started yet.
    fn prepare(config: &str, sensors: &[(&str, &str)], env: &[(&str, &str)]) -> Tripline {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("sensors")).unwrap();
        for (name, text) in sensors {
            std::fs::write(dir.path().join("sensors").join(name), text).unwrap();
        }
        let config_path = dir.path().join("tripline.yaml");
        std::fs::write(
            &config_path,
            config.replace("{dir}", &dir.path().display().to_string()),
        )
        .unwrap();
        Self::new(dir, config_path, env, &[])
    }

    /// Starts `tripline serve --config <config>` with extra args (the dir is
    /// kept alive with the process).
    pub async fn start_with(
        dir: TempDir,
        config: PathBuf,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Tripline {
        let mut t = Self::new(dir, config, env, args);
        t.spawn().await;
        t
    }

    /// Not started yet: picks the port.
    fn new(dir: TempDir, config: PathBuf, env: &[(&str, &str)], args: &[&str]) -> Tripline {
        Tripline {
            dir,
            port: free_port(),
            admin_port: free_port(),
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            config,
            args: args.iter().map(|s| s.to_string()).collect(),
            client: reqwest::Client::new(),
        }
    }

    /// Starts the process and waits for `/readyz`. The ports were free when
    /// picked, not reserved: should another process take one first (tripline
    /// then exits with "Address already in use"), new ones are picked and it
    /// starts again, up to three times.
    async fn spawn(&mut self) {
        for attempt in 1..=3 {
            self.spawn_process();
            match self.wait_ready().await {
                Ok(()) => return,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    self.port = free_port();
                    self.admin_port = free_port();
                }
                Err(log) => panic!("{log}"),
            }
        }
    }

    fn spawn_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tripline.log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{}", self.admin_port))
            .args(&self.args)
            .env("TRIPLINE_LOG", "info,tripline=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tripline");
        self.child = Some(child);
    }

    /// Waits for `/readyz`; `Err` with the log if the process exited first.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "tripline exited with {status} before becoming ready:\n{}",
                    self.log()
                ));
            }
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < deadline,
                "tripline not ready after 30s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `path` on the listener that serves it: `/readyz`, `/metrics`, `/status` and
    /// `/explain/…` on the admin one, everything else on the public one.
    pub fn url(&self, path: &str) -> String {
        let admin = ["/readyz", "/metrics", "/explain", "/status"]
            .iter()
            .any(|p| path.starts_with(p));
        let port = if admin { self.admin_port } else { self.port };
        format!("http://127.0.0.1:{port}{path}")
    }

    /// `path` on the public listener, whatever it is.
    pub fn public_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The `tripline.yaml` the process was started with (rewrite it to
    /// test a reload).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tripline.log")).unwrap_or_default()
    }

    /// Files in `<dir>/outbox`, sorted, with their parsed YAML.
    /// Finished objects only: the temp files tripline writes first (and
    /// links under their name once complete) are skipped, as is a file that
    /// vanished while listing.
    pub fn outbox(&self) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = std::fs::read_dir(self.dir.path().join("outbox"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".yaml"))
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        let text = std::fs::read_to_string(e.path()).ok()?;
                        Some((name, serde_yaml_ng::from_str(&text).unwrap()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The value of a counter on `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_value(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    /// Like [`Tripline::metric`], but `None` while `/metrics` does not answer
    /// (not listening yet) or lacks the counter.
    pub async fn try_metric(&self, name: &str) -> Option<u64> {
        let response = self.client.get(self.url("/metrics")).send().await.ok()?;
        metric_value(&response.text().await.ok()?, name)
    }

    /// For benchmarks: polls `counter` every 10 ms until it reaches `n`
    /// (panicking after `patience`, with the log) and returns its rate per
    /// second from the first poll that saw it above zero to the last.
    pub async fn rate_until(&self, counter: &str, n: u64, patience: Duration) -> f64 {
        let deadline = Instant::now() + patience;
        let mut first = None;
        loop {
            assert!(
                Instant::now() < deadline,
                "tripline did not reach {n} {counter}:\n{}",
                self.log()
            );
            if let Some(c) = self.try_metric(counter).await {
                if c > 0 {
                    first.get_or_insert_with(Instant::now);
                }
                if c >= n {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        n as f64 / first.expect("counted").elapsed().as_secs_f64()
    }

    /// Parsed lines of `<dir>/dead-letter.jsonl`.
    pub fn dead_letters(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("dead-letter.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// SIGTERM, then wait for exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "tripline did not stop within 30s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again with the same config, dir and ports (new ports only if
    /// another process took one meanwhile, see `spawn`).
    pub async fn restart(&mut self) {
        self.kill();
        // No pooled connection to the old process.
        self.client = reqwest::Client::new();
        self.spawn().await;
    }
}

impl Drop for Tripline {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of counter `name` in the Prometheus text `text`.
/// The sum of `name`'s samples over every label set (`name 3`,
/// `name{source="a"} 1`…); `None` when it has none.
fn metric_value(text: &str, name: &str) -> Option<u64> {
    let samples: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum::<f64>() as u64)
}

/// HMAC-SHA256 hex signature as GitHub sends it.
/// The log filter a bench runs tripline with: `TRIPLINE_BENCH_LOG`, or
/// `warn` (so that a bench measures the work, not the log; docs/performance.md
/// has the figures at the default `info` too).
pub fn bench_log() -> &'static str {
    static LOG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LOG.get_or_init(|| std::env::var("TRIPLINE_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
}

pub fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Runs the binary to completion: `(exit code, stdout, stderr)`.
pub fn run_cli(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run tripline");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// POSTs `body` to `url` with `headers`: the status and the reply as JSON (a
/// reply that is not JSON as a JSON string, so assertions print it).
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut req = client.post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let code = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// [`post_json`] to `path` on `t` ([`Tripline::url`]).
pub async fn post(
    t: &Tripline,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value) {
    post_json(&reqwest::Client::new(), &t.url(path), headers, body).await
}

/// What `tripline test --output json` said.
pub struct TestRun {
    pub code: i32,
    /// stdout as JSON (`Null` when it is not JSON).
    pub json: Value,
    pub out: String,
    pub err: String,
}

/// `tripline test SENSOR --event EVENT [ARGS…] --output json` in `cwd`;
/// `args` are further flags (`-H K=V`, `--time T`, `--config F`).
pub fn tripline_test(sensor: &Path, event: &Path, args: &[&str], cwd: &Path) -> TestRun {
    let (sensor, event) = (sensor.display().to_string(), event.display().to_string());
    let mut all = vec!["test", &sensor, "--event", &event];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let (code, out, err) = run_cli(&all, cwd);
    TestRun {
        code,
        json: serde_json::from_str(&out).unwrap_or(Value::Null),
        out,
        err,
    }
}

/// `-H K=V` for each header.
pub fn header_args<'a>(headers: &[&'a str]) -> Vec<&'a str> {
    headers.iter().flat_map(|h| ["-H", *h]).collect()
}

/// Sends a raw HTTP/1.1 request head and then `body` piece by piece over a
/// plain socket, stopping quietly when the server has closed (a 413 sent
/// early), and returns the reply's status line. For what an HTTP client
/// library would not send: a declared 10 MB body that never comes, an
/// endless chunked body.
pub fn raw_status_line(port: u16, head: &str, body: impl IntoIterator<Item = Vec<u8>>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    for piece in body {
        if s.write_all(&piece).is_err() {
            break;
        }
    }
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The harness's own retry: a port taken between being picked and being
/// listened on (another test's connection, say) makes tripline exit with
/// "Address already in use"; the start goes on with new ports.
#[tokio::test]
async fn a_port_taken_before_tripline_listens_is_picked_again() {
    let mut t = Tripline::prepare("sensors: sensors/\n", &[], &[]);
    let taken = t.port;
    let _held = std::net::TcpListener::bind(("127.0.0.1", taken)).unwrap();
    t.spawn().await;
    assert_ne!(t.port, taken);
    assert!(t.log().contains("Address already in use"), "{}", t.log());
    assert!(t
        .client
        .get(t.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
}
