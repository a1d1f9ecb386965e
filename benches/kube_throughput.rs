//! Event → Kubernetes API: tripline's submit throughput against a raw `kube`
//! client POST loop, in the same run, both against the API double (which
//! answers 201 at once; ConfigMaps, so no Workflow schema check weighs on
//! either side), with events coming two ways: as webhooks sent by this
//! process (the whole HTTP intake on the same two cores), and from Kafka,
//! produced beforehand (the submit path with a cheap intake). The webhook
//! path is also measured against the least any webhook → Kubernetes
//! forwarder does ([`forwarder`]: receive, read the JSON, POST, answer —
//! in a process of its own, as tripline is), which tells what receiving
//! costs apart from what tripline adds. Then the
//! latency of event → object created at a fixed rate of 1 000 events/s
//! (open loop: events are sent on schedule, not when the previous one is
//! done), p50/p99 of the webhook round trip, which includes the POST.
//!
//! `cargo bench --bench kube_throughput` (run by `cargo test` it does a
//! short smoke run instead); with `TRIPLINE_BENCH_CSV=<dir>` it also writes
//! the latencies for `bench/plot.py`; `TRIPLINE_BENCH_MESSAGES` sets the
//! objects per run (50 000: shorter runs of the raw loop swung ±15 % between
//! its run before and its run after).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use k8s_openapi::api::core::v1::ConfigMap;

#[path = "../tests/it/support/mod.rs"]
mod support;

use support::brokers::{free_port, kafka_produce_many, Kafka};
use support::kube_api::KubeApi;
use support::peer::{wait_up, PeerProcess};
use support::tripline::{bench_log, post_json, Tripline};

const CONCURRENCY: usize = 32;

/// Raw `kube` client: `n` ConfigMap POSTs, `CONCURRENCY` in flight.
async fn raw_kube(api: &KubeApi, n: usize, prefix: &'static str) -> f64 {
    let kc = kube::config::Kubeconfig::from_yaml(&api.kubeconfig_yaml()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, "default");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (cms, next) = (cms.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let cm: k8s_openapi::api::core::v1::ConfigMap =
                        serde_json::from_value(serde_json::json!({
                            "apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": format!("{prefix}-{i}")},
                            "data": {"n": i.to_string()}
                        }))
                        .unwrap();
                    cms.create(&Default::default(), &cm).await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The peer of tripline's webhook path: an HTTP server that takes an event,
/// reads its JSON, POSTs one ConfigMap with the `kube` client and answers
/// with the outcome (in tripline's reply shape, so [`through_http`] checks
/// both alike) — no matching, rendering, names, retries or accounting.
/// Served by this bench started again with `TRIPLINE_BENCH_FORWARDER=<port>
/// <kubeconfig>`, on a two-worker runtime as tripline's.
async fn forwarder(port: u16, kubeconfig: &str) {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let cms: kube::Api<ConfigMap> =
        kube::Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let next = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/events/events",
        axum::routing::post(move |body: Bytes| {
            let (cms, i) = (cms.clone(), next.fetch_add(1, Ordering::Relaxed));
            async move {
                let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    return (
                        StatusCode::BAD_REQUEST,
                        "{\"error\":\"not JSON\"}".to_string(),
                    );
                };
                let cm = ConfigMap {
                    metadata: kube::api::ObjectMeta {
                        name: Some(format!("forwarded-{i}")),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([("n".to_string(), event["n"].to_string())])),
                    ..Default::default()
                };
                match cms.create(&Default::default(), &cm).await {
                    Ok(_) => (
                        StatusCode::OK,
                        "{\"matched\":[{\"status\":\"created\"}]}".to_string(),
                    ),
                    Err(e) => (
                        StatusCode::BAD_GATEWAY,
                        serde_json::json!({"error": e.to_string()}).to_string(),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}

/// `n` events POSTed to `url` (tripline: webhook → match → render → POST;
/// or the forwarder), with `CONCURRENCY` in flight; every reply must say
/// `created`.
async fn through_http(url: &str, n: usize, offset: usize) -> f64 {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(offset));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, next, url) = (client.clone(), next.clone(), url.to_string());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= offset + n {
                        break;
                    }
                    let (_, reply) = post_json(
                        &client,
                        &url,
                        &[("Content-Type", "application/json")],
                        format!("{{\"n\": {i}}}"),
                    )
                    .await;
                    assert_eq!(reply["matched"][0]["status"], "created", "{reply}");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `n` events pre-produced to Kafka (4 partitions × `maxInFlight` 8 =
/// `CONCURRENCY` in flight) through a tripline of their own to the API,
/// timed from the first object created to the last.
async fn through_kafka(kubeconfig: &std::path::Path, n: usize) -> f64 {
    let mut broker = Kafka::start(&[("events", 4)]).await;
    let bootstrap = broker.bootstrap();
    kafka_produce_many(&bootstrap, "events", n, |i| format!("{{\"n\": {i}}}")).await;
    let mut t = Tripline::launch(
        &format!(
            "sensors: sensors/
submit: {{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 10s}}
limits: {{maxInFlight: 256}}
sources:
  - type: kafka
    name: queue
    brokers: {bootstrap}
    topics: [events]
    groupId: bench
    maxInFlight: {}
    properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 1000}}
",
            kubeconfig.display(),
            CONCURRENCY / 4
        ),
        &[("bench.yaml", &sensor("queue"))],
        &[("TRIPLINE_LOG", bench_log())],
    );
    let rate = t
        .rate_until(
            "tripline_objects_created_total",
            n as u64,
            Duration::from_secs(300),
        )
        .await;
    t.terminate();
    broker.stop().await;
    rate
}

/// The bench's sensor: a ConfigMap per event of `source`.
fn sensor(source: &str) -> String {
    format!(
        "apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {{name: bench}}
spec:
  dependencies: [{{name: e, source: {source}}}]
  triggers:
    - name: cm
      workflow:
        manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{generateName: bench-}}, data: {{n: placeholder}}}}
      parameters:
        - {{name: n, value: '{{{{body.n}}}}', dest: data.n}}
"
    )
}

