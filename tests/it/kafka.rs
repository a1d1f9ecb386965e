//! The Kafka source end to end: the real `tripline` binary consuming from a
//! real Kafka-protocol broker (tansu), submitting to the outbox or to the
//! Kubernetes API double, and committing offsets only behind finished
//! messages.
//!
//! Every test has its own broker (port), topic and group id. Waits poll with
//! generous deadlines (a loaded 2-core machine is slow), never fixed sleeps,
//! except where a test must outwait tansu's `session.timeout.ms`.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::brokers::{kafka_committed_offsets, kafka_produce, kafka_produce_with, Kafka};
use crate::support::kube_api::{Fault, KubeApi};
use crate::support::tripline::{repo, run_cli, Tripline};

/// Generous: group joins, rebalances and a loaded machine all take time.
const PATIENCE: Duration = Duration::from_secs(90);

/// tansu's pitfall: a member killed without LeaveGroup can leave its
/// replacement with an empty assignment until its session expires. The tests
/// use 6 s sessions (so a group join takes ~3 s, not ~23 s) and wait longer
/// than that before restarting a killed member.
const SESSION_PROPS: &str = "{session.timeout.ms: 6000, heartbeat.interval.ms: 1000}";

/// A `type: kafka` source named `queue`.
fn kafka_source(kafka: &Kafka, topic: &str, group: &str) -> String {
    format!(
        "
  - type: kafka
    name: queue
    brokers: {}
    topics: [{topic}]
    groupId: {group}
    retryBackoff: 100ms
    maxRetryBackoff: 1s
    commitInterval: 200ms
    properties: {SESSION_PROPS}
",
        kafka.bootstrap()
    )
}

/// Outbox config; `outbox` is a directory (relative to the temp dir, or
/// absolute to share it between processes).
fn outbox_config(kafka: &Kafka, topic: &str, group: &str, outbox: &str) -> String {
    format!(
        "sensors: sensors/
submit: {{type: outbox, dir: {outbox}}}
limits: {{shutdownDeadline: 20s}}
sources:{}",
        kafka_source(kafka, topic, group)
    )
}

fn kube_config(kafka: &Kafka, topic: &str, group: &str, kubeconfig: &Path) -> String {
    format!(
        "sensors: sensors/
deadLetter: dead-letter.jsonl
submit: {{type: kubernetes, kubeconfig: {}, namespace: default, timeout: 2s}}
limits: {{shutdownDeadline: 20s}}
sources:{}",
        kubeconfig.display(),
        kafka_source(kafka, topic, group)
    )
}

/// Every message on `queue` starts a batch/v1 Job carrying the message's
/// fields, its key and its event id. A fast retry policy: the source, not
/// the trigger, does the long retrying.
const SENSOR: &str = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: kafka-jobs}
spec:
  dependencies:
    - {name: msg, source: queue, filters: {not: {path: body.skip, equals: "true"}}}
  triggers:
    - name: job
      workflow:
        manifest:
          apiVersion: batch/v1
          kind: Job
          spec:
            template:
              spec:
                restartPolicy: Never
                containers:
                  - name: main
                    image: busybox:1.36
                    env:
                      - {name: N, value: ""}
                      - {name: KEY, value: ""}
                      - {name: EVENT, value: ""}
      parameters:
        - {name: n, value: "{{body.n}}", dest: spec.template.spec.containers.0.env.0.value}
        - {name: key, value: "{{default meta.key \"none\"}}", dest: spec.template.spec.containers.0.env.1.value}
        - {name: event, value: "{{id}}", dest: spec.template.spec.containers.0.env.2.value}
        - {name: team, value: "{{default body.team \"data\"}}", dest: metadata.labels.team}
      retry: {attempts: 2, backoff: 50ms, maxBackoff: 100ms}
"#;

fn sensors() -> [(&'static str, &'static str); 1] {
    [("jobs.yaml", SENSOR)]
}

/// `n` keyed JSON messages `{"n": first + i}`.
fn messages(first: usize, n: usize) -> Vec<(Option<String>, String)> {
    (first..first + n)
        .map(|i| (Some(format!("key-{i}")), json!({ "n": i }).to_string()))
        .collect()
}

/// `<topic>/<partition>/<offset>`: the event ids the messages get.
fn ids(topic: &str, delivered: &[(i32, i64)]) -> BTreeSet<String> {
    delivered
        .iter()
        .map(|(p, o)| format!("{topic}/{p}/{o}"))
        .collect()
}

