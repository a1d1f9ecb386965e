//! The messages of every assigned partition, read from one queue of ours in
//! batches (`rd_kafka_consume_batch_queue`) instead of one consumer poll per
//! message.
//!
//! A polled message costs librdkafka a lock of the consumer queue and two
//! clock reads (its `max.poll.interval.ms` bookkeeping), and rdkafka an event
//! wrapper in an `Arc` and a third clock read — a sixth of the consumer
//! thread on a busy topic nobody wants (docs/performance.md, eighth round).
//! A batch pays the clock reads once.
//!
//! How the queues are wired:
//! * Each partition's fetch queue is forwarded to `FetchQueue` when it is
//!   assigned, in the rebalance callback before librdkafka starts fetching
//!   it (`Forward::partitions`). librdkafka keeps a forward the
//!   application set (it only forwards to the consumer queue otherwise).
//! * Rebalances, commit results and errors stay on the consumer queue, which
//!   the consumer thread polls between batches. While the thread waits on
//!   the fetch queue, the consumer queue's non-empty callback wakes it
//!   (`rd_kafka_queue_yield`).
//! * Revoked and paused partitions: librdkafka bumps their version, and a
//!   batch drops their messages fetched before that, as a poll does.
//! * Everything in a batch is handed out: librdkafka has moved each
//!   partition's position past its batch already, so a message left out
//!   would be skipped. (A partition paused for a full queue therefore takes
//!   the rest of the batch.)
//!
//! The queue and every message taken from it must be gone before the
//! consumer is destroyed: `Fetched` borrows the `FetchQueue`, which the
//! consumer thread drops before the consumer.

use std::cell::OnceCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::{Message, Timestamp, TopicPartitionList};

/// Messages taken from the queue at a time.
pub(super) const BATCH: usize = 64;

/// A queue handle that may cross threads (librdkafka's queues are
/// thread-safe).
#[derive(Clone, Copy)]
struct QueuePtr(NonNull<rd::rd_kafka_queue_t>);

// SAFETY: librdkafka queue handles may be used from any thread.
unsafe impl Send for QueuePtr {}

/// The fetch queue as the rebalance callback (on the consumer thread) and
/// the wake-up (on librdkafka's threads, maybe while the consumer thread
/// drops the queue) see it: `None` once it is destroyed.
#[derive(Default)]
pub(super) struct Forward(Mutex<Option<QueuePtr>>);

impl Forward {
    fn get(&self) -> std::sync::MutexGuard<'_, Option<QueuePtr>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forwards the fetch queues of `tpl`'s partitions to the fetch queue.
    /// Called in the rebalance callback, before they are assigned; a no-op
    /// once the queue is gone (the consumer is closing).
    pub(super) fn partitions<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) {
        // Not held during the calls below: the wake-up takes this lock
        // inside librdkafka's consumer-queue lock, so holding it while
        // librdkafka takes queue locks could deadlock. The queue cannot go
        // meanwhile: it is dropped on this same thread.
        let Some(to) = *self.get() else { return };
        let rk = consumer.client().native_ptr();
        for e in tpl.elements() {
            let Ok(topic) = CString::new(e.topic()) else {
                continue;
            };
            // SAFETY: `rk` is the live consumer; the partition queue handle
            // is destroyed right after (the forward stays on the partition).
            unsafe {
                let from = rd::rd_kafka_queue_get_partition(rk, topic.as_ptr(), e.partition());
                if !from.is_null() {
                    rd::rd_kafka_queue_forward(from, to.0.as_ptr());
                    rd::rd_kafka_queue_destroy(from);
                }
            }
        }
    }

    /// Makes a wait on the fetch queue return now. Runs on librdkafka's
    /// threads, under the consumer queue's lock.
    fn wake(&self) {
        if let Some(q) = *self.get() {
            // SAFETY: the handle is alive while it is in the lock.
            unsafe { rd::rd_kafka_queue_yield(q.0.as_ptr()) };
        }
    }
}

