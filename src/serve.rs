//! `tripline serve`: builds the submitter, the engine and the sources from
//! the config, runs them — broker sources as tasks, webhooks on the HTTP
//! server beside the admin endpoints — and shuts them down: on SIGTERM (or a
//! source failing) intake stops and in-flight work gets the drain deadline.
//! SIGHUP, or a change of the sensor files, reloads the sensors; a change of
//! the config file that checks out starts a new generation on the same
//! listening sockets.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{Config, CorrelationConfig, JournalConfig, SourceConfig, SubmitConfig};
use crate::engine::Engine;
use crate::http::{self, HttpError};
use crate::limits::ByteBudget;
use crate::outcome::Process;
use crate::readiness::Readiness;
use crate::sensor::{self, LoadErrors};
use crate::shutdown::Shutdown;
use crate::sources::webhook::journal;
use crate::sources::webhook::server::wait_tasks;
use crate::sources::webhook::{Intake, Journal, Rejections, Webhooks};
use crate::sources::{SourceContext, SourceError};
use crate::state::local::LocalStore;
use crate::state::nats_kv::NatsKvStore;
use crate::state::Store;
use crate::submit::kube::KubeSubmitter;
use crate::submit::outbox::Outbox;
use crate::submit::{DeadLetter, Submitter};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Sensors(#[from] LoadErrors),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{0}")]
    Submit(String),
    #[error("outbox {}: {source}", path.display())]
    Outbox {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a task failed: {0}")]
    Task(String),
    #[error("{0}")]
    Journal(String),
    #[error("correlation: {0}")]
    State(String),
}

/// How `serve` was asked to run, beyond the config.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Write to the outbox even when a cluster is configured.
    pub dry_run: bool,
    /// Kubeconfig overriding the config's and `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// Where the config came from, to reload it when it changes (with the
    /// command line's overrides applied again); `None`: never reloaded.
    pub config: Option<ConfigSource>,
}

/// A config file and the command line's overrides of it.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub sensors: Option<PathBuf>,
    pub listen: Option<std::net::SocketAddr>,
    pub admin_listen: Option<std::net::SocketAddr>,
}

impl ConfigSource {
    /// Loads and validates the file, then applies the overrides.
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        let mut cfg = Config::load(&self.path)?;
        if let Some(s) = &self.sensors {
            cfg.sensors = s.clone();
        }
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(l) = self.admin_listen {
            cfg.admin.listen = l;
        }
        Ok(cfg)
    }
}

/// Runs until SIGTERM/Ctrl-C (or a source fails), then drains. When the
/// config file changes and the new config checks out (it loads, its
/// sensors load, its secrets resolve, its sources and submit target build),
/// the running generation drains and the next one starts on the same
/// listening sockets; a config that does not check out is refused whole,
/// logged and counted, and the running one stays.
pub async fn run(cfg: Config, options: Options) -> Result<(), ServeError> {
    let process = Shutdown::new(cfg.limits.shutdown_deadline);
    tokio::spawn(begin_on_signal(process.clone()));
    let reloads = ConfigReloads::default();
    let mut cfg = cfg;
    let mut listeners: Option<Listeners> = None;
    loop {
        let l = match listeners.take() {
            Some(l) if l.serves(&cfg) => l.with_limits(&cfg),
            _ => Listeners::bind(&cfg).await?,
        };
        let generation = Shutdown::new(cfg.limits.shutdown_deadline);
        let next = Arc::new(std::sync::Mutex::new(None));
        tokio::spawn(watch_config(
            options.clone(),
            cfg.watch_sensors,
            process.clone(),
            generation.clone(),
            next.clone(),
            reloads.clone(),
        ));
        let result = run_generation(cfg, &options, l.clone(), generation.clone(), &reloads).await;
        generation.begin();
        let next = next.lock().unwrap_or_else(|e| e.into_inner()).take();
        match next {
            Some(new) if result.is_ok() && !process.is_begun() => {
                info!("config reloaded: the next generation starts");
                cfg = new;
                listeners = Some(l);
            }
            _ => return result,
        }
    }
}

/// Config reloads that took effect and that were refused: kept across
/// generations (each generation has its own engine and metrics).
#[derive(Clone, Default)]
pub struct ConfigReloads {
    pub ok: prometheus_client::metrics::counter::Counter,
    pub refused: prometheus_client::metrics::counter::Counter,
}

/// The public and admin listening sockets.
#[derive(Clone)]
struct Listeners {
    public: http::Server,
    admin: http::Server,
    addrs: (std::net::SocketAddr, std::net::SocketAddr),
}

fn conn_limits(cfg: &Config) -> http::ConnLimits {
    http::ConnLimits {
        max_header_bytes: cfg.limits.max_header_bytes,
        header_read_timeout: cfg.limits.header_read_timeout,
        max_connections: cfg.limits.max_connections,
    }
}

