//! Multi-dependency triggers (#11): durable, exactly once, shared by every
//! replica. Pairs over webhooks, JetStream and Kafka; a transient failure on
//! the completing event; SIGKILL between the halves of a pair; redelivery of
//! consumed events; two processes sharing a NATS KV bucket; keyed pairs;
//! window expiry.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::brokers::{kafka_produce, nats_publish_js, Kafka, Nats};
use crate::support::kube_api::KubeApi;
use crate::support::tripline::Tripline;
use crate::support::wait::until;

/// `code && data` from one source, optionally keyed by `body.id`; the
/// object carries both events' `n`.
fn pair_sensor(source: &str, keyed: bool, window: &str) -> String {
    let key = if keyed { ", key: \"{{body.id}}\"" } else { "" };
    format!(
        r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {{name: pairs}}
spec:
  correlationWindow: {window}
  dependencies:
    - {{name: code, source: {source}, filters: {{path: body.kind, equals: code}}{key}}}
    - {{name: data, source: {source}, filters: {{path: body.kind, equals: data}}{key}}}
  triggers:
    - name: both
      when: code && data
      workflow:
        manifest: {{apiVersion: v1, kind: ConfigMap, data: {{}}}}
      parameters:
        - {{name: code, value: "{{{{code.body.n}}}}", dest: data.code}}
        - {{name: data, value: "{{{{data.body.n}}}}", dest: data.data}}
      retry: {{attempts: 2, backoff: 50ms, maxBackoff: 100ms}}
"#
    )
}

fn msg(kind: &str, n: &str) -> Value {
    // `id` pairs keyed events: `p-0007` for code-0007 and data-0007.
    json!({"kind": kind, "n": format!("{kind}-{n}"), "id": format!("p-{n}")})
}

