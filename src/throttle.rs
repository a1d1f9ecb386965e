//! Logging an outage once per window with a count, not once per request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttle {
    window: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub fn new(window: Duration) -> Self {
        Throttle {
            window,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence; `Some(n)` when a line should be written now,
    /// `n` being the occurrences since the last line (this one included).
    pub fn hit(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 += 1;
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < self.window => None,
            _ => {
                let n = s.1;
                *s = (Some(now), 0);
                Some(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_with_the_count() {
        let t = Throttle::new(Duration::from_secs(10));
        let now = Instant::now();
        assert_eq!(t.hit(now), Some(1));
        for i in 1..=5 {
            assert_eq!(t.hit(now + Duration::from_secs(i)), None);
        }
        assert_eq!(t.hit(now + Duration::from_secs(10)), Some(6));
        assert_eq!(t.hit(now + Duration::from_secs(11)), None);
    }
}