impl Listeners {
    async fn bind(cfg: &Config) -> Result<Listeners, ServeError> {
        let public = http::Server::bind(cfg.listen, conn_limits(cfg)).await?;
        let admin = http::Server::bind(cfg.admin.listen, conn_limits(cfg)).await?;
        Ok(Listeners {
            public,
            admin,
            addrs: (cfg.listen, cfg.admin.listen),
        })
    }

    /// Whether these sockets are the ones `cfg` asks for.
    fn serves(&self, cfg: &Config) -> bool {
        self.addrs == (cfg.listen, cfg.admin.listen)
    }

    fn with_limits(self, cfg: &Config) -> Listeners {
        Listeners {
            public: self.public.with_limits(conn_limits(cfg)),
            admin: self.admin.with_limits(conn_limits(cfg)),
            addrs: self.addrs,
        }
    }
}

/// One generation: the engine, its sensors and sources from `cfg`, until
/// `generation` ends (SIGTERM, a failed source, a config reload).
async fn run_generation(
    cfg: Config,
    options: &Options,
    listeners: Listeners,
    generation: Shutdown,
    reloads: &ConfigReloads,
) -> Result<(), ServeError> {
    crate::redact::configure(&cfg.redact_headers);
    let set = sensor::load(std::slice::from_ref(&cfg.sensors), &cfg.source_catalog())?;
    for w in &set.warnings {
        warn!(warning = %w, "sensor");
    }
    let submitter = build_submitter(&cfg, options.dry_run, options.kubeconfig.as_deref()).await?;
    info!(
        sensors = set.sensors.len(),
        sources = cfg.sources.len(),
        submit = %submitter.describe(),
        dead_letter = %cfg.dead_letter.display(),
        "starting"
    );
    let readiness = Arc::new(Readiness::default());
    let dead_letter =
        DeadLetter::with_max_bytes(&cfg.dead_letter, cfg.limits.dead_letter_max_bytes);
    let store = correlation_store(&cfg.correlation).await?;
    info!(store = %store.describe(), "correlation state");
    let mut engine = Engine::new(set, submitter, dead_letter)
        .with_budget(cfg.limits.retry_budget.clone())
        .with_correlation_store(store)
        .with_target_health(readiness.handle("submit"));
    engine
        .stats
        .register_config_reloads(reloads.ok.clone(), reloads.refused.clone());
    let engine = Arc::new(engine);
    tokio::spawn(reload_sensors(
        engine.clone(),
        cfg.sensors.clone(),
        cfg.source_catalog(),
        cfg.watch_sensors,
        generation.clone(),
    ));
    run_with(cfg, engine, readiness, generation, listeners).await
}

/// Watches the config file (every `watch`, as the sensor files; ConfigMap
/// symlink swaps included). A change that checks out is handed over in
/// `next` and ends `generation`; SIGTERM (`process`) ends it too.
async fn watch_config(
    options: Options,
    watch: Duration,
    process: Shutdown,
    generation: Shutdown,
    next: Arc<std::sync::Mutex<Option<Config>>>,
    reloads: ConfigReloads,
) {
    let source = options.config.clone().filter(|_| !watch.is_zero());
    let mut seen = source.as_ref().map(|s| file_fingerprint(&s.path));
    let mut tick = poll_every(watch);
    loop {
        tokio::select! {
            _ = process.begun() => {
                generation.begin();
                return;
            }
            _ = generation.begun() => return,
            _ = tick.tick() => {}
        }
        let Some(source) = &source else { continue };
        let now = file_fingerprint(&source.path);
        if Some(&now) == seen.as_ref() {
            continue;
        }
        seen = Some(now);
        match check_config(source, &options).await {
            Ok(cfg) => {
                reloads.ok.inc();
                info!(path = %source.path.display(), "config changed and checks out: draining to start with it");
                *next.lock().unwrap_or_else(|e| e.into_inner()) = Some(cfg);
                generation.begin();
                return;
            }
            Err(e) => {
                reloads.refused.inc();
                error!(path = %source.path.display(), error = %e, "config reload refused; the running config stays");
            }
        }
    }
}

