//! JetStream throughput of the real binary, against the limit measured in the
//! same run: a bare async-nats consumer that fetches in batches and acks each
//! message without doing anything with it.
//!
//! tripline's path per message: fetch (batches of 64, 64 in flight), envelope,
//! match against the `data-arrival-nats` example sensor, render its Workflow,
//! write it to the outbox (one fsync'd file per message), ack (confirmed by
//! the server). A second run with a sensor that matches nothing measures the
//! NATS path alone (fetch, envelope, match, ack). Its rate is taken
//! from the durable consumer's ack floor, from the first delivery to the last
//! ack, so process start-up is not counted.
//!
//! `cargo bench --bench nats_throughput` (run by `cargo test` it does a short
//! smoke run instead). Needs `nats-server` (`scripts/install-deps.sh`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;

const STREAM: &str = "STORAGE";
const SUBJECT: &str = "storage.objects.created.raw";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `$NATS_SERVER`, else `nats-server` on PATH or in /usr/sbin (Debian).
fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER") {
        return bin.into();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .expect("nats-server not found: run scripts/install-deps.sh")
}

/// Kills the child (by its PID) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_nats(dir: &Path) -> (Killed, String) {
    let port = free_port();
    let server = Killed(
        Command::new(nats_server_bin())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server"),
    );
    let url = format!("nats://127.0.0.1:{port}");
    for _ in 0..400 {
        if let Ok(c) = async_nats::connect(&url).await {
            if let Ok(m) = c.request("$JS.API.INFO", "".into()).await {
                if !String::from_utf8_lossy(&m.payload).contains("\"error\"") {
                    return (server, url);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nats-server did not start");
}

/// Publishes `n` "new object" notifications, acks awaited in windows of 1000.
async fn publish(js: &jetstream::Context, n: usize) {
    let mut acks = Vec::with_capacity(1000);
    for i in 0..n {
        let body = format!(
            r#"{{"bucket":"raw","key":"bench/{i:07}.csv","size":{}}}"#,
            1000 + i
        );
        acks.push(js.publish(SUBJECT, body.into()).await.unwrap());
        if acks.len() == 1000 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

/// The limit: fetch batches of 64 and ack each message, nothing else.
async fn raw_consumer(stream: &stream::Stream, n: usize) -> f64 {
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("raw".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    let mut got = 0;
    while got < n {
        // Everything is already stored: `fetch` returns at once, even short.
        let mut batch = consumer.fetch().max_messages(64).messages().await.unwrap();
        while let Some(m) = batch.next().await {
            m.unwrap().ack().await.unwrap();
            got += 1;
        }
    }
    // Every ack confirmed by the server before the clock stops.
    loop {
        let info = stream.consumer_info("raw").await.unwrap();
        if info.ack_floor.stream_sequence >= n as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The `data-arrival-nats` example's sensor; with `matching: false` its
/// bucket filter accepts no bucket, so nothing fires.
fn sensor(matching: bool) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/data-arrival-nats/sensors/data-arrival.yaml"
    ))
    .unwrap();
    if matching {
        text
    } else {
        text.replace("in: [raw, landing]", "in: [no-such-bucket]")
    }
}

fn start_tripline(dir: &Path, url: &str, durable: &str, sensor: &str) -> Killed {
    std::fs::create_dir_all(dir.join("sensors")).unwrap();
    std::fs::write(dir.join("sensors/data-arrival.yaml"), sensor).unwrap();
    std::fs::write(
        dir.join("tripline.yaml"),
        format!(
            "sensors: sensors/\nsubmit: {{type: outbox, dir: outbox/}}\nsources:\n  - type: nats\n    name: bucket-events\n    urls: [{url}]\n    subjects: [storage.objects.created.>]\n    jetstream: {{stream: {STREAM}, durable: {durable}, create: true, batch: 64, maxInFlight: 64}}\n"
        ),
    )
    .unwrap();
    Killed(
        Command::new(env!("CARGO_BIN_EXE_tripline"))
            .args(["serve", "--config"])
            .arg(dir.join("tripline.yaml"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--log", "warn"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// tripline's rate from the consumer's ack floor: from the first message
/// delivered to the last one acked.
async fn tripline_rate(stream: &stream::Stream, durable: &str, n: usize) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, u64)> = None;
    loop {
        assert!(Instant::now() < deadline, "tripline did not finish");
        if let Ok(info) = stream.consumer_info(durable).await {
            let now = Instant::now();
            let acked = info.ack_floor.stream_sequence;
            if first.is_none() && info.delivered.stream_sequence > 0 {
                first = Some((now, acked));
            }
            if acked >= n as u64 {
                let (t0, acked0) = first.unwrap_or((now, 0));
                return (n as u64 - acked0) as f64 / (now - t0).as_secs_f64();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 20_000 } else { 300 };
    let dir = tempfile::tempdir().unwrap();
    let (_nats, url) = start_nats(dir.path()).await;
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["storage.objects.created.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    publish(&js, n).await;

    let raw = raw_consumer(&stream, n).await;

    let miss_dir = tempfile::tempdir().unwrap();
    let miss = start_tripline(miss_dir.path(), &url, "tripline-miss", &sensor(false));
    let miss_rate = tripline_rate(&stream, "tripline-miss", n).await;
    drop(miss);
    assert!(
        !miss_dir.path().join("outbox").exists()
            || std::fs::read_dir(miss_dir.path().join("outbox"))
                .unwrap()
                .count()
                == 0
    );

    let hit_dir = tempfile::tempdir().unwrap();
    let hit = start_tripline(hit_dir.path(), &url, "tripline", &sensor(true));
    let hit_rate = tripline_rate(&stream, "tripline", n).await;
    drop(hit);
    let written = std::fs::read_dir(hit_dir.path().join("outbox"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(written, n, "one Workflow per message");

    println!("JetStream, file storage, {n} messages (~60 bytes), one nats-server:");
    println!("  raw async-nats consumer (fetch 64 + ack)     {raw:>9.0} msg/s");
    println!(
        "  tripline, nothing matches (fetch, envelope,  {miss_rate:>9.0} msg/s  ({:.2} of raw)",
        miss_rate / raw
    );
    println!("    match, ack; 64 in flight)");
    println!(
        "  tripline -> outbox (match, render, write +   {hit_rate:>9.0} msg/s  ({:.2} of raw)",
        hit_rate / raw
    );
    println!("    fsync one YAML file per message, confirmed ack)");
}
