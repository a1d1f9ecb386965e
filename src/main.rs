use std::process::ExitCode;

use clap::Parser;
use tripline::cli::{self, Cli};

/// mimalloc instead of glibc's malloc: a profile of the webhook path spent a
/// quarter of its time in malloc/free, partly waiting on arena locks
/// (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