/// The queue every assigned partition's messages are forwarded to, and a
/// handle on the consumer queue (to see whether it holds events).
pub(super) struct FetchQueue {
    queue: QueuePtr,
    consumer_queue: QueuePtr,
    forward: Arc<Forward>,
}

impl FetchQueue {
    /// Creates the queue, publishes it in `forward` (which the consumer's
    /// rebalance callback uses) and makes events on the consumer queue wake
    /// a wait on it. Before subscribing.
    pub(super) fn open<C: ConsumerContext>(
        consumer: &mut BaseConsumer<C>,
        forward: Arc<Forward>,
    ) -> Option<FetchQueue> {
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is the live consumer; both handles are destroyed in
        // `Drop`, before the consumer (see the module documentation).
        let (queue, consumer_queue) = unsafe {
            (
                NonNull::new(rd::rd_kafka_queue_new(rk)),
                NonNull::new(rd::rd_kafka_queue_get_consumer(rk)),
            )
        };
        let (queue, consumer_queue) = match (queue, consumer_queue) {
            (Some(q), Some(c)) => (QueuePtr(q), QueuePtr(c)),
            (q, c) => {
                // SAFETY: handles just created, used nowhere else.
                for made in [q, c].into_iter().flatten() {
                    unsafe { rd::rd_kafka_queue_destroy(made.as_ptr()) };
                }
                return None;
            }
        };
        *forward.get() = Some(queue);
        let wake = forward.clone();
        consumer.set_nonempty_callback(move || wake.wake());
        Some(FetchQueue {
            queue,
            consumer_queue,
            forward,
        })
    }

    /// Takes up to [`BATCH`] messages into `into` (emptied first), waiting
    /// up to `wait` for the first one. Returns early, possibly with none,
    /// when the consumer queue gets an event.
    pub(super) fn fill<'q>(&'q self, wait: Duration, into: &mut Vec<Fetched<'q>>) {
        into.clear();
        let mut raw = [ptr::null_mut::<rd::rd_kafka_message_t>(); BATCH];
        let wait_ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `raw` holds BATCH pointers; librdkafka fills the first `n`.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.0.as_ptr(),
                wait_ms,
                raw.as_mut_ptr(),
                BATCH,
            )
        };
        let n = usize::try_from(n).unwrap_or(0).min(BATCH);
        into.extend(raw[..n].iter().filter_map(|&p| {
            NonNull::new(p).map(|ptr| Fetched {
                ptr,
                headers: OnceCell::new(),
                _queue: PhantomData,
            })
        }));
    }

    /// The consumer queue holds events (a rebalance, a commit result, an
    /// error) to poll for.
    pub(super) fn events_waiting(&self) -> bool {
        // SAFETY: the handle lives as long as `self`.
        unsafe { rd::rd_kafka_queue_length(self.consumer_queue.0.as_ptr()) > 0 }
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // Unpublished first: the callbacks stop using it.
        self.forward.get().take();
        // SAFETY: both handles were created in `open` and are dropped once.
        unsafe {
            rd::rd_kafka_queue_destroy(self.queue.0.as_ptr());
            rd::rd_kafka_queue_destroy(self.consumer_queue.0.as_ptr());
        }
    }
}

/// A message taken from the [`FetchQueue`]; destroyed on drop.
pub(super) struct Fetched<'q> {
    ptr: NonNull<rd::rd_kafka_message_t>,
    /// Copied out of librdkafka when first asked for (most filters never
    /// read headers).
    headers: OnceCell<Option<OwnedHeaders>>,
    _queue: PhantomData<&'q FetchQueue>,
}