/// Events at `rate`/s for `seconds`, each on its own schedule; the webhook
/// round trips (event in → object created → reply), sorted.
async fn paced(url: &str, rate: u64, seconds: u64, offset: usize) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = Vec::new();
    for i in 0..(rate * seconds) as usize {
        tick.tick().await;
        let (client, url) = (client.clone(), url.to_string());
        sent.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = client
                .post(&url)
                .header("Content-Type", "application/json")
                .body(format!("{{\"n\": {}}}", offset + i))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            started.elapsed()
        }));
    }
    let mut latencies = Vec::new();
    for s in sent {
        latencies.push(s.await.unwrap());
    }
    latencies.sort();
    latencies
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, seconds) = if full { (50_000, 5) } else { (200, 1) };
    let n = std::env::var("TRIPLINE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    if let Ok(args) = std::env::var("TRIPLINE_BENCH_FORWARDER") {
        let (port, kubeconfig) = args.split_once(' ').expect("<port> <kubeconfig>");
        return forwarder(port.parse().unwrap(), kubeconfig).await;
    }
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let t = Tripline::start(
        &format!(
            "sensors: sensors/\nsubmit: {{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 10s}}\nlimits: {{maxInFlight: 256}}\nsources: [{{type: http, name: events}}]\n",
            kubeconfig.display()
        ),
        &[("bench.yaml", &sensor("events"))],
        &[("TRIPLINE_LOG", bench_log())],
    )
    .await;
    let url = t.url("/events/events");
    let forwarder_port = free_port();
    let forwarder = PeerProcess::this_bench_with(
        "TRIPLINE_BENCH_FORWARDER",
        &format!("{forwarder_port} {}", kubeconfig.display()),
    );
    let forwarder_url = format!("http://127.0.0.1:{forwarder_port}/events/events");
    wait_up(&forwarder_url).await;
    // Warm-up every side (connections, discovery).
    raw_kube(&api, n / 10, "warm").await;
    let raw_before = raw_kube(&api, n, "raw").await;
    through_http(&forwarder_url, n / 10, 0).await;
    let forwarded_before = through_http(&forwarder_url, n, 0).await;
    through_http(&url, n / 10, 10_000_000).await;
    let ours = through_http(&url, n, 0).await;
    // The forwarder again after tripline (ratio against the mean).
    let forwarded_after = through_http(&forwarder_url, n, 0).await;
    drop(forwarder);
    let forwarded = (forwarded_before + forwarded_after) / 2.0;
    let latencies = paced(&url, 1_000, seconds, 20_000_000).await;
    drop(t);
    let from_kafka = through_kafka(&kubeconfig, n).await;
    // The raw loop again, now that the double holds every object so far:
    // ratios are against the mean of the two.
    let raw_after = raw_kube(&api, n, "raw-after").await;
    let raw = (raw_before + raw_after) / 2.0;
    let created = api.objects("configmaps").len();
    assert_eq!(
        created,
        n / 10 + n + (n / 10 + 2 * n) + n / 10 + n + latencies.len() + n + n,
        "one object per POST and per event"
    );
    if let (true, Ok(dir)) = (full, std::env::var("TRIPLINE_BENCH_CSV")) {
        std::fs::create_dir_all(&dir).unwrap();
        let rows: Vec<String> = latencies
            .iter()
            .map(|l| format!("{}", l.as_micros()))
            .collect();
        std::fs::write(
            std::path::Path::new(&dir).join("kube_latency_us.csv"),
            format!("latency_us\n{}\n", rows.join("\n")),
        )
        .unwrap();
        std::fs::write(
            std::path::Path::new(&dir).join("kube_throughput.csv"),
            format!("side,objects_per_s\nraw kube,{raw:.0}\nwebhook forwarder,{forwarded:.0}\ntripline,{ours:.0}\ntripline from kafka,{from_kafka:.0}\n"),
        )
        .unwrap();
    }
    println!("ConfigMaps to the API double (201 at once), {CONCURRENCY} in flight, {n} objects:");
    println!("  raw kube client POST loop        {raw:>9.0} objects/s  (before {raw_before:.0}, after {raw_after:.0})");
    println!("  forwarder webhook -> POST        {forwarded:>9.0} objects/s  (receive, read JSON, POST, answer; before {forwarded_before:.0}, after {forwarded_after:.0})");
    println!(
        "  tripline webhook -> API POST     {ours:>9.0} objects/s  ({:.2} of raw, {:.2} of the forwarder)",
        ours / raw,
        ours / forwarded
    );
    println!(
        "  tripline kafka -> API POST       {from_kafka:>9.0} objects/s  ({:.2} of raw)",
        from_kafka / raw
    );
    println!(
        "  at 1 000 events/s for {seconds} s: event -> created -> reply p50 {:?}, p99 {:?}, max {:?}",
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        latencies.last().unwrap()
    );
}
