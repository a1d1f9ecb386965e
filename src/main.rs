use std::process::ExitCode;

use clap::Parser;
use tripline::cli::{self, Cli};

/// mimalloc instead of glibc's malloc: a profile of the webhook path spent a
/// quarter of its time in malloc/free, partly waiting on arena locks
/// (docs/performance.md). With `libmimalloc-sys`'s `override` feature
/// (Cargo.toml) the C code linked in — librdkafka, which allocates each
/// fetched message on its broker thread and frees it on the consumer
/// thread — uses it too: +11 % on a busy Kafka topic.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Arenas are committed as they are touched, not up front: idle RSS stays
/// where glibc's was (≈ 17 MB, not 25) at the same throughput. Set from
/// `.init_array`, before the first allocation reserves an arena (in `main`
/// it is too late); `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still
/// wins, being read later.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static LAZY_ARENAS: extern "C" fn() = lazy_arenas;

#[cfg(target_os = "linux")]
extern "C" fn lazy_arenas() {
    /// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e` (the Rust
    /// bindings name no constant for it).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: sets a process-wide allocator option before anything runs.
    unsafe { libmimalloc_sys::mi_option_set_default(ARENA_EAGER_COMMIT, 0) };
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = tripline::init_tracing(&cli.log, cli.log_json) {
        eprintln!("error: --log / TRIPLINE_LOG `{}`: {e}", cli.log);
        return ExitCode::from(2);
    }
    match cli::run(cli).await.map_err(anyhow::Error::from) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
