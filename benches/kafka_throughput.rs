//! Kafka → outbox throughput of the real `tripline` binary, next to the limit
//! set by the broker and librdkafka: a raw rdkafka consumer that only consumes
//! and commits, on the same broker, topic and machine, in the same run.
//!
//! Every run reads the same pre-produced messages (`TRIPLINE_BENCH_MESSAGES`,
//! default 100 000, small JSON, keyed, over 3 partitions) as a fresh consumer
//! group and is timed from its first message to its last (group join
//! excluded):
//!
//! * raw: `BaseConsumer`, manual commits every 200 ms plus a final sync commit,
//!   no processing at all;
//! * tripline, no match: `tripline serve` with one kafka source and a sensor
//!   whose filter rejects every message (consume, envelope, match, commit);
//!   progress from `/metrics` (`tripline_events_total`);
//! * tripline, outbox: the sensor renders a ConfigMap per message into the
//!   outbox (one fsync'd YAML file each), with `maxInFlight` 1 and 8;
//!   progress from `tripline_objects_created_total`.
//!
//! Needs the tansu broker (`scripts/install-deps.sh`). Run:
//! `cargo bench --bench kafka_throughput` (`cargo test --all-targets` makes a
//! 300-message smoke run of the outbox path instead).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

#[path = "../tests/it/support/mod.rs"]
mod support;

use support::brokers::{kafka_consumer_config, kafka_produce_many, Kafka};
use support::tripline::{bench_log, Tripline};

const TOPIC: &str = "bench";
const PARTITIONS: i32 = 3;
const PATIENCE: Duration = Duration::from_secs(300);

/// The limit: consume everything and commit, nothing else, as consumer
/// group `group`. Returns the rate in messages per second (first message
/// to final commit).
fn raw_consumer(bootstrap: &str, n: usize, group: &str) -> f64 {
    let consumer: BaseConsumer = kafka_consumer_config(bootstrap, group)
        .set("enable.auto.offset.store", "false")
        // As tripline sets it: librdkafka's default (1 s) idles a consumer
        // whose queue passed `queued.min.messages` (100 000 per partition)
        // for a second at a time — with 1 000 000 messages the raw loop
        // measured 0.4–0.7 M msg/s in some runs and 2.6 M in others.
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let mut next = [0i64; PARTITIONS as usize];
    let commit = |next: &[i64], mode| {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next.iter().enumerate() {
            if *o > 0 {
                tpl.add_partition_offset(TOPIC, p as i32, Offset::Offset(*o))
                    .unwrap();
            }
        }
        if tpl.count() > 0 {
            consumer.commit(&tpl, mode).expect("commit");
        }
    };
    let (mut seen, mut first, mut last_commit) = (0, None, Instant::now());
    let deadline = Instant::now() + PATIENCE;
    while seen < n {
        assert!(Instant::now() < deadline, "raw consumer: {seen}/{n}");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                next[m.partition() as usize] = m.offset() + 1;
                seen += 1;
            }
            Some(Err(e)) => eprintln!("raw consumer: {e}"),
            None => {}
        }
        if last_commit.elapsed() >= Duration::from_millis(200) {
            commit(&next, CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    commit(&next, CommitMode::Sync);
    let secs = first.expect("messages").elapsed().as_secs_f64();
    drop(consumer);
    n as f64 / secs
}

#[path = "shared/kafka.rs"]
mod workload;
use workload::{message, sensor_matching_nothing, SENSOR};

/// What tripline does with each message.
#[derive(Clone, Copy, PartialEq)]
enum Work {
    /// The sensor's filter rejects it: consume, parse, match, commit.
    NoMatch,
    /// A ConfigMap rendered and written to the outbox (fsync'd file).
    Outbox,
}

impl Work {
    fn id(self) -> &'static str {
        match self {
            Work::NoMatch => "no-match",
            Work::Outbox => "outbox",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Work::NoMatch => "kafka -> no match",
            Work::Outbox => "kafka -> outbox",
        }
    }
}