/// Polls `probe` until it returns `Some`, for at most `PATIENCE`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Event ids of the objects in an outbox directory (its files' annotation).
fn outbox_ids(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".yaml"))
                .filter_map(|e| {
                    let text = std::fs::read_to_string(e.path()).ok()?;
                    let v: Value = serde_yaml_ng::from_str(&text).ok()?;
                    v["metadata"]["annotations"]["tripline.dev/event-id"]
                        .as_str()
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `dir` holds exactly the objects of `expected` (no more).
async fn wait_outbox(dir: &Path, expected: &BTreeSet<String>) {
    let got = eventually(
        &format!("{} objects in {}", expected.len(), dir.display()),
        || async {
            let ids = outbox_ids(dir);
            (ids.len() >= expected.len()).then_some(ids)
        },
    )
    .await;
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), unique.len(), "an event produced two objects");
    assert_eq!(&unique, expected, "objects are not one per message");
}

/// Waits until the group's committed offsets on `topic` sum to `total`.
async fn wait_committed(kafka: &Kafka, group: &str, topic: &str, total: i64) -> Vec<(i32, i64)> {
    eventually(
        &format!("committed offsets of {group} to sum to {total}"),
        || async {
            let c = kafka_committed_offsets(&kafka.bootstrap(), group, topic).await;
            let sum: i64 = c.iter().map(|(_, o)| (*o).max(0)).sum();
            (sum == total).then_some(c)
        },
    )
    .await
}

