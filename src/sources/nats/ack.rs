//! How a JetStream message is settled once its outcome is known: a pure
//! decision from the outcome's [`Disposition`] and the delivery count, with
//! the nak delay curve. The I/O (sending it, confirming it) is in
//! [`super::jetstream`].

use std::time::Duration;

use crate::backoff::exponential;
use crate::outcome::Disposition;

/// The consumer's settlement rules.
#[derive(Debug, Clone)]
pub struct AckRules {
    /// First nak delay, doubled per delivery…
    pub nak_delay: Duration,
    /// …up to this.
    pub max_nak_delay: Duration,
    /// The consumer's max deliveries (`-1`: unlimited).
    pub max_deliver: i64,
}

/// What to tell the server about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// `+ACK`. `confirm`: await the server's confirmation (worth a round
    /// trip when the event fired something, so a redelivery would cost an
    /// API call).
    Ack { confirm: bool },
    /// `-NAK` with a delay; `last`: this was the last delivery `maxDeliver`
    /// allows, so JetStream gives the message up.
    Nak { delay: Duration, last: bool },
    /// `+TERM`, confirmed: a rejected (dead-lettered) event must not come back.
    Term,
}

impl AckRules {
    /// The settlement of a message delivered `delivered` times (1-based)
    /// whose outcome had `disposition` and fired `fired` triggers.
    pub fn settle(&self, disposition: Disposition, delivered: i64, fired: bool) -> Settle {
        match disposition {
            Disposition::Done => Settle::Ack { confirm: fired },
            Disposition::Rejected => Settle::Term,
            Disposition::Retry => Settle::Nak {
                delay: nak_delay(self.nak_delay, self.max_nak_delay, delivered),
                last: self.max_deliver > 0 && delivered >= self.max_deliver,
            },
        }
    }
}

/// Delay of the `-NAK` for a message delivered `delivered` times (1-based):
/// `base · 2^(delivered−1)`, at most `max`.
pub fn nak_delay(base: Duration, max: Duration, delivered: i64) -> Duration {
    exponential(base, max, delivered.clamp(1, 21) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nak_delay_doubles_per_delivery_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(10));
        let d: Vec<u64> = (1..=6).map(|n| nak_delay(base, max, n).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 10, 10]);
        assert_eq!(nak_delay(base, max, 0), base);
        assert_eq!(nak_delay(base, max, i64::MAX), max);
    }

    #[test]
    fn settlement_follows_the_disposition() {
        let rules = AckRules {
            nak_delay: Duration::from_secs(1),
            max_nak_delay: Duration::from_secs(60),
            max_deliver: 3,
        };
        assert_eq!(
            rules.settle(Disposition::Done, 1, false),
            Settle::Ack { confirm: false },
            "an event that fired nothing is acked without a round trip"
        );
        assert_eq!(
            rules.settle(Disposition::Done, 1, true),
            Settle::Ack { confirm: true }
        );
        assert_eq!(rules.settle(Disposition::Rejected, 1, true), Settle::Term);
        assert_eq!(
            rules.settle(Disposition::Retry, 2, true),
            Settle::Nak {
                delay: Duration::from_secs(2),
                last: false
            }
        );
        assert_eq!(
            rules.settle(Disposition::Retry, 3, true),
            Settle::Nak {
                delay: Duration::from_secs(4),
                last: true
            }
        );
        let unlimited = AckRules {
            max_deliver: -1,
            ..rules
        };
        assert!(matches!(
            unlimited.settle(Disposition::Retry, 1000, true),
            Settle::Nak { last: false, .. }
        ));
    }
}
