//! The fault matrix (#9): thousands of events through the real binary while
//! things go wrong — tripline SIGKILLed, nats-server restarted, the
//! Kubernetes API answering 503/429 for 20 s, a poison event mid-stream —
//! and afterwards exactly one object per event, none lost, none doubled.
//! Each test prints its row of the table in `docs/operations.md`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::brokers::{
    kafka_committed_offsets, kafka_produce, nats_publish_js, Kafka, Nats,
};
use crate::support::kube_api::{Fault, KubeApi};
use crate::support::tripline::Tripline;
use crate::support::wait::{until, until_async};

/// One object per `{"key": …}` message, carrying the key.
const SENSOR: &str = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: matrix}
spec:
  dependencies:
    - {name: msg, source: queue}
  triggers:
    - name: run
      workflow: {workflowTemplateRef: batch-job}
      parameters:
        - {name: key, value: "{{body.key}}"}
      retry: {attempts: 2, backoff: 50ms, maxBackoff: 100ms}
"#;

fn payload(i: usize) -> String {
    json!({"key": format!("k-{i:05}")}).to_string()
}

fn key_of(wf: &Value) -> String {
    wf["spec"]["arguments"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "key"))
        .and_then(|p| p["value"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// `(objects, distinct keys)`; asserts the keys are exactly `0..n`.
fn one_per_key(objects: &[Value], n: usize) -> (usize, usize) {
    let keys: BTreeSet<String> = objects.iter().map(key_of).collect();
    let want: BTreeSet<String> = (0..n).map(|i| format!("k-{i:05}")).collect();
    let missing: Vec<_> = want.difference(&keys).take(5).collect();
    assert!(missing.is_empty(), "lost: {missing:?}…");
    assert_eq!(
        objects.len(),
        n,
        "{} duplicate objects",
        objects.len() - keys.len()
    );
    (objects.len(), keys.len())
}

/// Finished outbox files (temp files come and go while tripline writes).
fn outbox_files(t: &Tripline) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(t.dir.path().join("outbox"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect()
        })
        .unwrap_or_default()
}

fn outbox_count(t: &Tripline) -> usize {
    outbox_files(t).len()
}

fn outbox_objects(t: &Tripline) -> Vec<Value> {
    outbox_files(t)
        .iter()
        .map(|p| serde_yaml_ng::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

fn row(
    scenario: &str,
    events: usize,
    objects: usize,
    duplicates: usize,
    dead: usize,
    took: Duration,
) {
    println!(
        "| {scenario} | {events} | {objects} | {duplicates} | {dead} | {:.1} s |",
        took.as_secs_f64()
    );
}

fn jetstream_config(url: &str, submit: &str) -> String {
    format!(
        "sensors: sensors/
deadLetter: dead-letter.jsonl
submit: {submit}
limits: {{shutdownDeadline: 10s}}
sources:
  - type: nats
    name: queue
    urls: [{url}]
    subjects: [jobs.>]
    jetstream: {{stream: JOBS, durable: tripline, create: true, ackWait: 2s, nakDelay: 200ms, maxNakDelay: 1s, batch: 64}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_5000_events_two_sigkills_and_a_server_restart() {
    let started = Instant::now();
    let mut nats = Nats::start().await;
    let payloads: Vec<String> = (0..5000).map(payload).collect();
    let seqs = nats_publish_js(&nats.url(), "JOBS", "jobs.new", &payloads).await;
    let mut t = Tripline::start(
        &jetstream_config(&nats.url(), "{type: outbox, dir: outbox/}"),
        &[("matrix.yaml", SENSOR)],
        &[],
    )
    .await;
    for (at, what) in [(1000, "kill"), (2200, "restart nats"), (3500, "kill")] {
        until(&format!("{at} objects before the {what}"), || {
            (outbox_count(&t) >= at).then_some(())
        })
        .await;
        if what == "kill" {
            t.kill();
            t.restart().await;
        } else {
            nats.restart().await;
        }
    }
    until("5000 objects", || (outbox_count(&t) >= 5000).then_some(())).await;
    let url = nats.url();
    let last = *seqs.last().unwrap();
    until_async("every message settled", || {
        let url = url.clone();
        async move {
            let js = async_nats::jetstream::new(async_nats::connect(&url).await.ok()?);
            let info = js
                .get_stream("JOBS")
                .await
                .ok()?
                .consumer_info("tripline")
                .await
                .ok()?;
            (info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence >= last)
                .then_some(())
        }
    })
    .await;
    let objects = outbox_objects(&t);
    let (n, distinct) = one_per_key(&objects, 5000);
    assert!(t.dead_letters().is_empty());
    row(
        "JetStream → outbox; tripline SIGKILLed twice, nats-server restarted once",
        5000,
        n,
        n - distinct,
        0,
        started.elapsed(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_5000_events_on_3_partitions_two_sigkills() {
    let started = Instant::now();
    let kafka = Kafka::start(&[("jobs", 3)]).await;
    let messages: Vec<(Option<String>, String)> = (0..5000)
        .map(|i| (Some(format!("key-{}", i % 97)), payload(i)))
        .collect();
    kafka_produce(&kafka.bootstrap(), "jobs", &messages).await;
    let config = format!(
        "sensors: sensors/
deadLetter: dead-letter.jsonl
limits: {{shutdownDeadline: 10s}}
sources:
  - type: kafka
    name: queue
    brokers: {}
    topics: [jobs]
    groupId: matrix
    commitInterval: 200ms
    properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 1000}}
",
        kafka.bootstrap()
    );
    let mut t = Tripline::start(&config, &[("matrix.yaml", SENSOR)], &[]).await;
    for at in [1200, 3000] {
        until(&format!("{at} objects"), || {
            (outbox_count(&t) >= at).then_some(())
        })
        .await;
        t.kill();
        // tansu gives a killed member's partitions back only once its
        // session (6 s) expired.
        tokio::time::sleep(Duration::from_secs(7)).await;
        t.restart().await;
    }
    until("5000 objects", || (outbox_count(&t) >= 5000).then_some(())).await;
    until_async("every offset committed", || async {
        let committed = kafka_committed_offsets(&kafka.bootstrap(), "matrix", "jobs").await;
        let total: i64 = committed.iter().map(|(_, o)| o).sum();
        (committed.len() == 3 && total == 5000).then_some(())
    })
    .await;
    let objects = outbox_objects(&t);
    let (n, distinct) = one_per_key(&objects, 5000);
    assert!(t.dead_letters().is_empty());
    row(
        "Kafka (3 partitions) → outbox; tripline SIGKILLed twice",
        5000,
        n,
        n - distinct,
        0,
        started.elapsed(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_20s_while_2000_events_flow_and_a_poison_event_mid_stream() {
    let started = Instant::now();
    let nats = Nats::start().await;
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let submit = format!(
        "{{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 5s}}",
        kubeconfig.display()
    );
    let t = Tripline::start(
        &jetstream_config(&nats.url(), &submit),
        &[("matrix.yaml", SENSOR)],
        &[],
    )
    .await;
    let publish = |range: std::ops::Range<usize>| {
        let url = nats.url();
        async move {
            let payloads: Vec<String> = range.map(payload).collect();
            nats_publish_js(&url, "JOBS", "jobs.new", &payloads).await
        }
    };
    publish(0..500).await;
    until("500 objects", || {
        (api.objects("workflows").len() >= 500).then_some(())
    })
    .await;
    // 20 s of trouble: 503 for 10 s, then 429 with Retry-After for 10 s,
    // while 1500 more events and one that cannot render arrive.
    api.set_down(true);
    publish(500..1000).await;
    nats_publish_js(&nats.url(), "JOBS", "jobs.new", &[r#"{"nokey": true}"#]).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    api.set_down(false);
    api.fail_writes(Fault::TooManyRequests {
        retry_after_secs: 1,
    });
    let seqs = publish(1000..2000).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    api.recover();
    until("2000 objects", || {
        (api.objects("workflows").len() >= 2000).then_some(())
    })
    .await;
    let url = nats.url();
    let last = *seqs.last().unwrap();
    until_async("every message settled", || {
        let url = url.clone();
        async move {
            let js = async_nats::jetstream::new(async_nats::connect(&url).await.ok()?);
            let info = js
                .get_stream("JOBS")
                .await
                .ok()?
                .consumer_info("tripline")
                .await
                .ok()?;
            (info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence >= last)
                .then_some(())
        }
    })
    .await;
    let objects = api.objects("workflows");
    let (n, distinct) = one_per_key(&objects, 2000);
    let dead = t.dead_letters();
    assert_eq!(dead.len(), 1, "only the poison event: {dead:#?}");
    assert!(dead[0]["error"].as_str().unwrap().contains("render failed"));
    assert_eq!(
        t.metric("tripline_objects_expired_total").await,
        0,
        "none given up"
    );
    row(
        "JetStream → Kubernetes API; API 503 for 10 s then 429 for 10 s; one event that cannot render",
        2001,
        n,
        n - distinct,
        dead.len(),
        started.elapsed(),
    );
}
