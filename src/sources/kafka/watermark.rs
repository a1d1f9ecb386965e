//! Acknowledgement bookkeeping for one partition: which offsets have a
//! final outcome ([`Watermark`], pure), and what is queued and running
//! ([`Progress`], shared by the consumer thread and the partition's tasks).

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

/// How many bytes (keys and values) of one partition may wait for a
/// processing slot; see [`KafkaConfig::max_queued`] for the message count.
/// Past either, the partition is paused at the broker; it resumes once both
/// are down to half. Pausing drops what librdkafka prefetched, and resuming
/// fetches it again (one broker round trip), so the queue must cover that
/// round trip at full speed: a small queue turns into a pause/resume cycle
/// per round trip (measured: 500 messages halved the outbox throughput and
/// cut the no-match path 60-fold).
const MAX_QUEUED_BYTES: usize = 8 << 20;

/// Which offsets of one partition have a final outcome, and so what may be
/// committed. Offsets are recorded as they are dispatched (in the order the
/// broker delivers them, which is offset order) and removed when final; gaps
/// in offsets (compaction, transaction markers) need no special care.
#[derive(Debug, Default)]
pub struct Watermark {
    /// Dispatched, no final outcome yet.
    pending: BTreeSet<i64>,
    /// One past the highest offset dispatched.
    next: Option<i64>,
    /// What was last committed (or sent to be).
    pub(super) committed: Option<i64>,
}

impl Watermark {
    /// Records a dispatched message; `false` if that offset was dispatched
    /// already (it is then not processed twice).
    pub fn dispatched(&mut self, offset: i64) -> bool {
        if self.pending.contains(&offset) {
            return false;
        }
        // An offset below what was dispatched is a rewind (offsets reset,
        // the topic re-created): processed again from there, never skipped;
        // deterministic names make a repeat harmless.
        self.pending.insert(offset);
        self.next = Some(offset + 1);
        true
    }

    /// Whether `offset` was dispatched and has no final outcome yet.
    pub fn in_flight(&self, offset: i64) -> bool {
        self.pending.contains(&offset)
    }

    /// Whether `offset` lies below what was dispatched (a rewind).
    pub fn is_rewind(&self, offset: i64) -> bool {
        self.next.is_some_and(|n| offset < n) && !self.pending.contains(&offset)
    }

    /// Records a message that was final as it was dispatched (settled on
    /// the consumer thread): [`Watermark::dispatched`] then
    /// [`Watermark::finished`], without adding it to the pending set. The
    /// caller has checked that it is not [`Watermark::in_flight`].
    pub fn passed(&mut self, offset: i64) {
        debug_assert!(!self.pending.contains(&offset));
        self.next = Some(offset + 1);
    }

    /// Records a final outcome.
    pub fn finished(&mut self, offset: i64) {
        self.pending.remove(&offset);
    }

    /// The offset to commit: every message below it has a final outcome.
    /// `None` before anything was dispatched.
    pub fn commit_point(&self) -> Option<i64> {
        match (self.pending.first(), self.next) {
            (Some(p), Some(n)) => Some((*p).min(n)),
            (p, n) => p.copied().or(n),
        }
    }

    /// The commit point, if it is not what was committed last.
    pub fn uncommitted(&self) -> Option<i64> {
        self.commit_point().filter(|p| Some(*p) != self.committed)
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// One assigned partition's progress, shared by the consumer thread and the
/// partition's tasks.
#[derive(Default)]
pub struct Progress {
    state: Mutex<ProgressState>,
    /// Signalled when a message stops running.
    stopped_running: Condvar,
}

#[derive(Default)]
pub struct ProgressState {
    pub marks: Watermark,
    /// Messages in processing (including those waiting to retry).
    pub running: usize,
    /// Dispatched messages waiting for a processing slot, and their size.
    pub queued: usize,
    pub queued_bytes: usize,
    /// Someone waits in [`Progress::wait_idle`]: only then is a message
    /// that stops running worth a wake-up (a system call each).
    idle_waiters: usize,
}

impl ProgressState {
    pub fn full(&self, max_queued: usize) -> bool {
        self.queued >= max_queued || self.queued_bytes >= MAX_QUEUED_BYTES
    }

    pub fn drained(&self, max_queued: usize) -> bool {
        self.queued <= max_queued / 2 && self.queued_bytes <= MAX_QUEUED_BYTES / 2
    }
}

/// What a message weighs in the queue.
pub fn size(m: &impl Message) -> usize {
    m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len)
}

impl Progress {
    pub fn lock(&self) -> MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves a message from the queue to running, unless the partition is
    /// being released.
    pub fn start(self: &Arc<Self>, stop: &CancellationToken, bytes: usize) -> Option<Running> {
        let mut s = self.lock();
        // Checked under the lock: the consumer thread cancels `stop` and then
        // waits (under this lock) for `running` to reach zero.
        if stop.is_cancelled() {
            return None;
        }
        s.queued = s.queued.saturating_sub(1);
        s.queued_bytes = s.queued_bytes.saturating_sub(bytes);
        s.running += 1;
        Some(Running(self.clone()))
    }

