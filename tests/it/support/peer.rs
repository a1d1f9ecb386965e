//! The benches' peers in processes of their own: another server (adnanh/
//! webhook), or the bench itself started again to serve only its peer.

use std::time::Duration;

/// A peer's process; stopped (by PID) when dropped, also when the bench
/// panics.
pub struct PeerProcess(pub std::process::Child);

impl PeerProcess {
    /// This executable started again with `key=value` in its environment:
    /// the bench's `main` sees it and serves only its peer.
    pub fn this_bench_with(key: &str, value: &str) -> PeerProcess {
        PeerProcess(
            std::process::Command::new(std::env::current_exe().unwrap())
                .env(key, value)
                .spawn()
                .expect("the peer process"),
        )
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `url` answers at all (any status), for up to 15 s.
pub async fn wait_up(url: &str) {
    for _ in 0..300 {
        if reqwest::get(url).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never came up");
}
