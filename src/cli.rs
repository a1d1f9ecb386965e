//! Command line: `serve`, `validate`, `test`, `import`, `completions`.
//! Parsing is clap derive; each
//! command is a function returning an exit code; `serve` hands over to
//! [`crate::serve`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::config::{Config, ConfigError};
use crate::event::Event;
use crate::sensor::{self, LoadErrors};
use crate::serve::{self, ServeError};
use crate::sources::SourceError;

#[derive(Debug, Parser)]
#[command(
    name = "tripline",
    version,
    about = "Turns webhooks, NATS and Kafka events into Kubernetes workflows, exactly once.",
    after_help = "Examples:
  tripline serve                                   run ./tripline.yaml (no cluster: objects go to ./outbox/)
  tripline validate --skip-secrets                 check config and sensors in CI, without the secrets
  tripline test sensors/on-push.yaml --event push.json -H X-GitHub-Event=push
                                                   why an event fires or not, and what it would submit
  tripline import argo/sensor.yaml argo/eventsource.yaml > native.yaml
  tripline completions bash > /etc/bash_completion.d/tripline"
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
    Validate(ValidateArgs),
    /// Show, per dependency and filter, why an event matches a sensor or
    /// not, and print the rendered object(s). Submits nothing.
    Test(TestArgs),
    /// Convert Argo Events Sensors to native sensors and EventSources to
    /// `tripline.yaml` sources (printed on stdout; notes on stderr and as
    /// `# import:` comments).
    Import(ImportArgs),
    /// Print a shell completion script: `tripline completions bash >
    /// /etc/bash_completion.d/tripline`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
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
pub struct ValidateArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Do not read secrets (env vars, files): for a CI job that has the
    /// config but not the secrets. Everything else is still checked.
    #[arg(long)]
    pub skip_secrets: bool,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Public listen address (overrides `listen:`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin listen address (overrides `admin.listen:`).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
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
    /// Server config, to shape the event like its source would (a Kafka
    /// message, a NATS subject…); default `./tripline.yaml` when it exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The event's time (RFC 3339; default now), for time filters.
    #[arg(long)]
    pub time: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Argo Events Sensor and EventSource manifests.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Server config whose sources Argo dependencies bind to (by their
    /// `argo:` alias, else by the name `<eventSourceName>-<eventName>`);
    /// default `./tripline.yaml` when it exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
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
    #[error(transparent)]
    Sensors(#[from] LoadErrors),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("{0}")]
    Usage(String),
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
        Command::Import(args) => import(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "tripline", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_config(args: &ConfigArgs) -> Result<Config, CliError> {
    let mut cfg = Config::load(&args.config)?;
    if let Some(s) = &args.sensors {
        cfg.sensors = s.clone();
    }
    Ok(cfg)
}

fn validate(args: ValidateArgs) -> Result<ExitCode, CliError> {
    let cfg = load_config(&args.config)?;
    let set = sensor::load(std::slice::from_ref(&cfg.sensors), &cfg.source_catalog())?;
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
    // Secrets must resolve too: a missing env var is a config error.
    if args.skip_secrets {
        crate::secret::use_placeholders();
    }
    cfg.build_sources()?;
    let triggers: usize = set.sensors.iter().map(|s| s.triggers.len()).sum();
    println!(
        "ok: {} source(s), {} sensor(s), {} trigger(s) in {}",
        cfg.sources.len(),
        set.sensors.len(),
        triggers,
        cfg.sensors.display()
    );
    if args.skip_secrets {
        println!("secrets were not read (--skip-secrets)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let mut cfg = load_config(&args.config)?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(l) = args.admin_listen {
        cfg.admin.listen = l;
    }
    let options = serve::Options {
        dry_run: args.dry_run,
        kubeconfig: args.kubeconfig,
        config: Some(serve::ConfigSource {
            path: args.config.config.clone(),
            sensors: args.config.sensors.clone(),
            listen: args.listen,
            admin_listen: args.admin_listen,
        }),
    };
    serve::run(cfg, options).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn import(args: ImportArgs) -> Result<ExitCode, CliError> {
    use crate::sensor::argo::{argo_kind, import};
    use serde::Deserialize;
    let mut out = String::new();
    let mut failed = false;
    let mut taken_paths = Vec::new();
    let catalog = config_catalog(args.config.as_deref())?;
    for file in &args.files {
        let text = std::fs::read_to_string(file).map_err(|source| CliError::Io {
            path: file.clone(),
            source,
        })?;
        for (i, de) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let at = format!("{}: document {}", file.display(), i + 1);
            let doc = match Value::deserialize(de) {
                Ok(Value::Null) => continue,
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: {at}: {e}");
                    failed = true;
                    break;
                }
            };
            let converted = match argo_kind(&doc) {
                Some("Sensor") => import::sensor(&doc, &catalog),
                Some("EventSource") => import::event_source(&doc, &mut taken_paths),
                _ => {
                    eprintln!("note: {at}: not an Argo Sensor or EventSource; skipped");
                    continue;
                }
            };
            match converted {
                Ok(imported) => {
                    out.push_str("---\n");
                    for note in &imported.notes {
                        eprintln!("note: {at}: {note}");
                        out.push_str(&format!("# import: {note}\n"));
                    }
                    out.push_str(&serde_yaml_ng::to_string(&imported.doc).unwrap_or_default());
                }
                Err(errors) => {
                    failed = true;
                    for (path, message) in errors {
                        eprintln!("error: {at}: {path}: {message}");
                    }
                }
            }
        }
    }
    print!("{out}");
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `path`, else `./tripline.yaml` when it exists, else none.
fn optional_config(path: Option<&std::path::Path>) -> Result<Option<Config>, CliError> {
    let default = std::path::Path::new("tripline.yaml");
    Ok(match path {
        Some(p) => Some(Config::load(p)?),
        None if default.exists() => Some(Config::load(default)?),
        None => None,
    })
}

/// The sources Argo dependencies bind to for `import`/`test`: the config's
/// (any other name accepted), or any name.
fn config_catalog(path: Option<&std::path::Path>) -> Result<sensor::SourceCatalog, CliError> {
    Ok(optional_config(path)?
        .map(|c| c.source_catalog().opened())
        .unwrap_or_else(sensor::SourceCatalog::open))
}

fn test(args: TestArgs) -> Result<ExitCode, CliError> {
    // `--config`, else `./tripline.yaml` when present: its sources shape the
    // event and bind Argo dependencies (`argo:` blocks); any other source
    // name is accepted.
    let cfg = optional_config(args.config.as_deref())?;
    let catalog = cfg
        .as_ref()
        .map(|c| c.source_catalog().opened())
        .unwrap_or_else(sensor::SourceCatalog::open);
    let set = sensor::load(std::slice::from_ref(&args.sensor_file), &catalog)?;
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
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
    let mut event = crate::event::from_sample(&source, &raw, &args.headers);
    if let Some(t) = &args.time {
        let parsed = humantime::parse_rfc3339_weak(t)
            .map_err(|e| CliError::Usage(format!("--time `{t}`: {e}")))?;
        event.time = humantime::format_rfc3339_millis(parsed).to_string();
    }
    if let Some(cfg) = &cfg {
        shape_like_source(&mut event, cfg);
    }
    let explanation = set.explain(&event);
    let rendered = set.preview(&event, Some("default"));
    let fired = rendered.iter().any(|r| r.fires);
    let broken = rendered.iter().any(|r| r.fires && r.error.is_some());
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
        Output::Text => write!(
            out,
            "{}",
            crate::sensor::report::text(&explanation, &rendered)
        ),
    };
    Ok(if broken {
        // A trigger fires but cannot render: what would be dead-lettered.
        ExitCode::from(2)
    } else if fired {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Makes a test event look like what its source would deliver, when the
/// config names it: a Kafka message (topic, partition, offset, key), a NATS
/// message (subject), a webhook (its path).
fn shape_like_source(event: &mut Event, cfg: &Config) {
    let Some(source) = cfg.sources.iter().find(|s| s.name() == event.source) else {
        return;
    };
    let set = |event: &mut Event, k: &str, v: Value| {
        event.meta.insert(k.to_string(), v);
    };
    match source {
        crate::config::SourceConfig::Kafka(k) => {
            let topic = k.topics.first().cloned().unwrap_or_default();
            set(event, "topic", json!(topic));
            set(event, "partition", json!(0));
            set(event, "offset", json!(0));
            set(event, "key", Value::Null);
            event.kind = topic.clone();
            event.subject = topic;
        }
        crate::config::SourceConfig::Nats(n) => {
            let subject = n.subjects.first().cloned().unwrap_or_default();
            set(event, "subject", json!(subject));
            event.kind = subject.clone();
            event.subject = subject;
        }
        webhook => {
            if let Some(p) = webhook.webhook_path() {
                set(event, "path", json!(p));
            }
            if let Some(ct) = event.headers.get("content-type").map(str::to_string) {
                set(event, "contentType", json!(ct));
            }
        }
    }
}