/// tripline from Kafka doing `work`. Returns the rate in messages per
/// second (first message processed to last).
async fn tripline(bootstrap: &str, n: usize, work: Work, max_in_flight: usize) -> f64 {
    let sensor = match work {
        Work::NoMatch => sensor_matching_nothing(),
        Work::Outbox => SENSOR.to_string(),
    };
    let group = format!("tripline-bench-{}-{max_in_flight}", work.id());
    let max_queued: usize = std::env::var("TRIPLINE_BENCH_MAX_QUEUED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let config = format!(
        "sensors: sensors/
submit: {{type: outbox, dir: outbox/}}
limits: {{maxInFlight: 256}}
sources:
  - type: kafka
    name: queue
    brokers: {bootstrap}
    topics: [{TOPIC}]
    groupId: {group}
    maxInFlight: {max_in_flight}
    maxQueued: {max_queued}
    properties: {{session.timeout.ms: 6000, heartbeat.interval.ms: 1000}}
"
    );
    // Not waiting for /readyz: the first message can come before it is polled.
    let mut t = Tripline::launch(
        &config,
        &[("bench.yaml", &sensor)],
        &[("TRIPLINE_LOG", bench_log())],
    );
    let counter = match work {
        Work::NoMatch => "tripline_events_total",
        Work::Outbox => "tripline_objects_created_total",
    };
    let rate = t.rate_until(counter, n as u64, PATIENCE).await;
    if work == Work::Outbox {
        let files = std::fs::read_dir(t.dir.path().join("outbox"))
            .unwrap()
            .count();
        assert_eq!(files, n, "one object per message");
    }
    t.terminate();
    rate
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not and
    // gets a short smoke run. A filter naming another bench skips this one.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| !a.starts_with('-') && !"kafka_throughput".contains(a.as_str()))
    {
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let n: usize = std::env::var("TRIPLINE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 300 });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut broker = rt.block_on(Kafka::start(&[(TOPIC, PARTITIONS)]));
    let bootstrap = broker.bootstrap();
    let t = Instant::now();
    rt.block_on(kafka_produce_many(&bootstrap, TOPIC, n, message));
    println!(
        "produced {n} messages to {TOPIC} ({PARTITIONS} partitions) in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // The peer runs before tripline and, around the no-match run, after it
    // too; ratios are against the mean (the run going second in a pair was
    // measured 5–15 % slower in some sets of runs: docs/performance.md).
    let mut raw = raw_consumer(&bootstrap, n, "raw-bench");
    println!("raw rdkafka consumer (consume + commit)          {raw:>9.0} msg/s");
    // TRIPLINE_BENCH_NO_MATCH_ONLY=1: only the no-match run (for profiling it).
    let runs: &[(Work, usize)] = if std::env::var_os("TRIPLINE_BENCH_NO_MATCH_ONLY").is_some() {
        &[(Work::NoMatch, 8)]
    } else if full {
        &[(Work::NoMatch, 8), (Work::Outbox, 1), (Work::Outbox, 8)]
    } else {
        &[(Work::Outbox, 8)]
    };
    for (work, max_in_flight) in runs {
        let rate = rt.block_on(tripline(&bootstrap, n, *work, *max_in_flight));
        if *work == Work::NoMatch {
            let after = raw_consumer(&bootstrap, n, "raw-bench-after");
            println!("raw rdkafka consumer, again after tripline      {after:>9.0} msg/s");
            raw = (raw + after) / 2.0;
            println!("raw rdkafka consumer, mean of the two            {raw:>9.0} msg/s");
        }
        println!(
            "tripline {:<24} maxInFlight {max_in_flight}:  {rate:>9.0} msg/s = {:.2} % of raw",
            work.describe(),
            100.0 * rate / raw
        );
    }
    rt.block_on(broker.stop());
}
