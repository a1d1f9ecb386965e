//! Smoke tests of the real brokers in `support::brokers`: JetStream persistence across a
//! nats-server restart or crash, and tansu's produce / consumer group / commit path as
//! rdkafka drives it.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use futures::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::Message;

use crate::support::brokers::{
    kafka_committed_offsets, kafka_consumer_config, kafka_produce, nats_publish_js, Kafka, Nats,
};

/// Fetches up to `n` messages from the durable pull consumer `durable` on `stream`,
/// double-acking each (so the ack is persisted before this returns), for at most 10 s.
async fn fetch_js(url: &str, stream: &str, durable: &str, n: usize) -> Vec<String> {
    let client = async_nats::connect(url).await.expect("connect");
    let js = jetstream::new(client);
    let consumer = js
        .get_stream(stream)
        .await
        .expect("get stream")
        .get_or_create_consumer(
            durable,
            pull::Config {
                durable_name: Some(durable.to_string()),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .expect("durable consumer");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < n && tokio::time::Instant::now() < deadline {
        let mut batch = consumer
            .fetch()
            .max_messages(n - got.len())
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .expect("fetch");
        while let Some(msg) = batch.next().await {
            let msg = msg.expect("message");
            got.push(String::from_utf8(msg.payload.to_vec()).expect("utf-8 payload"));
            msg.double_ack().await.expect("ack");
        }
    }
    got
}

/// Number of messages stored in `stream`.
async fn js_stream_len(url: &str, stream: &str) -> u64 {
    let client = async_nats::connect(url).await.expect("connect");
    let mut s = jetstream::new(client)
        .get_stream(stream)
        .await
        .expect("stream exists");
    s.info().await.expect("stream info").state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_survives_restart() {
    let mut nats = Nats::start().await;
    let payloads: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let seqs = nats_publish_js(&nats.url(), "SMOKE", "smoke.events", &payloads).await;
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());

    assert_eq!(fetch_js(&nats.url(), "SMOKE", "reader", 10).await, payloads);

    let (port, pid) = (nats.port, nats.pid());
    nats.restart().await;
    assert_eq!(nats.port, port, "restart keeps the port");
    assert_ne!(nats.pid(), pid, "restart runs a new process");
    assert_eq!(js_stream_len(&nats.url(), "SMOKE").await, 10);

    // The durable consumer's acks survived too: its next message is the new one, not m0.
    nats_publish_js(&nats.url(), "SMOKE", "smoke.events", &["m10"]).await;
    assert_eq!(fetch_js(&nats.url(), "SMOKE", "reader", 1).await, ["m10"]);

    nats.stop().await;
    assert!(!nats.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_survives_kill() {
    let mut nats = Nats::start().await;
    nats_publish_js(&nats.url(), "CRASH", "crash.>", &["a", "b", "c"]).await;
    nats.kill();
    assert!(!nats.is_running());
    nats.restart().await;
    assert_eq!(js_stream_len(&nats.url(), "CRASH").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_group_consumes_and_commits() {
    let mut kafka = Kafka::start(&[("t", 3)]).await;
    let messages: Vec<(Option<String>, String)> = (0..30)
        .map(|i| (Some(format!("k{}", i % 7)), format!("m{i}")))
        .collect();
    let delivered = kafka_produce(&kafka.bootstrap(), "t", &messages).await;
    assert_eq!(delivered.len(), 30);
    // Keyed messages: one key always lands on one partition.
    for (i, (p, _)) in delivered.iter().enumerate() {
        assert_eq!(*p, delivered[i % 7].0, "key k{} moved partition", i % 7);
    }

    let consumer: StreamConsumer = kafka_consumer_config(&kafka.bootstrap(), "smoke")
        .create()
        .expect("consumer");
    consumer.subscribe(&["t"]).expect("subscribe");
    let mut got = BTreeSet::new();
    let consumed = tokio::time::timeout(Duration::from_secs(60), async {
        while got.len() < 30 {
            let m = consumer.recv().await.expect("recv");
            let payload = m.payload_view::<str>().expect("payload").expect("utf-8");
            got.insert(payload.to_string());
        }
    })
    .await;
    assert!(consumed.is_ok(), "consumed only {} of 30", got.len());
    let expected: BTreeSet<String> = messages.into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, expected);
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    drop(consumer); // leaves the group before the broker goes away

    let committed = kafka_committed_offsets(&kafka.bootstrap(), "smoke", "t").await;
    assert_eq!(committed.len(), 3, "{committed:?}");
    assert_eq!(committed.iter().map(|(_, o)| o).sum::<i64>(), 30);
    kafka.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_admin_creates_topic() {
    let kafka = Kafka::start(&[]).await;
    kafka.create_topic("made", 2).await;
    let delivered = kafka_produce(&kafka.bootstrap(), "made", &[(None::<&str>, "x")]).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        kafka_committed_offsets(&kafka.bootstrap(), "nobody", "made").await,
        [(0, -1), (1, -1)]
    );
    // Dropped without stop(): Drop kills the broker by PID.
}