/// `(code, data)` of every object in the outbox.
fn pairs(t: &Tripline) -> Vec<(String, String)> {
    t.outbox()
        .into_iter()
        .map(|(_, o)| {
            (
                o["data"]["code"].as_str().unwrap().to_string(),
                o["data"]["data"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn post(t: &Tripline, body: &Value, id: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(t.url("/events/hook"))
        .header("Content-Type", "application/json")
        .header("X-Delivery", id)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

const HTTP: &str = "sensors: sensors/\ndeadLetter: dead-letter.jsonl\nsources: [{type: http, name: hook, idHeader: X-Delivery}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_pairs_fire_once_survive_a_sigkill_and_ignore_consumed_redeliveries() {
    let mut t = Tripline::start(
        HTTP,
        &[("pairs.yaml", &pair_sensor("hook", false, "10m"))],
        &[],
    )
    .await;
    let (code, reply) = post(&t, &msg("code", "1"), "c-1").await;
    assert_eq!(code, 200);
    assert_eq!(reply["matched"][0]["status"], "waiting", "{reply}");
    assert!(reply["matched"][0]["message"]
        .as_str()
        .unwrap()
        .contains("still missing data"));
    // Killed between the halves: the stored half survives.
    t.kill();
    t.restart().await;
    let (_, reply) = post(&t, &msg("data", "1"), "d-1").await;
    assert_eq!(reply["matched"][0]["status"], "created", "{reply}");
    assert_eq!(pairs(&t), [("code-1".into(), "data-1".into())]);
    // A redelivery of a consumed event: done, not stored again — so the next
    // `code` waits instead of pairing with the old `data`.
    let (_, reply) = post(&t, &msg("data", "1"), "d-1").await;
    assert_eq!(reply["matched"][0]["status"], "existing", "{reply}");
    let (_, reply) = post(&t, &msg("code", "2"), "c-2").await;
    assert_eq!(reply["matched"][0]["status"], "waiting", "{reply}");
    assert_eq!(pairs(&t).len(), 1);
    let metrics = reqwest::get(t.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tripline_correlation_waiting{sensor=\"pairs\",trigger=\"both\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_on_the_completing_event_still_fires_exactly_once() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let config = format!(
        "sensors: sensors/\ndeadLetter: dead-letter.jsonl\nsubmit: {{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 5s}}\nsources: [{{type: http, name: hook, idHeader: X-Delivery}}]\n",
        kubeconfig.display()
    );
    let t = Tripline::start(
        &config,
        &[("pairs.yaml", &pair_sensor("hook", false, "10m"))],
        &[],
    )
    .await;
    post(&t, &msg("code", "1"), "c-1").await;
    api.set_down(true);
    let (code, reply) = post(&t, &msg("data", "1"), "d-1").await;
    assert_eq!(code, 202, "queued, the firing pending: {reply}");
    // The sender resends while the API is still down: still the same pair.
    let (code, _) = post(&t, &msg("data", "1"), "d-1").await;
    assert_eq!(code, 202);
    api.set_down(false);
    until("the object", || {
        (!api.objects("configmaps").is_empty()).then_some(())
    })
    .await;
    // The journal replay and a resend find it done.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, reply) = post(&t, &msg("data", "1"), "d-1").await;
    assert_eq!(code, 200);
    assert_eq!(reply["matched"][0]["status"], "existing", "{reply}");
    let objects = api.objects("configmaps");
    assert_eq!(objects.len(), 1, "{objects:#?}");
    assert_eq!(objects[0]["data"]["code"], "code-1");
    assert_eq!(objects[0]["data"]["data"], "data-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_half_older_than_the_window_does_not_pair() {
    let t = Tripline::start(
        HTTP,
        &[("pairs.yaml", &pair_sensor("hook", false, "1s"))],
        &[],
    )
    .await;
    post(&t, &msg("code", "1"), "c-1").await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, reply) = post(&t, &msg("data", "1"), "d-1").await;
    assert_eq!(reply["matched"][0]["status"], "waiting", "{reply}");
    let (_, reply) = post(&t, &msg("code", "2"), "c-2").await;
    assert_eq!(reply["matched"][0]["status"], "created", "{reply}");
    assert_eq!(pairs(&t), [("code-2".into(), "data-1".into())]);
}

fn js_config(url: &str, store: &str) -> String {
    format!(
        "sensors: sensors/
deadLetter: dead-letter.jsonl
correlation: {store}
limits: {{shutdownDeadline: 10s}}
sources:
  - type: nats
    name: queue
    urls: [{url}]
    subjects: [pairs.>]
    jetstream: {{stream: PAIRS, durable: tripline, create: true, ackWait: 2s, nakDelay: 200ms, maxNakDelay: 1s, batch: 1, maxInFlight: 1}}
"
    )
}

/// 50 keyed pairs on JetStream, in order `a0 b0 a1 b1 …`, with tripline
/// SIGKILLed between the halves of a few pairs: 50 objects, each joining
/// the two events of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_pairs_on_jetstream_with_sigkills_between_halves() {
    let nats = Nats::start().await;
    let mut t = Tripline::start(
        &js_config(&nats.url(), "{store: local, dir: correlation/}"),
        &[("pairs.yaml", &pair_sensor("queue", true, "10m"))],
        &[],
    )
    .await;
    for i in 0..50 {
        let n = format!("{i:04}");
        nats_publish_js(
            &nats.url(),
            "PAIRS",
            "pairs.new",
            &[msg("code", &n).to_string()],
        )
        .await;
        if [7, 19, 33].contains(&i) {
            until_stored(&t, "pairs", "both").await;
            t.kill();
            t.restart().await;
        }
        nats_publish_js(
            &nats.url(),
            "PAIRS",
            "pairs.new",
            &[msg("data", &n).to_string()],
        )
        .await;
    }
    until("50 objects", || (t.outbox().len() >= 50).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = pairs(&t);
    assert_eq!(got.len(), 50, "{got:?}");
    for (code, data) in &got {
        assert_eq!(
            code.trim_start_matches("code-"),
            data.trim_start_matches("data-"),
            "mixed pair"
        );
    }
}

/// Waits until tripline reports a stored half for `sensor/trigger`.
async fn until_stored(t: &Tripline, sensor: &str, trigger: &str) {
    let line =
        format!("tripline_correlation_waiting{{sensor=\"{sensor}\",trigger=\"{trigger}\"}} 1");
    crate::support::wait::until_async("a stored half", || {
        let (url, line) = (t.url("/metrics"), line.clone());
        async move {
            let m = reqwest::get(url).await.ok()?.text().await.ok()?;
            m.contains(&line).then_some(())
        }
    })
    .await;
}

/// Two processes sharing one NATS KV bucket; the halves of each of 500 keyed
/// pairs go to different processes: exactly 500 objects, each joining its
/// own two events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_kv_bucket_pair_500_split_pairs_once() {
    let nats = Nats::start().await;
    let outbox = tempfile::tempdir().unwrap();
    let config = format!(
        "sensors: sensors/\ndeadLetter: dead-letter.jsonl\nsubmit: {{type: outbox, dir: {}}}\ncorrelation: {{store: nats, urls: [{}], bucket: pairs}}\nsources: [{{type: http, name: hook, idHeader: X-Delivery}}]\n",
        outbox.path().display(),
        nats.url()
    );
    let sensor = pair_sensor("hook", true, "10m");
    let a = Tripline::start(&config, &[("pairs.yaml", &sensor)], &[]).await;
    let b = Tripline::start(&config, &[("pairs.yaml", &sensor)], &[]).await;
    let client = reqwest::Client::new();
    let send = |url: String, body: Value, id: String| {
        let client = client.clone();
        async move {
            let r = client
                .post(url)
                .header("Content-Type", "application/json")
                .header("X-Delivery", id)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    for chunk in (0..500).collect::<Vec<_>>().chunks(25) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let n = format!("{i:04}");
            // Halves to different processes, at the same time.
            tasks.push(tokio::spawn(send(
                a.url("/events/hook"),
                msg("code", &n),
                format!("c-{n}"),
            )));
            tasks.push(tokio::spawn(send(
                b.url("/events/hook"),
                msg("data", &n),
                format!("d-{n}"),
            )));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 200);
        }
    }
    let files = || -> Vec<Value> {
        std::fs::read_dir(outbox.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".yaml"))
            .map(|e| serde_yaml_ng::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap())
            .collect()
    };
    until("500 objects", || (files().len() >= 500).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let objects = files();
    assert_eq!(objects.len(), 500);
    let keys: BTreeSet<String> = objects
        .iter()
        .map(|o| {
            let code = o["data"]["code"]
                .as_str()
                .unwrap()
                .trim_start_matches("code-")
                .to_string();
            let data = o["data"]["data"]
                .as_str()
                .unwrap()
                .trim_start_matches("data-")
                .to_string();
            assert_eq!(code, data, "mixed pair");
            code
        })
        .collect();
    assert_eq!(keys.len(), 500);
    let created = a.metric("tripline_objects_created_total").await
        + b.metric("tripline_objects_created_total").await;
    assert_eq!(created, 500, "exactly one process claimed each firing");
}

/// A pair over Kafka: fires once per complete pair, and a consumed event
/// redelivered after the group restarts from an earlier offset does not
/// pair again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_pairs_fire_once_per_complete_pair() {
    let kafka = Kafka::start(&[("pairs", 1)]).await;
    let config = format!(
        "sensors: sensors/
limits: {{shutdownDeadline: 10s}}
sources:
  - type: kafka
    name: queue
    brokers: {}
    topics: [pairs]
    groupId: pairs
    maxInFlight: 1
    commitInterval: 200ms
    properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 1000}}
",
        kafka.bootstrap()
    );
    let t = Tripline::start(
        &config,
        &[("pairs.yaml", &pair_sensor("queue", true, "10m"))],
        &[],
    )
    .await;
    let messages: Vec<(Option<String>, String)> = (0..20)
        .flat_map(|i| {
            let n = format!("{i:04}");
            [msg("code", &n), msg("data", &n)].map(|m| (None, m.to_string()))
        })
        .collect();
    kafka_produce(&kafka.bootstrap(), "pairs", &messages).await;
    until("20 objects", || (t.outbox().len() >= 20).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = pairs(&t);
    assert_eq!(got.len(), 20);
    assert!(got
        .iter()
        .all(|(c, d)| c.trim_start_matches("code-") == d.trim_start_matches("data-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_store_keeps_a_half_through_a_sigkill() {
    let nats = Nats::start().await;
    let config = format!(
        "sensors: sensors/\ncorrelation: {{store: nats, urls: [{}], bucket: halves}}\nsources: [{{type: http, name: hook, idHeader: X-Delivery}}]\n",
        nats.url()
    );
    let mut t = Tripline::start(
        &config,
        &[("pairs.yaml", &pair_sensor("hook", true, "10m"))],
        &[],
    )
    .await;
    let (_, reply) = post(&t, &msg("code", "1"), "c-1").await;
    assert_eq!(reply["matched"][0]["status"], "waiting", "{reply}");
    assert!(
        reply["matched"][0]["message"]
            .as_str()
            .unwrap()
            .contains("key `p-1`"),
        "{reply}"
    );
    t.kill();
    t.restart().await;
    let (_, reply) = post(&t, &msg("data", "1"), "d-1").await;
    assert_eq!(reply["matched"][0]["status"], "created", "{reply}");
    // Another key's half does not complete key p-1's pair again.
    let (_, reply) = post(&t, &msg("data", "2"), "d-2").await;
    assert_eq!(reply["matched"][0]["status"], "waiting", "{reply}");
    assert_eq!(pairs(&t), [("code-1".into(), "data-1".into())]);
}