    /// Waits until nothing runs, or `deadline`; `true` if nothing runs.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let mut s = self.lock();
        s.idle_waiters += 1;
        while s.running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = match self.stopped_running.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
        s.idle_waiters -= 1;
        s.running == 0
    }
}

/// A message in processing; dropping it (even in a panic) says it stopped.
pub struct Running(Arc<Progress>);

impl Drop for Running {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.running -= 1;
        if s.idle_waiters > 0 {
            self.0.stopped_running.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_never_passes_an_unfinished_message() {
        let mut w = Watermark::default();
        assert_eq!(w.commit_point(), None);
        for o in 10..15 {
            assert!(w.dispatched(o));
        }
        assert_eq!(w.commit_point(), Some(10));
        // 11, 12 and 14 finish before 10: nothing below 10 is done yet.
        w.finished(11);
        w.finished(12);
        w.finished(14);
        assert_eq!(w.commit_point(), Some(10));
        w.finished(10);
        assert_eq!(w.commit_point(), Some(13), "13 still pending");
        w.finished(13);
        assert_eq!(w.commit_point(), Some(15), "one past the highest");
        // Gaps (compaction, transaction markers) are fine.
        assert!(w.dispatched(20));
        assert_eq!(w.commit_point(), Some(20));
        w.finished(20);
        assert_eq!(w.commit_point(), Some(21));
        // An offset in flight is not dispatched twice.
        assert!(w.dispatched(21));
        assert!(!w.dispatched(21));
        w.finished(21);
        // A rewind (offsets reset, the topic re-created) is processed again,
        // and the commit point follows it down instead of skipping.
        assert!(w.is_rewind(3));
        assert!(w.dispatched(3));
        assert_eq!(w.commit_point(), Some(3));
        w.finished(3);
        assert_eq!(
            w.commit_point(),
            Some(4),
            "not 22: offsets 4.. of the new run are still to come"
        );
        assert!(w.dispatched(4));
        w.finished(4);
        assert_eq!(w.commit_point(), Some(5));
    }

    #[test]
    fn passing_is_dispatching_and_finishing() {
        // The same sequence of dispatches and outcomes, once with `passed`
        // for the messages final at dispatch and once the long way: the
        // same commit points and rewinds after every step.
        let steps: &[(i64, bool)] = &[
            (10, true),
            (11, false),
            (12, true),
            (13, true),
            (20, false),
            (21, true),
            (3, true), // a rewind
            (4, false),
            (5, true),
        ];
        let (mut short, mut long) = (Watermark::default(), Watermark::default());
        for &(offset, final_at_once) in steps {
            assert_eq!(short.is_rewind(offset), long.is_rewind(offset), "{offset}");
            if final_at_once {
                short.passed(offset);
                assert!(long.dispatched(offset));
                long.finished(offset);
            } else {
                assert!(short.dispatched(offset));
                assert!(long.dispatched(offset));
            }
            assert_eq!(short.commit_point(), long.commit_point(), "after {offset}");
            assert_eq!(short.pending(), long.pending());
        }
        assert_eq!(short.commit_point(), Some(4), "4 is still pending");
        short.finished(4);
        short.finished(11);
        short.finished(20);
        assert_eq!(short.commit_point(), Some(6));
    }

    #[test]
    fn waiting_for_idle_wakes_when_the_last_message_stops() {
        let progress = Arc::new(Progress::default());
        let stop = CancellationToken::new();
        let (a, b) = (
            progress.start(&stop, 1).unwrap(),
            progress.start(&stop, 1).unwrap(),
        );
        let long = Instant::now() + std::time::Duration::from_secs(30);
        assert!(!progress.wait_idle(Instant::now()), "two running");
        let waiter = {
            let progress = progress.clone();
            std::thread::spawn(move || progress.wait_idle(long))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(a);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "one still running");
        drop(b);
        assert!(
            waiter.join().unwrap(),
            "woken by the last one, long before the deadline"
        );
        assert_eq!(progress.lock().idle_waiters, 0);
    }

    #[test]
    fn uncommitted_reports_only_movement() {
        let mut w = Watermark::default();
        w.dispatched(0);
        assert_eq!(w.uncommitted(), Some(0));
        w.committed = Some(0);
        assert_eq!(w.uncommitted(), None);
        w.finished(0);
        assert_eq!(w.uncommitted(), Some(1));
    }
}
