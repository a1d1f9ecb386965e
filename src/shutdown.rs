//! Shutdown as one small value passed down to every task: the signal (a
//! cancellation token) and the drain deadline that bounds what happens after it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct Shutdown {
    token: CancellationToken,
    deadline: Duration,
}

impl Shutdown {
    /// `deadline`: how long in-flight work may take once shutdown began.
    pub fn new(deadline: Duration) -> Self {
        Shutdown {
            token: CancellationToken::new(),
            deadline,
        }
    }

    /// Starts the shutdown (idempotent).
    pub fn begin(&self) {
        self.token.cancel();
    }

    pub fn is_begun(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown began.
    pub async fn begun(&self) {
        self.token.cancelled().await
    }

    /// The token itself, for `select!` loops and child tokens.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// How long in-flight work may take after the signal.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}
