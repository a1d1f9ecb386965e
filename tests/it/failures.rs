//! The failure paths of #9, one test per kind of failure, each through the
//! real binary: unsafe names from event data, failures classified by cause
//! (infrastructure is retried and shown, never dead-lettered; an object too
//! large for etcd is dead-lettered at once), name collisions, the retry
//! budget, credentials kept out of events, poison broker messages that must
//! not pin a partition, memory bounded by the limits, and `validate`
//! refusing what `serve` would trip on.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::brokers::{kafka_committed_offsets, Kafka, Nats};
use crate::support::kube_api::{Fault, KubeApi};
use crate::support::tripline::{post, run_cli, Tripline};
use crate::support::wait::{peak_rss, until, until_async};

async fn readyz(t: &Tripline) -> (u16, Value) {
    let r = reqwest::get(t.url("/readyz")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// A ConfigMap whose namespace comes from the event, with and without an
/// allow-list.
const NAMESPACE_SENSOR: &str = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: ns-from-event}
spec:
  dependencies:
    - {name: req, source: hook}
  triggers:
    - name: anywhere
      workflow:
        manifest: {apiVersion: v1, kind: ConfigMap, data: {}}
      parameters:
        - {name: ns, value: "{{body.ns}}", dest: metadata.namespace}
    - name: fenced
      allowedNamespaces: [ml, default]
      workflow:
        manifest: {apiVersion: v1, kind: ConfigMap, data: {}}
      parameters:
        - {name: ns, value: "{{body.ns}}", dest: metadata.namespace}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_cannot_steer_objects_outside_their_place() {
    let t = Tripline::start(
        "sensors: sensors/\ndeadLetter: dead-letter.jsonl\nsources: [{type: http, name: hook}]\n",
        &[("ns.yaml", NAMESPACE_SENSOR)],
        &[],
    )
    .await;
    for (i, ns) in ["../escaped", "a/b", &"n".repeat(300)]
        .into_iter()
        .enumerate()
    {
        let body = json!({"ns": ns, "i": i}).to_string().into_bytes();
        let (code, reply) = post(&t, "/events/hook", &[JSON], body).await;
        assert_eq!(code, 200, "{ns}: a final rejection, not a retry: {reply}");
        for m in reply["matched"].as_array().unwrap() {
            assert_eq!(m["status"], "invalid", "{reply}");
        }
    }
    let escaped = t.dir.path().join("escaped.configmap");
    let outside: Vec<_> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("configmap"))
        .collect();
    assert!(
        outside.is_empty(),
        "written outside the outbox: {outside:?}"
    );
    assert!(!escaped.exists());
    assert!(t.outbox().is_empty(), "{:?}", t.outbox());
    let dl = t.dead_letters();
    assert_eq!(dl.len(), 6, "two triggers × three events: {dl:#?}");
    assert!(dl.iter().any(|d| d["error"]
        .as_str()
        .unwrap()
        .contains("metadata.namespace: Invalid value")));

    // The allow-list: `ops` is a fine name but not allowed for `fenced`.
    let (code, reply) = post(&t, "/events/hook", &[JSON], br#"{"ns":"ops"}"#.to_vec()).await;
    assert_eq!(code, 200, "{reply}");
    let by_trigger = |name: &str| {
        reply["matched"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["trigger"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by_trigger("anywhere")["status"], "created");
    assert_eq!(by_trigger("fenced")["status"], "invalid");
    assert!(by_trigger("fenced")["message"]
        .as_str()
        .unwrap()
        .contains("not one of allowedNamespaces (ml, default)"));
    let (code, reply) = post(&t, "/events/hook", &[JSON], br#"{"ns":"ml"}"#.to_vec()).await;
    assert_eq!(code, 200, "{reply}");
    let files: Vec<String> = t.outbox().into_iter().map(|(n, _)| n).collect();
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files
        .iter()
        .all(|f| f.starts_with("ops.") || f.starts_with("ml.")));
}

const WORKFLOW_SENSOR: &str = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: runs}
spec:
  dependencies:
    - {name: req, source: hook}
  triggers:
    - name: run
      workflow: {workflowTemplateRef: batch-job}
      parameters:
        - {name: key, value: "{{body.key}}"}
      retry: {attempts: 2, backoff: 20ms, maxBackoff: 50ms}
"#;

fn kube_config(kubeconfig: &std::path::Path, extra_limits: &str) -> String {
    format!(
        "sensors: sensors/
deadLetter: dead-letter.jsonl
submit: {{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 5s}}
limits: {{shutdownDeadline: 5s{extra_limits}}}
sources: [{{type: http, name: hook, idHeader: X-Delivery}}]
",
        kubeconfig.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infrastructure_faults_are_retried_and_shown_never_dead_lettered() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let t = Tripline::start(
        &kube_config(&kubeconfig, ""),
        &[("runs.yaml", WORKFLOW_SENSOR)],
        &[],
    )
    .await;

    // RBAC not yet propagated: 403 on every create. Each delivery is queued
    // in the journal (202) and retried from there.
    api.fail_writes(Fault::Status(403));
    for i in 0..30 {
        let id = format!("d-{i}");
        let body = json!({"key": format!("k{i}")}).to_string().into_bytes();
        let (code, reply) = post(&t, "/events/hook", &[JSON, ("X-Delivery", &id)], body).await;
        assert_eq!(code, 202, "queued: {reply}");
        assert_eq!(reply["matched"][0]["status"], "queued");
    }
    assert!(t.dead_letters().is_empty(), "not the events' fault");
    let (code, ready) = readyz(&t).await;
    assert_eq!(code, 503, "{ready}");
    let detail = ready["sources"]["submit"]["detail"].as_str().unwrap();
    assert!(detail.contains("403"), "{detail}");
    assert!(
        t.metric("tripline_submit_infrastructure_errors_total")
            .await
            >= 30
    );
    // One log line for the outage (with a count), not one per request —
    // neither from tripline nor from the kube client.
    let log = t.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .count();
    assert!(lines <= 3, "log flood: {lines} lines\n{log}");

    // Fixed: the same deliveries go through, and readiness comes back.
    api.recover();
    let (code, reply) = post(
        &t,
        "/events/hook",
        &[JSON, ("X-Delivery", "d-0")],
        br#"{"key":"k0"}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["matched"][0]["status"], "created");
    assert_eq!(readyz(&t).await.0, 200);

    // etcd refusing an object over its size limit: no retry makes it fit.
    api.fail_next(
        1,
        Fault::Answer {
            code: 500,
            reason: "InternalError",
            message: "etcdserver: request is too large",
        },
    );
    let (code, reply) = post(
        &t,
        "/events/hook",
        &[JSON, ("X-Delivery", "big")],
        br#"{"key":"big"}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["matched"][0]["status"], "invalid");
    let dl = t.dead_letters();
    assert_eq!(dl.len(), 1, "{dl:#?}");
    assert!(dl[0]["error"]
        .as_str()
        .unwrap()
        .contains("request is too large"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_held_by_another_event_is_a_collision_not_existing() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let t = Tripline::start(
        &kube_config(&kubeconfig, ""),
        &[("runs.yaml", WORKFLOW_SENSOR)],
        &[],
    )
    .await;
    let headers = [JSON, ("X-Delivery", "d-1")];
    let body = br#"{"key":"k1"}"#.to_vec();
    // What tripline would create for this delivery, squatted by another
    // event's object under the same name.
    let (code, explained) = post(&t, "/explain/hook", &headers, body.clone()).await;
    assert_eq!(code, 200, "{explained}");
    let mut squatter = explained["rendered"][0]["object"].clone();
    let name = squatter["metadata"]["name"].as_str().unwrap().to_string();
    let hash = name.rsplit('-').next().unwrap();
    assert_eq!(hash.len(), 20, "80 bits of hash: {name}");
    squatter["metadata"]["annotations"]["tripline.dev/event-key"] = json!("f".repeat(64));
    squatter["metadata"]["annotations"]["tripline.dev/event-id"] = json!("someone-else");
    api.put("workflows", squatter);

    let (code, reply) = post(&t, "/events/hook", &headers, body.clone()).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["matched"][0]["status"], "invalid");
    let message = reply["matched"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("NameCollision") && message.contains("someone-else"),
        "{message}"
    );
    assert_eq!(t.dead_letters().len(), 1);
    assert_eq!(t.metric("tripline_objects_existing_total").await, 0);

    // A genuine redelivery is still `existing`.
    let (_, reply) = post(
        &t,
        "/events/hook",
        &[JSON, ("X-Delivery", "d-2")],
        br#"{"key":"k2"}"#.to_vec(),
    )
    .await;
    assert_eq!(reply["matched"][0]["status"], "created");
    let (code, reply) = post(
        &t,
        "/events/hook",
        &[JSON, ("X-Delivery", "d-2")],
        br#"{"key":"k2"}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(reply["matched"][0]["status"], "existing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_unavailable_past_its_retry_budget_is_dead_lettered_and_terminated() {
    let nats = Nats::start().await;
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let config = format!(
        "sensors: sensors/
deadLetter: dead-letter.jsonl
submit: {{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 5s}}
limits: {{shutdownDeadline: 5s, retryBudget: {{maxAttempts: 3}}}}
sources:
  - type: nats
    name: hook
    urls: [{}]
    subjects: [jobs.>]
    jetstream: {{stream: JOBS, durable: tripline, create: true, ackWait: 5s, nakDelay: 100ms, maxNakDelay: 200ms}}
",
        kubeconfig.display(),
        nats.url()
    );
    let t = Tripline::start(&config, &[("runs.yaml", WORKFLOW_SENSOR)], &[]).await;
    api.set_down(true); // 503 on every create, for good
    let seqs = crate::support::brokers::nats_publish_js(
        &nats.url(),
        "JOBS",
        "jobs.new",
        &[r#"{"key":"k1"}"#],
    )
    .await;
    until("the dead letter", || {
        (!t.dead_letters().is_empty()).then_some(())
    })
    .await;
    let dl = t.dead_letters();
    assert_eq!(dl.len(), 1);
    assert!(
        dl[0]["error"]
            .as_str()
            .unwrap()
            .contains("retry budget spent"),
        "{dl:#?}"
    );
    assert_eq!(dl[0]["eventIds"], json!([format!("JOBS:{}", seqs[0])]));
    assert_eq!(dl[0]["object"]["kind"], "Workflow", "kept for a replay");
    // Terminated: nothing pending, nothing redelivered after.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    until_async("the message settled", || {
        let js = js.clone();
        async move {
            let stream = js.get_stream("JOBS").await.ok()?;
            let info = stream.consumer_info("tripline").await.ok()?;
            (info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
        }
    })
    .await;
    assert_eq!(t.metric("tripline_objects_expired_total").await, 1);
    assert_eq!(t.metric("tripline_events_retrying").await, 0);
    assert_eq!(
        api.create_attempts(),
        3 * 2,
        "3 deliveries × the trigger's 2 attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_events_outbox_or_dead_letters() {
    let sensor = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: echo}
spec:
  dependencies:
    - {name: req, source: hook}
  triggers:
    - name: echo
      workflow:
        manifest: {apiVersion: v1, kind: ConfigMap, data: {}}
      parameters:
        - {name: headers, value: "{{json headers}}", dest: data.headers}
        - {name: n, value: "{{body.n}}", dest: data.n}
"#;
    let t = Tripline::start(
        "sensors: sensors/\ndeadLetter: dead-letter.jsonl\nredactHeaders: [X-Custom-Secret]\nsources: [{type: http, name: hook}]\n",
        &[("echo.yaml", sensor)],
        &[],
    )
    .await;
    let secrets = [
        ("Authorization", "Bearer s3cret-1"),
        ("Proxy-Authorization", "Basic s3cret-2"),
        ("X-Api-Key", "s3cret-3"),
        ("X-Forwarded-Access-Token", "s3cret-4"),
        ("X-Custom-Secret", "s3cret-5"),
        ("Cookie", "session=s3cret-6"),
    ];
    let mut headers: Vec<(&str, &str)> = secrets.to_vec();
    headers.push(JSON);
    headers.push(("X-Trace", "visible"));
    let (code, reply) = post(&t, "/events/hook", &headers, br#"{"n":1}"#.to_vec()).await;
    assert_eq!(code, 200, "{reply}");
    // No `n`: a render failure, dead-lettered with the whole event.
    let (code, reply) = post(&t, "/events/hook", &headers, br#"{"m":1}"#.to_vec()).await;
    assert_eq!(code, 200);
    assert_eq!(reply["matched"][0]["status"], "invalid");
    let outbox = serde_json::to_string(&t.outbox()).unwrap();
    let dead = serde_json::to_string(&t.dead_letters()).unwrap();
    assert!(outbox.contains("visible") && dead.contains("visible"));
    for (name, value) in secrets {
        assert!(
            !outbox.contains(value),
            "{name} reached the outbox: {outbox}"
        );
        assert!(
            !dead.contains(value),
            "{name} reached a dead letter: {dead}"
        );
        assert!(!t.log().contains(value), "{name} reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_what_serve_would_trip_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sensors")).unwrap();
    let cases = [
        (
            "sources: [{type: http, name: a, path: /x}, {type: http, name: b, path: /x}]",
            "sources[1].path: `/x` is already the path of source `a`",
        ),
        ("sources: [{type: http, name: a, path: '/x/{id}'}]", "literal path"),
        ("sources: [{type: http, name: a, path: /readyz}]", "served by tripline itself"),
        (
            "sources: [{type: nats, name: n, urls: ['nats://u:hunter2@127.0.0.1:4222'], subjects: [a]}]",
            "carries credentials",
        ),
        (
            "sources: [{type: kafka, name: k, brokers: b:9092, topics: [t], groupId: g, properties: {ssl.key.pem: x}}]",
            "never inline",
        ),
        ("limits: {maxInFlightBytes: 10}", "limits.maxInFlightBytes"),
    ];
    for (config, want) in cases {
        std::fs::write(dir.path().join("tripline.yaml"), config).unwrap();
        let (code, out, err) = run_cli(&["validate"], dir.path());
        assert_ne!(code, 0, "{config}: {out}");
        assert!(err.contains(want), "{config}: {err}");
        assert!(!err.contains("hunter2"), "the password is echoed: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_poison_records_never_pin_the_partition() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let kafka = Kafka::start(&[("jobs", 1)]).await;
    let config = format!(
        "sensors: sensors/
deadLetter: dead-letter.jsonl
limits: {{shutdownDeadline: 10s, maxBodyBytes: 4096}}
sources:
  - type: kafka
    name: queue
    brokers: {}
    topics: [jobs]
    groupId: poison
    commitInterval: 200ms
    properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 1000}}
",
        kafka.bootstrap()
    );
    let sensor = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: jobs}
spec:
  dependencies:
    - {name: msg, source: queue}
  triggers:
    - name: job
      workflow:
        manifest: {apiVersion: v1, kind: ConfigMap, data: {}}
      parameters:
        - {name: n, value: "{{body.n}}", dest: data.n}
        - {name: time, value: "{{time}}", dest: data.time}
"#;
    let t = Tripline::start(&config, &[("jobs.yaml", sensor)], &[]).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .create()
        .unwrap();
    let send = |payload: String, ts: Option<i64>| {
        let producer = producer.clone();
        async move {
            let mut r = FutureRecord::<(), String>::to("jobs").payload(&payload);
            if let Some(ts) = ts {
                r = r.timestamp(ts);
            }
            producer
                .send(r, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    };
    // Year 10 000+: formatting that time used to panic and pin the partition.
    send(json!({"n": 0}).to_string(), Some(300_000_000_000_000)).await;
    // Over limits.maxBodyBytes: dead-lettered, not processed.
    send(json!({"n": 1, "pad": "x".repeat(10_000)}).to_string(), None).await;
    for n in 2..5 {
        send(json!({"n": n}).to_string(), None).await;
    }
    until_async("every offset committed", || async {
        let committed = kafka_committed_offsets(&kafka.bootstrap(), "poison", "jobs").await;
        (committed == vec![(0, 5)]).then_some(())
    })
    .await;
    let objects: Vec<Value> = t.outbox().into_iter().map(|(_, o)| o).collect();
    let ns: Vec<&str> = objects
        .iter()
        .map(|o| o["data"]["n"].as_str().unwrap())
        .collect();
    assert_eq!(ns.len(), 4, "{ns:?}");
    assert!(!ns.contains(&"1"));
    let far = objects.iter().find(|o| o["data"]["n"] == "0").unwrap();
    assert_eq!(far["data"]["time"], "9999-12-31T23:59:59.999Z", "clamped");
    let dl = t.dead_letters();
    assert_eq!(dl.len(), 1, "{dl:#?}");
    assert_eq!(dl[0]["reference"], "jobs/0/1");
    assert!(dl[0]["error"]
        .as_str()
        .unwrap()
        .contains("over the 4096 byte limit"));
    assert_eq!(t.metric("tripline_events_poisoned_total").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_with_64_concurrent_megabyte_events() {
    // A CEL filter reads the body (the costly path) and the object takes a
    // field of it.
    let sensor = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: big}
spec:
  dependencies:
    - name: req
      source: hook
      filters: {expr: "size(body.items) > 0 && body.items[0].id != ''"}
  triggers:
    - name: run
      workflow:
        manifest: {apiVersion: v1, kind: ConfigMap, data: {}}
      parameters:
        - {name: first, value: "{{body.items.0.id}}", dest: data.first}
"#;
    let t = Tripline::start(
        "sensors: sensors/\nlimits: {maxInFlight: 64}\nsources: [{type: http, name: hook, idHeader: X-Delivery}]\n",
        &[("big.yaml", sensor)],
        &[],
    )
    .await;
    let pid = t.pid();
    let idle = peak_rss(pid);
    // ~1 MiB of JSON: 10 000 small objects.
    let body = |i: usize| {
        let items: Vec<Value> = (0..16_000)
            .map(|j| json!({"id": format!("{i}-{j}"), "v": "abcdefghijklmnopqrstuvwxyz0123456789"}))
            .collect();
        json!({"items": items}).to_string().into_bytes()
    };
    assert!(
        body(0).len() > 700_000 && body(0).len() < 1 << 20,
        "{}",
        body(0).len()
    );
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (client, url, body) = (client.clone(), t.url("/events/hook"), body(i));
            tokio::spawn(async move {
                client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .header("X-Delivery", format!("d-{i}"))
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    let created = codes.iter().filter(|c| **c == 200).count();
    assert!(
        codes.iter().all(|c| *c == 200 || *c == 503),
        "only successes or 'overloaded': {codes:?}"
    );
    assert!(created >= 16, "most got through: {codes:?}");
    let peak = peak_rss(pid);
    println!(
        "memory: idle {} MiB, peak with 64 concurrent ~1 MiB events {} MiB ({created} created, {} told to retry)",
        idle >> 20,
        peak >> 20,
        64 - created
    );
    // The default limits.maxInFlightBytes (64 MiB) bounds the payloads in
    // processing; parsed and converted for CEL each weighs a few times its
    // size. The Deployment gives 256Mi with a 32 MiB budget.
    assert!(
        peak < 256 << 20,
        "peak RSS {} MiB, over the 256Mi the StatefulSet gives",
        peak >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_never_shows_credentials_from_nats_url() {
    // $NATS_URL may carry credentials (validate refuses them only in the
    // file): /readyz, open to anyone who can reach it, must not show them.
    let closed = crate::support::brokers::free_port();
    let t = Tripline::launch(
        "sensors: sensors/\nsources: [{type: nats, name: q, subjects: [a]}]\n",
        &[],
        &[(
            "NATS_URL",
            &format!("nats://tripline:hunter2@127.0.0.1:{closed}"),
        )],
    );
    let (code, ready) = until_async("/readyz to answer", || async {
        let r = reqwest::get(t.url("/readyz")).await.ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    })
    .await;
    assert_eq!(code, 503, "{ready}");
    assert!(
        ready.contains("not connected to NATS (nats://***@127.0.0.1:"),
        "{ready}"
    );
    assert!(
        !ready.contains("hunter2") && !ready.contains("tripline:"),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_source_stops_the_process_with_a_non_zero_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sensors")).unwrap();
    std::fs::write(
        dir.path().join("tripline.yaml"),
        "sources: [{type: http, name: a}]\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("cannot listen on 127.0.0.1"), "{err}");
}