/// Everything a generation needs from a new config, short of connecting:
/// the file validates, the sensors load against its sources, the secrets
/// resolve, the sources and the submit target build.
async fn check_config(source: &ConfigSource, options: &Options) -> Result<Config, String> {
    let cfg = source.load().map_err(|e| e.to_string())?;
    sensor::load(std::slice::from_ref(&cfg.sensors), &cfg.source_catalog())
        .map_err(|e| e.to_string())?;
    cfg.build_sources().map_err(|e| e.to_string())?;
    build_submitter(&cfg, options.dry_run, options.kubeconfig.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// The polling clock of the file watches: every `watch` (zero: watching
/// is off; an hourly tick nobody acts on keeps the select simple).
fn poll_every(watch: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(if watch.is_zero() {
        Duration::from_secs(3600)
    } else {
        watch
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Where a file's symlinks lead, its size and modification time.
type FileFingerprint = (PathBuf, u64, Option<std::time::SystemTime>);

/// A file's identity for change detection: where its symlinks lead, size,
/// modification time.
fn file_fingerprint(path: &Path) -> FileFingerprint {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let meta = std::fs::metadata(&real).ok();
    (
        real,
        meta.as_ref().map_or(0, |m| m.len()),
        meta.and_then(|m| m.modified().ok()),
    )
}

/// Runs the sources of `cfg` against `engine` until `shutdown`, reporting
/// readiness to `readiness`.
async fn run_with(
    cfg: Config,
    engine: Arc<Engine>,
    readiness: Arc<Readiness>,
    shutdown: Shutdown,
    listeners: Listeners,
) -> Result<(), ServeError> {
    let (endpoints, sources) = cfg.build_sources()?;
    for s in &cfg.sources {
        engine.stats.declare_source(s.name());
    }
    // Nobody reads a reply from a broker message: why it matched nothing is
    // worked out now and then (the status page), not for every message.
    engine.explain_sampled(
        cfg.sources
            .iter()
            .filter(|s| matches!(s, SourceConfig::Kafka(_) | SourceConfig::Nats(_)))
            .map(|s| s.name().to_string()),
    );
    let bytes = ByteBudget::new(cfg.limits.max_in_flight_bytes);
    let process: Arc<dyn Process> = engine.clone();

    // Every source is "not ready" until it says otherwise.
    let webhooks = Webhooks::new(endpoints, &cfg.limits);
    let mounts: Vec<_> = webhooks
        .mounts()
        .into_iter()
        .map(|(name, path)| (readiness.handle(&name), path))
        .collect();
    let contexts: Vec<SourceContext> = sources
        .iter()
        .map(|s| SourceContext {
            process: process.clone(),
            readiness: readiness.handle(s.name()),
            shutdown: shutdown.clone(),
            bytes: bytes.clone(),
        })
        .collect();

    let (public, admin) = (listeners.public, listeners.admin);
    for (handle, path) in &mounts {
        handle.set(true, format!("listening on {}{path}", public.addr()));
    }
    info!(public = %public.addr(), admin = %admin.addr(), "listening");

    // Webhook intake: deliveries not final in time wait in the journal.
    let journal = match &cfg.intake.journal {
        JournalConfig::Dir(dir) => Journal::open(dir),
        JournalConfig::Nats { nats } => Journal::open_nats(nats).await,
    }
    .map_err(|e| ServeError::Journal(e.to_string()))?;
    info!(journal = %journal.describe(), "webhook intake journal");
    let intake_tasks = TaskTracker::new();
    let rejections = Arc::new(Rejections::new(engine.stats.rejections.clone()));
    let (public_routes, admin_routes) = webhooks.routers(Intake {
        process: process.clone(),
        bytes,
        journal: journal.clone(),
        tasks: intake_tasks.clone(),
        shutdown: shutdown.clone(),
        rejections: rejections.clone(),
        reply_deadline: cfg.intake.reply_deadline,
    });
    let public_router = public_routes.route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let journal_for_metrics = journal.clone();
    let stats_engine = engine.clone();
    let before_scrape: Vec<http::BeforeScrape> = vec![Arc::new(move || {
        let (depth, age) = journal_for_metrics.depth();
        stats_engine.stats.journal_entries.set(depth as i64);
        stats_engine
            .stats
            .journal_oldest_seconds
            .set(age.as_secs() as i64);
    })];
    let admin_router =
        http::admin_router(engine, readiness.clone(), before_scrape).merge(admin_routes);

    let mut tasks: JoinSet<(String, Result<(), ServeError>)> = JoinSet::new();
    for (name, server, router) in [
        ("http", public, public_router),
        ("admin", admin, admin_router),
    ] {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let served = server.serve(router, shutdown).await;
            (name.to_string(), served.map_err(ServeError::from))
        });
    }
    {
        let (journal, process, handle, shutdown) = (
            journal,
            process.clone(),
            readiness.handle("journal"),
            shutdown.clone(),
        );
        let parallel = cfg.limits.max_in_flight;
        tasks.spawn(async move {
            journal::drain(journal, process, handle, shutdown, parallel).await;
            // Processing that outlived its request finishes (its event is
            // in the journal already, should the deadline pass first).
            wait_tasks(intake_tasks).await;
            ("journal".to_string(), Ok(()))
        });
    }
    for (source, cx) in sources.into_iter().zip(contexts) {
        tasks.spawn(async move {
            let name = source.name().to_string();
            (name, source.run(cx).await.map_err(ServeError::from))
        });
    }
    drain(tasks, &shutdown).await
}

/// Waits for every task. One failing stops the rest (better a restart by the
/// supervisor than a half-working bridge); once shutdown began, the deadline
/// bounds the wait.
async fn drain(
    mut tasks: JoinSet<(String, Result<(), ServeError>)>,
    shutdown: &Shutdown,
) -> Result<(), ServeError> {
    let wait = async {
        let mut first_error = None;
        while let Some(res) = tasks.join_next().await {
            match res {
                Ok((name, Err(e))) => {
                    error!(task = %name, error = %e, "failed");
                    first_error.get_or_insert(e);
                    shutdown.begin();
                }
                Ok((name, Ok(()))) => info!(task = %name, "stopped"),
                Err(e) => {
                    error!(error = %e, "task panicked");
                    first_error.get_or_insert(ServeError::Task(e.to_string()));
                    shutdown.begin();
                }
            }
        }
        first_error
    };
    let deadline = shutdown.deadline();
    let first_error = tokio::select! {
        e = wait => e,
        _ = async { shutdown.begun().await; tokio::time::sleep(deadline).await } => {
            warn!(deadline_s = deadline.as_secs(), "shutdown deadline passed; abandoning in-flight work (it will be redelivered)");
            None
        }
    };
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The correlation state store: a local directory, or a NATS KV bucket.
pub async fn correlation_store(cfg: &CorrelationConfig) -> Result<Arc<dyn Store>, ServeError> {
    let store: Arc<dyn Store> = match cfg {
        CorrelationConfig::Local { dir } => {
            Arc::new(LocalStore::open(dir).map_err(|e| ServeError::State(e.to_string()))?)
        }
        CorrelationConfig::Nats(c) => Arc::new(
            NatsKvStore::connect(c, std::time::Duration::from_secs(30))
                .await
                .map_err(|e| ServeError::State(e.to_string()))?,
        ),
    };
    Ok(store)
}

/// The outbox, or the Kubernetes API (`--dry-run` keeps the outbox).
pub async fn build_submitter(
    cfg: &Config,
    dry_run: bool,
    kubeconfig: Option<&Path>,
) -> Result<Arc<dyn Submitter>, ServeError> {
    let outbox = |dir: &Path, ns: &str| -> Result<Arc<dyn Submitter>, ServeError> {
        let o = Outbox::new(dir, ns).map_err(|source| ServeError::Outbox {
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
            let k = KubeSubmitter::connect(path, context.as_deref(), namespace, *timeout)
                .await
                .map_err(|e| ServeError::Submit(e.to_string()))?;
            Ok(Arc::new(k))
        }
    }
}

/// Reloads the sensors on SIGHUP, and when their files change (checked every
/// `watch`; zero: never). A set that does not load is refused whole (the
/// running sensors stay) and its errors are logged, as `validate` prints them.
async fn reload_sensors(
    engine: Arc<Engine>,
    path: PathBuf,
    sources: sensor::SourceCatalog,
    watch: Duration,
    shutdown: Shutdown,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            warn!("no SIGHUP handler: sensors cannot be reloaded");
            return;
        };
        let watching = !watch.is_zero();
        let mut tick = poll_every(watch);
        let mut seen = fingerprint(&path);
        loop {
            let cause = tokio::select! {
                _ = shutdown.begun() => return,
                got = hup.recv() => match got {
                    Some(()) => "SIGHUP",
                    None => return,
                },
                _ = tick.tick(), if watching => {
                    if fingerprint(&path) == seen {
                        continue;
                    }
                    "files changed"
                }
            };
            seen = fingerprint(&path);
            match sensor::load(std::slice::from_ref(&path), &sources) {
                Ok(set) => {
                    let n = set.sensors.len();
                    engine.reload(set);
                    info!(sensors = n, path = %path.display(), cause, "sensors reloaded");
                }
                Err(e) => {
                    engine.stats.reload_failures.inc();
                    error!(errors = %e, cause, "sensor reload refused; the running sensors stay");
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (engine, path, sources, watch, shutdown);
}

/// What the sensor files look like: names, where their symlinks lead (a
/// ConfigMap volume swaps its `..data` link), sizes and modification times.
fn fingerprint(path: &Path) -> Vec<(PathBuf, FileFingerprint)> {
    sensor::load::sensor_files(path)
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            let print = file_fingerprint(&f);
            (f, print)
        })
        .collect()
}

/// Begins the shutdown on SIGTERM or Ctrl-C.
async fn begin_on_signal(shutdown: Shutdown) {
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
    info!("shutdown requested: no new events; finishing in-flight work");
    shutdown.begin();
}