impl Fetched<'_> {
    fn raw(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: valid until `Drop`.
        unsafe { self.ptr.as_ref() }
    }

    /// The error librdkafka delivers in place of a message (end of a
    /// partition, a fetch error), as rdkafka's poll reports it.
    pub(super) fn error(&self) -> Option<KafkaError> {
        let err = self.raw().err;
        match err {
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => None,
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                Some(KafkaError::PartitionEOF(self.raw().partition))
            }
            e => Some(KafkaError::MessageConsumption(e.into())),
        }
    }

    /// A copy that outlives the queue (for the partition's task).
    pub(super) fn detach(&self) -> OwnedMessage {
        OwnedMessage::new(
            self.payload().map(<[u8]>::to_vec),
            self.key().map(<[u8]>::to_vec),
            self.topic().to_string(),
            self.timestamp(),
            self.partition(),
            self.offset(),
            // Copied once: out of librdkafka, or from the copy a filter
            // that read them already made.
            match self.headers.get() {
                Some(copied) => copied.clone(),
                None => self.copy_headers(),
            },
        )
    }

    /// The message's headers, copied out of librdkafka.
    fn copy_headers(&self) -> Option<OwnedHeaders> {
        let mut native = ptr::null_mut();
        // SAFETY: a live message; its headers live as long.
        let found = unsafe { rd::rd_kafka_message_headers(self.ptr.as_ptr(), &mut native) };
        if found != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        let mut headers = OwnedHeaders::new();
        for i in 0.. {
            let (mut name, mut value, mut size) = (ptr::null::<c_char>(), ptr::null::<c_void>(), 0);
            // SAFETY: `native` is the message's header list; the name and
            // value live as long as it.
            let err =
                unsafe { rd::rd_kafka_header_get_all(native, i, &mut name, &mut value, &mut size) };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                break;
            }
            // SAFETY: as above.
            let key = unsafe { CStr::from_ptr(name) }.to_string_lossy();
            let value = unsafe { bytes(value, size) };
            headers = headers.insert(Header { key: &key, value });
        }
        Some(headers)
    }
}

impl Drop for Fetched<'_> {
    fn drop(&mut self) {
        // SAFETY: taken from a batch, destroyed once.
        unsafe { rd::rd_kafka_message_destroy(self.ptr.as_ptr()) };
    }
}

/// `len` bytes at `p`, if any.
///
/// # Safety
/// `p` must point at `len` readable bytes living as long as `'a`.
unsafe fn bytes<'a>(p: *const c_void, len: usize) -> Option<&'a [u8]> {
    // SAFETY: per the caller.
    (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

impl Message for Fetched<'_> {
    type Headers = OwnedHeaders;

    fn key(&self) -> Option<&[u8]> {
        // SAFETY: the message owns its key until it is destroyed.
        unsafe { bytes(self.raw().key, self.raw().key_len) }
    }

    fn payload(&self) -> Option<&[u8]> {
        // SAFETY: as for the key.
        unsafe { bytes(self.raw().payload, self.raw().len) }
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        let (p, len) = (self.raw().payload, self.raw().len);
        // SAFETY: the message owns its payload, borrowed mutably with it.
        (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
    }

    fn topic(&self) -> &str {
        // SAFETY: the topic handle outlives its messages; librdkafka's
        // topic names are C strings.
        let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.raw().rkt)) };
        name.to_str().unwrap_or("")
    }

    fn partition(&self) -> i32 {
        self.raw().partition
    }

    fn offset(&self) -> i64 {
        self.raw().offset
    }

    fn timestamp(&self) -> Timestamp {
        use rd::rd_kafka_timestamp_type_t as Kind;
        let mut kind = Kind::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message.
        let ms = unsafe { rd::rd_kafka_message_timestamp(self.ptr.as_ptr(), &mut kind) };
        match kind {
            _ if ms == -1 => Timestamp::NotAvailable,
            Kind::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => Timestamp::NotAvailable,
            Kind::RD_KAFKA_TIMESTAMP_CREATE_TIME => Timestamp::CreateTime(ms),
            Kind::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => Timestamp::LogAppendTime(ms),
        }
    }

    fn headers(&self) -> Option<&OwnedHeaders> {
        self.headers.get_or_init(|| self.copy_headers()).as_ref()
    }
}
