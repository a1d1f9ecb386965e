//! Command line: `serve`, `validate`, `test`. Parsing is clap derive; each
//! command is a function returning an exit code.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::app::{self, Engine};
use crate::config::{Config, ConfigError, SubmitConfig};
use crate::event::Event;
use crate::sensor::filter::Trace;
use crate::sensor::{self, Explanation, LoadErrors};
use crate::sources::{self, SourceError};
use crate::submit::outbox::Outbox;
use crate::submit::{DeadLetter, Submitter};

#[derive(Debug, Parser)]
#[command(
    name = "tripline",
    version,
    about = "Turns webhooks, NATS and Kafka events into Kubernetes workflows, exactly once."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, global = true, env = "TRIPLINE_LOG", default_value = "info")]
    pub log: String,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every source in the config and submit what the sensors fire.
    Serve(ServeArgs),
    /// Check the config and every sensor; exit non-zero with clear errors.
    Validate(ConfigArgs),
    /// Show, per dependency and filter, why an event matches a sensor or
    /// not, and print the rendered object(s). Submits nothing.
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Server config.
    #[arg(long, short, default_value = "tripline.yaml")]
    pub config: PathBuf,
    /// Sensor file or directory (overrides `sensors:` in the config).
    #[arg(long)]
    pub sensors: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Listen address (overrides `listen:`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Write objects to the outbox even when a cluster is configured.
    #[arg(long)]
    pub dry_run: bool,
    /// Kubeconfig to use (overrides the config and $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Sensor file.
    pub sensor_file: PathBuf,
    /// Event payload file (JSON, or any text).
    #[arg(long)]
    pub event: PathBuf,
    /// Request header, repeatable: `--header X-GitHub-Event=push`.
    #[arg(long = "header", short = 'H', value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Source the event comes from (default: the first dependency's).
    #[arg(long)]
    pub source: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once(['=', ':'])
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Sensors(#[from] LoadErrors),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Submit(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Validate(args) => validate(args),
        Command::Test(args) => test(args),
    }
}

fn load_config(args: &ConfigArgs) -> Result<Config, CliError> {
    let mut cfg = Config::load(&args.config)?;
    if let Some(s) = &args.sensors {
        cfg.sensors = s.clone();
    }
    Ok(cfg)
}