/// The source's `/readyz` entry: `(ready, detail)`.
async fn readiness(t: &Tripline) -> Option<(bool, String)> {
    let r: Value = reqwest::get(t.url("/readyz"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let q = &r["sources"]["queue"];
    Some((q["ready"].as_bool()?, q["detail"].as_str()?.to_string()))
}

/// Partitions assigned to `t`'s source, from its readiness detail
/// ("group `g`: 2 partition(s) assigned: t/0, t/1").
async fn assigned(t: &Tripline) -> Option<usize> {
    let (ready, detail) = readiness(t).await?;
    let n = detail.split(": ").nth(1)?.split(' ').next()?.parse().ok()?;
    ready.then_some(n)
}

/// Number of submissions with status `Created` / `Existing` in a log.
fn submissions(log: &str) -> (usize, usize) {
    let plain = strip_ansi(log);
    let count = |status: &str| {
        plain
            .lines()
            .filter(|l| l.contains("submitted") && l.contains(&format!("status={status}")))
            .count()
    };
    (count("Created"), count("Existing"))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn start(config: &str) -> Tripline {
    start_with(config, &[]).await
}

/// [`start`] with `env` added to tripline's environment.
async fn start_with(config: &str, env: &[(&str, &str)]) -> Tripline {
    let t = Tripline::start(config, &sensors(), env).await;
    eventually("the source to join its group", || async {
        readiness(&t).await.filter(|(r, _)| *r)
    })
    .await;
    t
}

#[tokio::test]
async fn a_thousand_messages_over_three_partitions_make_a_thousand_objects_and_commits() {
    let kafka = Kafka::start(&[("events", 3)]).await;
    let mut t = start(&outbox_config(&kafka, "events", "g-thousand", "outbox/")).await;

    // Half before the first poll, half while consuming.
    let mut delivered = kafka_produce(&kafka.bootstrap(), "events", &messages(0, 500)).await;
    delivered.extend(kafka_produce(&kafka.bootstrap(), "events", &messages(500, 500)).await);
    let partitions: BTreeSet<i32> = delivered.iter().map(|(p, _)| *p).collect();
    assert_eq!(partitions.len(), 3, "keys spread over all partitions");

    let outbox = t.dir.path().join("outbox");
    wait_outbox(&outbox, &ids("events", &delivered)).await;
    let committed = wait_committed(&kafka, "g-thousand", "events", 1000).await;
    // Per partition: one past the highest offset.
    for (p, o) in &committed {
        let last = delivered
            .iter()
            .filter(|(q, _)| q == p)
            .map(|(_, o)| *o)
            .max();
        assert_eq!(Some(*o - 1), last, "partition {p}: {committed:?}");
    }

    // The envelope: key, id, partition/offset.
    let (_, job) = t
        .outbox()
        .into_iter()
        .find(|(_, o)| o["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "42")
        .expect("the job of message 42");
    let env = &job["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(env[1]["value"], "key-42");
    let i = delivered[42];
    assert_eq!(env[2]["value"], format!("events/{}/{}", i.0, i.1));
    assert_eq!(job["kind"], "Job");

    let (created, existing) = submissions(&t.log());
    assert_eq!(
        (created, existing),
        (1000, 0),
        "each message submitted once"
    );
    assert_eq!(t.terminate(), Some(0), "{}", t.log());
    assert!(t.log().contains("left the group"), "{}", t.log());
}

#[tokio::test]
async fn a_full_partition_queue_pauses_and_resumes_without_gaps_or_repeats() {
    let kafka = Kafka::start(&[("events", 1)]).await;
    // Fetching is far faster than writing fsync'd outbox files one at a
    // time, so a 100-message queue fills at once: the partition is paused,
    // then resumed (and fetched again from where processing stands) many
    // times over.
    let delivered = kafka_produce(&kafka.bootstrap(), "events", &messages(0, 2000)).await;
    let config = outbox_config(&kafka, "events", "g-pause", "outbox/").replace(
        "commitInterval: 200ms",
        "commitInterval: 200ms\n    maxInFlight: 1\n    maxQueued: 100",
    );
    let t = start(&config).await;
    wait_outbox(&t.dir.path().join("outbox"), &ids("events", &delivered)).await;
    wait_committed(&kafka, "g-pause", "events", 2000).await;
    let log = strip_ansi(&t.log());
    let pauses = log.matches("partition paused").count();
    let resumes = log.matches("partition resumed").count();
    println!("pause test: paused {pauses}, resumed {resumes} times");
    assert!(
        pauses >= 2 && resumes >= 2,
        "paused {pauses}, resumed {resumes} times"
    );
    assert_eq!(submissions(&log), (2000, 0), "each message submitted once");
}

#[tokio::test]
async fn a_member_killed_mid_stream_and_restarted_submits_everything_once() {
    let kafka = Kafka::start(&[("events", 3)]).await;
    // Rare commits: the kill is sure to leave processed messages uncommitted.
    let config = outbox_config(&kafka, "events", "g-crash", "outbox/")
        .replace("commitInterval: 200ms", "commitInterval: 3s");
    let mut t = start(&config).await;
    let outbox = t.dir.path().join("outbox");

    // Produce in the background while tripline consumes; kill it mid-stream.
    let bootstrap = kafka.bootstrap();
    let producer = tokio::spawn(async move {
        let mut delivered = Vec::new();
        for batch in 0..20 {
            delivered.extend(kafka_produce(&bootstrap, "events", &messages(batch * 40, 40)).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        delivered
    });
    eventually("some objects before the kill", || async {
        (outbox_ids(&outbox).len() >= 150).then_some(())
    })
    .await;
    t.kill();
    let before_kill = outbox_ids(&outbox).len() as i64;
    let committed: i64 = kafka_committed_offsets(&kafka.bootstrap(), "g-crash", "events")
        .await
        .iter()
        .map(|(_, o)| (*o).max(0))
        .sum();
    let delivered = producer.await.unwrap();
    assert_eq!(delivered.len(), 800);
    assert!(before_kill < 800, "the kill was not mid-stream");
    assert!(
        committed <= before_kill,
        "committed past unfinished messages"
    );

    // Outwait the dead member's session (see SESSION_PROPS), then restart in
    // the same group with the same outbox.
    tokio::time::sleep(Duration::from_secs(10)).await;
    t.restart().await;
    wait_outbox(&outbox, &ids("events", &delivered)).await;
    wait_committed(&kafka, "g-crash", "events", 800).await;

    // Everything from the commit point was delivered again: the messages
    // processed but not committed found their object (`existing`) and made
    // no second one. (A kill between writing an object and logging it can
    // leave a `created` line missing, hence the range.)
    let (created, existing) = submissions(&t.log());
    println!(
        "crash test: {before_kill} objects, {committed} committed at the kill; {existing} redelivered as existing"
    );
    assert_eq!(existing as i64, before_kill - committed);
    assert!((800 - 24..=800).contains(&created), "created {created}");
    assert_eq!(t.terminate(), Some(0));
}

#[tokio::test]
async fn two_members_split_the_partitions_and_hand_over_on_sigterm() {
    let kafka = Kafka::start(&[("events", 3)]).await;
    let shared = tempfile::tempdir().unwrap();
    let outbox = shared.path().join("outbox");
    let config = outbox_config(&kafka, "events", "g-pair", &outbox.display().to_string());
    let mut a = start(&config).await;
    let b = start(&config).await;
    let (na, nb) = eventually("both members to have partitions", || async {
        let (na, nb) = (assigned(&a).await?, assigned(&b).await?);
        (na > 0 && nb > 0 && na + nb == 3).then_some((na, nb))
    })
    .await;
    println!("split: a has {na}, b has {nb} partition(s)");

    let mut delivered = kafka_produce(&kafka.bootstrap(), "events", &messages(0, 300)).await;
    wait_outbox(&outbox, &ids("events", &delivered)).await;
    let (ca, _) = submissions(&a.log());
    let (cb, _) = submissions(&b.log());
    assert!(ca > 0 && cb > 0, "both members process: a {ca}, b {cb}");
    assert_eq!(ca + cb, 300);
    wait_committed(&kafka, "g-pair", "events", 300).await;

    // Messages keep flowing while `a` stops: it finishes what it runs,
    // commits and leaves; `b` takes over every partition.
    let bootstrap = kafka.bootstrap();
    let producer = tokio::spawn(async move {
        let mut delivered = Vec::new();
        for batch in 0..10 {
            delivered
                .extend(kafka_produce(&bootstrap, "events", &messages(300 + batch * 30, 30)).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        delivered
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.terminate(), Some(0), "{}", a.log());
    assert!(a.log().contains("left the group"));
    eventually("b to own all three partitions", || async {
        (assigned(&b).await? == 3).then_some(())
    })
    .await;
    delivered.extend(producer.await.unwrap());
    assert_eq!(delivered.len(), 600);
    wait_outbox(&outbox, &ids("events", &delivered)).await;
    wait_committed(&kafka, "g-pair", "events", 600).await;

    // Nothing lost, nothing submitted twice: a graceful handover commits
    // everything `a` finished, so `b` redoes nothing.
    let (ca, ea) = submissions(&a.log());
    let (cb, eb) = submissions(&b.log());
    assert_eq!(ca + cb, 600, "a {ca}, b {cb}");
    assert_eq!(ea + eb, 0, "no redelivery after a graceful handover");
    assert!(cb > 300 - ca.min(300), "b took over");
}

#[tokio::test]
async fn an_api_outage_holds_the_commit_point_until_recovery() {
    let kafka = Kafka::start(&[("jobs", 1)]).await;
    let api = KubeApi::start().await;
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(kube_dir.path());
    let t = start(&kube_config(&kafka, "jobs", "g-outage", &kubeconfig)).await;

    let mut delivered = kafka_produce(&kafka.bootstrap(), "jobs", &messages(0, 5)).await;
    eventually("5 jobs", || async {
        (api.objects("jobs").len() == 5).then_some(())
    })
    .await;
    wait_committed(&kafka, "g-outage", "jobs", 5).await;

    // The API answers 503 to everything: messages 5..9 cannot be submitted.
    api.fail_all(Fault::Status(503));
    let attempts = api.create_attempts();
    delivered.extend(kafka_produce(&kafka.bootstrap(), "jobs", &messages(5, 5)).await);
    eventually("retries of every failing message", || async {
        (api.create_attempts() >= attempts + 20).then_some(())
    })
    .await;
    // Messages nothing wants, behind the failing ones, are settled at once
    // (on the consumer thread) but never carry the commit past them.
    let skipped: Vec<(Option<String>, String)> = (0..3)
        .map(|_| (None, json!({"skip": true}).to_string()))
        .collect();
    delivered.extend(kafka_produce(&kafka.bootstrap(), "jobs", &skipped).await);
    eventually("the 3 skipped messages settled", || async {
        (t.try_metric(r#"tripline_events_unmatched_total{source="queue"}"#)
            .await
            == Some(3))
        .then_some(())
    })
    .await;
    // While it is down, nothing is committed past the first failing message.
    for _ in 0..10 {
        let committed = kafka_committed_offsets(&kafka.bootstrap(), "g-outage", "jobs").await;
        assert_eq!(committed, vec![(0, 5)], "committed past a failing message");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(api.objects("jobs").len(), 5);
    assert!(strip_ansi(&t.log()).contains("holding this partition's commit point"));

    api.recover();
    eventually("10 jobs", || async {
        (api.objects("jobs").len() == 10).then_some(())
    })
    .await;
    wait_committed(&kafka, "g-outage", "jobs", 13).await;
    let events: BTreeSet<String> = api
        .objects("jobs")
        .iter()
        .map(|j| {
            j["metadata"]["annotations"]["tripline.dev/event-id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(events, ids("jobs", &delivered[..10]), "one job per message");
    let (created, _) = submissions(&t.log());
    assert_eq!(created, 10, "each created once");
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_the_partition_keeps_flowing() {
    let kafka = Kafka::start(&[("jobs", 1)]).await;
    let api = KubeApi::start().await;
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(kube_dir.path());
    // At the default log level (tests run at `debug`, where spans per
    // message name the event anyway): what is logged names the event.
    let t = start_with(
        &kube_config(&kafka, "jobs", "g-poison", &kubeconfig),
        &[("TRIPLINE_LOG", "info")],
    )
    .await;

    // Message 2 carries a label value the API refuses (422): a poison
    // message. Retrying cannot help; it must not block 3 and 4.
    let mut msgs = messages(0, 5);
    msgs[2].1 = json!({"n": 2, "team": "not a valid label!"}).to_string();
    let delivered = kafka_produce(&kafka.bootstrap(), "jobs", &msgs).await;
    eventually("4 jobs", || async {
        (api.objects("jobs").len() == 4).then_some(())
    })
    .await;
    wait_committed(&kafka, "g-poison", "jobs", 5).await;

    let dl = eventually("a dead-letter record", || async {
        let dl = t.dead_letters();
        (!dl.is_empty()).then_some(dl)
    })
    .await;
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["sensor"], "kafka-jobs");
    assert_eq!(dl[0]["status"]["reason"], "Invalid");
    let poison_id = format!("jobs/{}/{}", delivered[2].0, delivered[2].1);
    assert!(dl[0].to_string().contains(&poison_id), "{}", dl[0]);
    assert_eq!(
        api.create_attempts(),
        5,
        "the poison message was not retried"
    );
    let log = strip_ansi(&t.log());
    let rejected: Vec<&str> = log.lines().filter(|l| l.contains("rejected")).collect();
    assert_eq!(
        rejected.len(),
        2,
        "the engine's line and the partition's: {log}"
    );
    for line in rejected {
        assert!(line.contains(&poison_id), "{line}");
    }

    // And the partition still flows.
    kafka_produce(&kafka.bootstrap(), "jobs", &messages(5, 1)).await;
    eventually("5 jobs", || async {
        (api.objects("jobs").len() == 5).then_some(())
    })
    .await;
    wait_committed(&kafka, "g-poison", "jobs", 6).await;
}

#[tokio::test]
async fn the_queue_driven_pipeline_example_runs() {
    let kafka = Kafka::start(&[("jobs", 2)]).await;
    let example = repo("examples/queue-driven-pipeline-kafka");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example, dir.path());

    // The example's config, pointed at the test broker (and with tansu-friendly
    // session settings); `tripline validate` accepts it.
    let cfg_path = dir.path().join("tripline.yaml");
    let mut cfg: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let source = &mut cfg["sources"][0];
    assert_eq!(source["type"], "kafka");
    assert_eq!(source["topics"], json!(["jobs"]));
    source["brokers"] = json!(kafka.bootstrap());
    source["properties"] = json!({"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000});
    std::fs::write(&cfg_path, serde_yaml_ng::to_string(&cfg).unwrap()).unwrap();
    let cfg_arg = cfg_path.display().to_string();
    let (code, out, err) = run_cli(&["validate", "--config", &cfg_arg], dir.path());
    assert_eq!(code, 0, "{out}{err}");

    let t = Tripline::start_with(dir, cfg_path, &[], &[]).await;
    let message = json!({
        "pipeline": "thumbnails",
        "input": "s3://raw/2026/11/24/batch-17/",
        "output": "s3://thumbs/2026/11/24/batch-17/",
        "requestedBy": "ana"
    });
    let delivered = kafka_produce(
        &kafka.bootstrap(),
        "jobs",
        &[(Some("batch-17"), message.to_string())],
    )
    .await;
    let files = eventually("the Job in the outbox", || async {
        let f = t.outbox();
        (!f.is_empty()).then_some(f)
    })
    .await;
    assert_eq!(files.len(), 1, "{files:?}");
    let (name, job) = &files[0];
    assert!(name.starts_with("batch.job.run-pipeline-"), "{name}");
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["metadata"]["namespace"], "batch");
    assert_eq!(job["metadata"]["labels"]["pipeline"], "thumbnails");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    let (p, o) = delivered[0];
    assert_eq!(
        env,
        [
            ("INPUT", "s3://raw/2026/11/24/batch-17/"),
            ("OUTPUT", "s3://thumbs/2026/11/24/batch-17/"),
            ("REQUESTED_BY", "ana"),
            ("BATCH_KEY", "batch-17"),
            ("KAFKA_EVENT", &format!("jobs/{p}/{o}")),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    // A message the sensor does not match (no `input`) starts nothing.
    kafka_produce(
        &kafka.bootstrap(),
        "jobs",
        &[(None::<&str>, "{\"hello\":1}")],
    )
    .await;
    wait_committed(&kafka, "tripline-jobs", "jobs", 2).await;
    assert_eq!(t.outbox().len(), 1);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn readiness_reflects_a_missing_topic_and_a_lost_broker() {
    let mut kafka = Kafka::start(&[("other", 1)]).await;
    // The topic appears only after tripline has subscribed to it.
    let config = outbox_config(&kafka, "late", "g-ready", "outbox/").replace(
        "session.timeout.ms: 6000",
        "session.timeout.ms: 6000, topic.metadata.refresh.interval.ms: 1000",
    );
    let sensors = sensors();
    let (t, ()) = tokio::join!(Tripline::start(&config, &sensors, &[]), async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        kafka.create_topic("late", 1).await;
    });
    let (_, detail) = eventually("the source to own late/0", || async {
        readiness(&t)
            .await
            .filter(|(r, d)| *r && d.contains("late/0"))
    })
    .await;
    assert!(detail.contains("g-ready"), "{detail}");
    let log = strip_ansi(&t.log());
    assert!(
        log.contains("kafka consumer error") && log.contains("Unknown topic"),
        "the missing topic was reported:\n{log}"
    );
    let delivered = kafka_produce(&kafka.bootstrap(), "late", &messages(0, 3)).await;
    wait_outbox(&t.dir.path().join("outbox"), &ids("late", &delivered)).await;
    wait_committed(&kafka, "g-ready", "late", 3).await;

    // The broker goes away: /readyz says so; SIGTERM still ends cleanly.
    kafka.stop().await;
    let (_, detail) = eventually("readiness to report the lost broker", || async {
        readiness(&t).await.filter(|(r, _)| !*r)
    })
    .await;
    assert!(detail.contains("AllBrokersDown"), "{detail}");
    let r = reqwest::get(t.url("/readyz")).await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let mut t = t;
    assert_eq!(t.terminate(), Some(0), "{}", t.log());
}

/// Carries the event's topic (`meta.topic`) and id into the Job.
const TOPIC_SENSOR: &str = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: kafka-topics}
spec:
  dependencies:
    - {name: msg, source: queue}
  triggers:
    - name: job
      workflow:
        manifest:
          apiVersion: batch/v1
          kind: Job
          spec:
            template:
              spec:
                restartPolicy: Never
                containers:
                  - name: main
                    image: busybox:1.36
                    env:
                      - {name: TOPIC, value: ""}
                      - {name: EVENT, value: ""}
      parameters:
        - {name: topic, value: "{{meta.topic}}", dest: spec.template.spec.containers.0.env.0.value}
        - {name: event, value: "{{id}}", dest: spec.template.spec.containers.0.env.1.value}
"#;

#[tokio::test]
async fn a_regex_subscription_takes_matching_topics_including_new_ones() {
    let kafka = Kafka::start(&[("ingest.a", 2), ("ingest.b", 1), ("other", 1)]).await;
    let bootstrap = kafka.bootstrap();
    // Produced before tripline starts: must never be consumed.
    kafka_produce(&bootstrap, "other", &messages(900, 3)).await;

    // `'^ingest\..*'` in YAML single quotes is the regex `^ingest\..*`, which
    // the source hands to librdkafka as is. A short metadata refresh makes
    // librdkafka notice a new matching topic within about a second.
    let config = format!(
        "sensors: sensors/
submit: {{type: outbox, dir: outbox/}}
limits: {{shutdownDeadline: 20s}}
sources:
  - type: kafka
    name: queue
    brokers: {bootstrap}
    topics: ['^ingest\\..*']
    groupId: g-regex
    commitInterval: 200ms
    properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 1000, topic.metadata.refresh.interval.ms: 1000}}
"
    );
    let mut t = Tripline::start(&config, &[("topics.yaml", TOPIC_SENSOR)], &[]).await;
    let (_, detail) = eventually("the source to own ingest.a and ingest.b", || async {
        readiness(&t).await.filter(|(r, d)| {
            *r && ["ingest.a/0", "ingest.a/1", "ingest.b/0"]
                .iter()
                .all(|p| d.contains(p))
        })
    })
    .await;
    assert!(!detail.contains("other"), "{detail}");

    let a = kafka_produce(&bootstrap, "ingest.a", &messages(0, 10)).await;
    let b = kafka_produce(&bootstrap, "ingest.b", &messages(10, 5)).await;
    kafka_produce(&bootstrap, "other", &messages(903, 3)).await;
    let mut expected = ids("ingest.a", &a);
    expected.extend(ids("ingest.b", &b));
    let outbox = t.dir.path().join("outbox");
    wait_outbox(&outbox, &expected).await;

    // A matching topic created while tripline runs is picked up on the next
    // metadata refresh (a rebalance adds its partition).
    kafka.create_topic("ingest.c", 1).await;
    let c = kafka_produce(&bootstrap, "ingest.c", &messages(15, 4)).await;
    eventually("the source to own ingest.c/0", || async {
        readiness(&t)
            .await
            .filter(|(r, d)| *r && d.contains("ingest.c/0"))
    })
    .await;
    expected.extend(ids("ingest.c", &c));
    wait_outbox(&outbox, &expected).await;
    wait_committed(&kafka, "g-regex", "ingest.a", 10).await;
    wait_committed(&kafka, "g-regex", "ingest.b", 5).await;
    wait_committed(&kafka, "g-regex", "ingest.c", 4).await;

    // Each object carries its own message's topic, in `meta.topic` and in
    // the event id.
    let objects = t.outbox();
    assert_eq!(objects.len(), 19);
    for (name, job) in &objects {
        let env = &job["spec"]["template"]["spec"]["containers"][0]["env"];
        let topic = env[0]["value"].as_str().unwrap();
        let event = env[1]["value"].as_str().unwrap();
        assert!(
            ["ingest.a", "ingest.b", "ingest.c"].contains(&topic),
            "{name}: topic {topic}"
        );
        assert!(event.starts_with(&format!("{topic}/")), "{name}: {event}");
        assert_eq!(
            job["metadata"]["annotations"]["tripline.dev/event-id"], event,
            "{name}"
        );
    }

    // `other` was never consumed: no object, no commit, no assignment.
    assert_eq!(
        kafka_committed_offsets(&bootstrap, "g-regex", "other").await,
        vec![(0, -1)]
    );
    assert!(!outbox_ids(&outbox)
        .iter()
        .any(|id| id.starts_with("other/")));
    let log = strip_ansi(&t.log());
    assert!(!log.contains("other/0"), "{log}");
    assert_eq!(submissions(&log), (19, 0), "each message submitted once");
    assert_eq!(t.terminate(), Some(0), "{}", t.log());
}

/// Compressed topics are read whatever the codec — zstd included (librdkafka
/// is built with it): a producer's `compression.type` is not the consumer's
/// choice.
#[tokio::test]
async fn compressed_batches_are_read_with_every_codec() {
    let kafka = Kafka::start(&[("packed", 1)]).await;
    let mut t = start(&outbox_config(&kafka, "packed", "g-packed", "outbox/")).await;
    let mut delivered = Vec::new();
    for (i, codec) in ["zstd", "lz4", "gzip", "snappy"].into_iter().enumerate() {
        delivered.extend(
            kafka_produce_with(
                &kafka.bootstrap(),
                "packed",
                &messages(i * 10, 10),
                &[("compression.type", codec)],
            )
            .await,
        );
    }
    wait_outbox(&t.dir.path().join("outbox"), &ids("packed", &delivered)).await;
    wait_committed(&kafka, "g-packed", "packed", 40).await;
    assert_eq!(t.terminate(), Some(0), "{}", t.log());
}

/// Renders what a message carries besides its payload, for the test below.
const ENVELOPE_SENSOR: &str = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: kafka-envelope}
spec:
  dependencies:
    - {name: msg, source: queue, filters: {path: headers.trace, exists: true}}
  triggers:
    - name: cm
      workflow:
        manifest: {apiVersion: v1, kind: ConfigMap, data: {}}
      parameters:
        - {name: trace, value: "{{headers.trace}}", dest: data.trace}
        - {name: auth, value: "{{default headers.authorization \"dropped\"}}", dest: data.auth}
        - {name: ts, value: "{{meta.timestamp}}", dest: data.timestamp}
        - {name: time, value: "{{time}}", dest: data.time}
        - {name: key, value: "{{meta.key}}", dest: data.key}
        - {name: enc, value: "{{default meta.keyEncoding \"utf-8\"}}", dest: data.keyEncoding}
        - {name: type, value: "{{type}}", dest: data.type}
        - {name: body, value: "{{json body}}", dest: data.body}
"#;

/// What librdkafka hands over besides the payload — headers, key (text or
/// binary), timestamp, a tombstone's null value — reaches the sensor as the
/// envelope documents it, read from the broker in batches (`batch.rs`); a
/// message the filter rejects on a header is settled and committed.
#[tokio::test]
async fn headers_keys_timestamps_and_tombstones_reach_the_object() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::ClientConfig;

    let kafka = Kafka::start(&[("env", 1)]).await;
    let mut t = Tripline::start(
        &outbox_config(&kafka, "env", "g-env", "outbox/"),
        &[("env.yaml", ENVELOPE_SENSOR)],
        &[],
    )
    .await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let headers = |trace: Option<&str>| {
        let h = OwnedHeaders::new().insert(Header {
            key: "Authorization",
            value: Some("Bearer secret"),
        });
        match trace {
            Some(v) => h.insert(Header {
                key: "trace",
                value: Some(v),
            }),
            None => h,
        }
    };
    async fn send(producer: &FutureProducer, record: FutureRecord<'_, [u8], [u8]>) -> i64 {
        let sent = producer.send(record, Duration::from_secs(10)).await;
        sent.map(|d| d.offset).expect("delivered")
    }
    let text = send(
        &producer,
        FutureRecord::to("env")
            .key(&b"k-1"[..])
            .payload(&br#"{"n":1}"#[..])
            .timestamp(1_764_000_000_123)
            .headers(headers(Some("abc"))),
    )
    .await;
    let rejected = send(
        &producer,
        FutureRecord::to("env")
            .payload(&br#"{"n":2}"#[..])
            .headers(headers(None)),
    )
    .await;
    let tomb = send(
        &producer,
        FutureRecord::to("env")
            .key(&[0xfe_u8][..])
            .timestamp(1_764_000_000_456)
            .headers(headers(Some("gone"))),
    )
    .await;

    let expected = BTreeSet::from([format!("env/0/{text}"), format!("env/0/{tomb}")]);
    wait_outbox(&t.dir.path().join("outbox"), &expected).await;
    let objects: Vec<Value> = t.outbox().into_iter().map(|(_, o)| o).collect();
    let data = |trace: &str| {
        objects
            .iter()
            .find(|o| o["data"]["trace"] == trace)
            .map(|o| o["data"].clone())
            .unwrap_or_else(|| panic!("no object for trace {trace}: {objects:?}"))
    };
    assert_eq!(
        data("abc"),
        json!({
            "trace": "abc", "auth": "dropped", "timestamp": "1764000000123",
            "time": "2025-11-24T16:00:00.123Z", "key": "k-1", "keyEncoding": "utf-8",
            "type": "env", "body": "{\"n\":1}"
        })
    );
    assert_eq!(
        data("gone"),
        json!({
            "trace": "gone", "auth": "dropped", "timestamp": "1764000000456",
            "time": "2025-11-24T16:00:00.456Z", "key": "/g==", "keyEncoding": "base64",
            "type": "env", "body": "null"
        })
    );
    // All three committed, the rejected one (between the others) too.
    assert!(rejected > text && rejected < tomb);
    wait_committed(&kafka, "g-env", "env", tomb + 1).await;
    assert_eq!(t.terminate(), Some(0), "{}", t.log());
}