fn validate(args: ConfigArgs) -> Result<ExitCode, CliError> {
    let cfg = load_config(&args)?;
    let set = sensor::load(
        std::slice::from_ref(&cfg.sensors),
        Some(&cfg.source_names()),
    )?;
    // Secrets must resolve too: a missing env var is a config error.
    sources::build(&cfg)?;
    let triggers: usize = set.sensors.iter().map(|s| s.triggers.len()).sum();
    println!(
        "ok: {} source(s), {} sensor(s), {} trigger(s) in {}",
        cfg.sources.len(),
        set.sensors.len(),
        triggers,
        cfg.sensors.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let mut cfg = load_config(&args.config)?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    let set = sensor::load(
        std::slice::from_ref(&cfg.sensors),
        Some(&cfg.source_names()),
    )?;
    let submitter = build_submitter(&cfg, args.dry_run, args.kubeconfig.as_deref()).await?;
    tracing::info!(
        sensors = set.sensors.len(),
        sources = cfg.sources.len(),
        submit = %submitter.describe(),
        dead_letter = %cfg.dead_letter.display(),
        "starting"
    );
    let engine = Arc::new(Engine::new(
        set,
        submitter,
        DeadLetter::new(&cfg.dead_letter),
    ));
    let sources = sources::build(&cfg)?;
    // Every source is "not ready" until it says otherwise, so /readyz never
    // answers 200 before a broker source has connected.
    for s in &cfg.sources {
        engine.readiness.set(s.name(), false, "starting");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    tokio::spawn(reload_on_sighup(
        engine.clone(),
        cfg.sensors.clone(),
        cfg.source_names(),
        shutdown.clone(),
    ));
    app::run_sources(engine, sources, shutdown, cfg.limits.shutdown_deadline).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn build_submitter(
    cfg: &Config,
    dry_run: bool,
    kubeconfig: Option<&Path>,
) -> Result<Arc<dyn Submitter>, CliError> {
    let outbox = |dir: &Path, ns: &str| -> Result<Arc<dyn Submitter>, CliError> {
        let o = Outbox::new(dir, ns).map_err(|source| CliError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Arc::new(o))
    };
    match &cfg.submit {
        SubmitConfig::Outbox { dir, namespace } => outbox(dir, namespace),
        SubmitConfig::Kubernetes { namespace, .. } if dry_run => {
            outbox(Path::new("outbox"), namespace)
        }
        SubmitConfig::Kubernetes {
            namespace,
            kubeconfig: from_config,
            context,
            timeout,
        } => {
            let path = kubeconfig.or(from_config.as_deref());
            let k = crate::submit::kube::KubeSubmitter::connect(
                path,
                context.as_deref(),
                namespace,
                *timeout,
            )
            .await
            .map_err(|e| CliError::Submit(e.to_string()))?;
            Ok(Arc::new(k))
        }
    }
}

/// Reloads the sensors on SIGHUP. A set that does not load is refused whole
/// (the running sensors stay) and its errors are logged, as `validate`
/// prints them.
async fn reload_on_sighup(
    engine: Arc<Engine>,
    path: PathBuf,
    sources: std::collections::HashSet<String>,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    {
        use std::sync::atomic::Ordering;
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("no SIGHUP handler: sensors cannot be reloaded");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            match sensor::load(std::slice::from_ref(&path), Some(&sources)) {
                Ok(set) => {
                    let n = set.sensors.len();
                    engine.reload(set);
                    engine.stats.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(sensors = n, path = %path.display(), "sensors reloaded");
                }
                Err(e) => {
                    engine.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(errors = %e, "sensor reload refused; the running sensors stay");
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (engine, path, sources, shutdown);
}

/// Cancels `token` on SIGTERM or Ctrl-C.
async fn wait_for_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested: no new events; finishing in-flight work");
    token.cancel();
}

fn test(args: TestArgs) -> Result<ExitCode, CliError> {
    let set = sensor::load(std::slice::from_ref(&args.sensor_file), None)?;
    let raw = std::fs::read(&args.event).map_err(|source| CliError::Io {
        path: args.event.clone(),
        source,
    })?;
    let source = args
        .source
        .clone()
        .or_else(|| {
            set.sensors
                .first()
                .and_then(|s| s.dependencies.first())
                .map(|d| d.source.clone())
        })
        .unwrap_or_default();
    let mut meta = serde_json::Map::new();
    let body = crate::event::parse_payload(&raw, &mut meta);
    let mut event = Event::new(&source, &raw, body);
    event.meta = meta;
    for (k, v) in &args.headers {
        event.headers.insert(k, v.clone());
    }
    if let Some(t) = event
        .headers
        .get("x-github-event")
        .or(event.headers.get("x-gitlab-event"))
    {
        event.kind = t.to_string();
    }
    let explanation = set.explain(&event);
    let rendered = app::preview(&set, &event, Some("default"));
    let fired = !rendered.is_empty();
    let mut out = std::io::stdout().lock();
    let _ = match args.output {
        Output::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(
                &json!({"explanation": explanation, "rendered": rendered})
            )
            .unwrap_or_default()
        ),
        Output::Text => write!(out, "{}", text_report(&explanation, &rendered)),
    };
    Ok(if fired {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Human-readable explanation: a tree of filters with ✓/✗, the value seen
/// and the reason, then each rendered object as YAML.
pub fn text_report(e: &Explanation, rendered: &[app::Rendered]) -> String {
    let mut s = format!("event {} from source `{}`\n", e.event_id, e.source);
    if let Some(n) = &e.note {
        s.push_str(&format!("  {n}\n"));
    }
    for sensor in &e.sensors {
        s.push_str(&format!("\nsensor {}\n", sensor.sensor));
        for d in &sensor.dependencies {
            let verdict = if d.matched { "MATCHED" } else { "not matched" };
            s.push_str(&format!(
                "  dependency {} (source {}): {verdict}\n",
                d.name, d.source
            ));
            match &d.filters {
                Some(t) => trace_lines(t, 2, &mut s),
                None => s.push_str("    (no filters: every event from the source)\n"),
            }
        }
    }
    for r in rendered {
        s.push_str(&format!("\ntrigger {}/{}", r.sensor, r.trigger));
        if let Some(n) = &r.note {
            s.push_str(&format!(" ({n})"));
        }
        match (&r.object, &r.error) {
            (Some(obj), _) => {
                s.push_str(" would submit:\n---\n");
                s.push_str(&serde_yaml_ng::to_string(obj).unwrap_or_default());
            }
            (None, Some(err)) => s.push_str(&format!(" cannot render: {err}\n")),
            _ => s.push('\n'),
        }
    }
    if rendered.is_empty() {
        s.push_str("\nno trigger fires for this event\n");
    }
    s
}

fn trace_lines(t: &Trace, depth: usize, s: &mut String) {
    let mark = if t.matched { "✓" } else { "✗" };
    let mut line = format!("{}{mark} {}", "  ".repeat(depth), t.filter);
    if let Some(seen) = &t.seen {
        line.push_str(&format!("  (seen: {})", compact(seen)));
    }
    if let Some(r) = &t.reason {
        line.push_str(&format!("  — {r}"));
    }
    s.push_str(&line);
    s.push('\n');
    for c in &t.children {
        trace_lines(c, depth + 1, s);
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
