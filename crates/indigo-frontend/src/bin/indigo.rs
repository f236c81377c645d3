//! The `indigo` command: `indigo run` starts the Chroma-compatible server.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use indigo_frontend::Settings;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "indigo",
    version,
    about = "Indigo, a vector database with Chroma's HTTP API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server on a local data directory.
    Run {
        /// Data directory [default: ./indigo_data]
        #[arg(long)]
        path: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1]
        #[arg(long)]
        host: Option<String>,
        /// Port [default: 8000]
        #[arg(long)]
        port: Option<u16>,
        /// Settings file (YAML or TOML); INDIGO_* variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Runs one process of the distributed mode: any of the roles frontend, log,
    /// query, compactor, gc, over a PostgreSQL catalogue and S3-compatible
    /// storage (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    Serve {
        /// A role to run (repeat it, or give a comma list): frontend, log, query,
        /// compactor, gc.
        #[arg(long = "role", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// The catalogue: a PostgreSQL connection string or postgres:// URL.
        #[arg(long, env = "INDIGO_CATALOGUE")]
        catalogue: Option<String>,
        /// The bucket of the S3-compatible store.
        #[arg(long, env = "INDIGO_S3_BUCKET")]
        s3_bucket: Option<String>,
        /// Its endpoint (none: AWS).
        #[arg(long, env = "INDIGO_S3_ENDPOINT")]
        s3_endpoint: Option<String>,
        /// Where query nodes cache index versions [default: ./indigo_cache]
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Where compactors build versions [default: ./indigo_work]
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1]
        #[arg(long)]
        host: Option<String>,
        /// Port [default: 8000; 0 picks a free one]
        #[arg(long)]
        port: Option<u16>,
        /// The address the other processes reach this one at [default: where it listens]
        #[arg(long)]
        advertise: Option<String>,
        /// Settings file (YAML or TOML); INDIGO_* variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Backs up a data directory. Offline (`--path DATA --to DIR`, the directory
    /// not in use) or from a running server (`--url URL --name NAME`, written to
    /// the server's backup_dir/NAME while it keeps serving).
    Backup {
        /// Data directory of a stopped server.
        #[arg(long, conflicts_with = "url", requires = "to")]
        path: Option<PathBuf>,
        /// Where the offline backup goes (a new or empty directory).
        #[arg(long)]
        to: Option<PathBuf>,
        /// A running server, e.g. http://127.0.0.1:8000
        #[arg(long, requires = "name")]
        url: Option<String>,
        /// The backup's name under the server's backup_dir.
        #[arg(long)]
        name: Option<String>,
        /// A token with admin: true, if the server has tokens.
        #[arg(long, env = "INDIGO_TOKEN")]
        token: Option<String>,
    },
    /// Restores a backup into a new or empty data directory (checking every
    /// file against the backup's manifest first).
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// The data directory to create.
        #[arg(long)]
        path: PathBuf,
    },
    /// Rebuilds a lost or older catalogue (sysdb.sqlite3) from the collections'
    /// own records. Run it on a stopped server's data directory; it deletes nothing.
    Repair {
        /// Data directory [default: ./indigo_data]
        #[arg(long, default_value = "./indigo_data")]
        path: PathBuf,
        /// Also drop catalogue entries whose collection directory is gone.
        #[arg(long)]
        forget_missing: bool,
    },
}

/// mimalloc's `purge_delay` option (its index in `mi_option_t`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Hands this thread's free allocator pages back to the system.
fn trim() {
    // SAFETY: mimalloc's collect has no preconditions.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// A runtime with request threads that trim as they park, at most once a
/// second each (a collect walks the thread's heap; parking happens between
/// every few requests).
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(indigo_health::trim_now_and_then)
        .build()
        .map_err(|e| e.to_string())
}

fn main() {
    // Give freed memory back to the OS soon: a server's memory should follow its
    // data, not the peak of its last compaction (mimalloc's default kept up to
    // 230 MiB after indexing 10k x 384 vectors). Not at once, though: with no
    // delay every chunk the compactor folds faults its buffers in afresh, and
    // page faults took 12% of an ingest's CPU (60k x 784: 27 s of server CPU
    // with no delay, 24 s with 250 ms; resident memory after indexing 10k x 384,
    // 111 MiB, then 97 MiB once the next requests let it purge, against 90).
    // MIMALLOC_PURGE_DELAY (milliseconds) overrides it.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide allocator option before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 250) };
    }
    // The delay counts only while a thread keeps allocating: a thread that goes
    // idle kept its free pages (30-40 MiB after a 60k x 784 ingest, with
    // 54 MiB of the heap in use). Idle threads hand them back instead.
    indigo_health::set_trim(trim);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INDIGO_LOG")
                // PostgreSQL's notices ("relation … already exists, skipping") are not news.
                .unwrap_or_else(|_| "info,tokio_postgres=warn,postgres=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (path, host, port, config) = match cli.command {
        Command::Run {
            path,
            host,
            port,
            config,
        } => (path, host, port, config),
        Command::Repair {
            path,
            forget_missing,
        } => std::process::exit(repair(&path, forget_missing)),
        Command::Backup {
            path,
            to,
            url,
            name,
            token,
        } => std::process::exit(backup(path, to, url, name, token)),
        Command::Restore { from, path } => std::process::exit(restore(&from, &path)),
        Command::Serve {
            roles,
            catalogue,
            s3_bucket,
            s3_endpoint,
            cache_dir,
            work_dir,
            host,
            port,
            advertise,
            config,
        } => {
            let mut settings = load_settings(config.as_deref());
            let c = &mut settings.cluster;
            c.roles = roles;
            if let Some(v) = catalogue {
                c.catalogue = v;
            }
            if let Some(v) = s3_bucket {
                c.s3_bucket = v;
            }
            if let Some(v) = s3_endpoint {
                c.s3_endpoint = Some(v);
            }
            if let Some(v) = cache_dir {
                c.cache_dir = v;
            }
            if let Some(v) = work_dir {
                c.work_dir = v;
            }
            if let Some(v) = advertise {
                c.advertise = Some(v);
            }
            if let Some(h) = host {
                settings.host = h;
            }
            if let Some(p) = port {
                settings.port = p;
            }
            if let Err(e) = serve(settings) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
            return;
        }
    };
    let mut settings = load_settings(config.as_deref());
    if let Some(p) = path {
        settings.path = p;
    }
    if let Some(h) = host {
        settings.host = h;
    }
    if let Some(p) = port {
        settings.port = p;
    }
    if let Err(e) = run(settings) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn load_settings(config: Option<&std::path::Path>) -> Settings {
    match Settings::load(config, std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// `indigo serve`: the roles given, until SIGINT/SIGTERM.
fn serve(settings: Settings) -> Result<(), String> {
    let rt = runtime()?;
    let mut running = indigo_frontend::cluster::serve::start(settings, &rt)?;
    tracing::info!(
        "Indigo {} listening on http://{} (member {})",
        running.roles.join("+"),
        running.address,
        running.id
    );
    println!(
        "Indigo {} listening on http://{}",
        running.roles.join("+"),
        running.address
    );
    let r = rt.block_on(running.serve(shutdown()));
    // Leases end and roles stop before the runtime goes.
    drop(running);
    drop(rt);
    r
}

fn backup(
    path: Option<PathBuf>,
    to: Option<PathBuf>,
    url: Option<String>,
    name: Option<String>,
    token: Option<String>,
) -> i32 {
    let report = |r: &indigo::BackupReport, at: &str| {
        println!(
            "backed up {} collections ({} log records not yet indexed), {} files, {} bytes, to {at}",
            r.collections, r.log_records, r.files, r.bytes
        );
    };
    if let (Some(url), Some(name)) = (url, name) {
        return match post_backup(&url, &name, token.as_deref()) {
            Ok(v) => {
                let r = indigo::BackupReport {
                    collections: v["collections"].as_u64().unwrap_or(0) as usize,
                    log_records: v["log_records"].as_u64().unwrap_or(0),
                    files: v["files"].as_u64().unwrap_or(0) as usize,
                    bytes: v["bytes"].as_u64().unwrap_or(0),
                };
                report(&r, v["path"].as_str().unwrap_or(&name));
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        };
    }
    let (Some(path), Some(to)) = (path, to) else {
        eprintln!("error: give --path DATA --to DIR (offline) or --url URL --name NAME (online)");
        return 2;
    };
    let opts = indigo::Options {
        background_compaction: false,
        ..Default::default()
    };
    let r = indigo::Indigo::open_with(&path, opts).and_then(|db| db.backup(&to));
    match r {
        Ok(r) => {
            report(&r, &to.display().to_string());
            0
        }
        Err(indigo::Error::InUse(p)) => {
            eprintln!(
                "error: {} is served by a running Indigo; back it up through the server: \
                 indigo backup --url http://HOST:PORT --name NAME (the server needs backup_dir)",
                p.display()
            );
            1
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `POST /api/v2/admin/backup` over plain HTTP/1.1 (no TLS: for a server on a
/// trusted network or behind a proxy).
fn post_backup(url: &str, name: &str, token: Option<&str>) -> Result<serde_json::Value, String> {
    use std::io::{Read, Write};
    let hostport = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported here"))?
        .trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).map_err(|e| format!("{url}: {e}"))?;
    let body = serde_json::json!({ "name": name }).to_string();
    let auth = token.map_or(String::new(), |t| format!("X-Chroma-Token: {t}\r\n"));
    write!(
        s,
        "POST /api/v2/admin/backup HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("{url}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    let v: serde_json::Value = serde_json::from_str(rest).unwrap_or_default();
    if status == "200" {
        Ok(v)
    } else {
        Err(format!(
            "the server answered {status}: {}",
            v["message"].as_str().unwrap_or(rest)
        ))
    }
}

fn restore(from: &std::path::Path, path: &std::path::Path) -> i32 {
    match indigo::restore(from, path) {
        Ok(r) => {
            println!(
                "restored {} collections ({} files, {} bytes) into {}; start it with \
                 `indigo run --path {}`",
                r.collections,
                r.files,
                r.bytes,
                path.display(),
                path.display()
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn repair(path: &std::path::Path, forget_missing: bool) -> i32 {
    match indigo::repair(path, forget_missing) {
        Ok(r) => {
            for (id, tenant, database, name) in &r.restored {
                println!("restored collection {name:?} ({id}) in {tenant}/{database}");
            }
            for id in &r.forgotten {
                println!("dropped collection {id} from the catalogue (its directory is gone)");
            }
            for id in &r.unknown_log {
                println!(
                    "the log holds records of collection {id}, which nothing else names; they are kept"
                );
            }
            if r.restored.is_empty() && r.forgotten.is_empty() {
                println!("the catalogue already accounts for every collection directory");
            }
            println!("done: `indigo run --path {}` will start", path.display());
            0
        }
        Err(indigo::Error::InUse(p)) => {
            eprintln!(
                "error: {} is in use by a running Indigo; stop it first",
                p.display()
            );
            1
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn run(settings: Settings) -> Result<(), String> {
    let options = indigo::Options {
        limits: settings.limits(),
        default_index: settings.default_index()?,
        backlog: settings.backlog(),
        memory: settings.memory(),
        ..Default::default()
    };
    let db = indigo::Indigo::open_with(&settings.path, options).map_err(|e| match e {
        indigo::Error::InUse(p) => format!(
            "{} is in use by another Indigo process; stop it or pass --path to use another directory",
            p.display()
        ),
        e => format!("cannot open {}: {e}", settings.path.display()),
    })?;
    let db = Arc::new(db);
    let rt = runtime()?;
    let addr = format!("{}:{}", settings.host, settings.port);
    let path = settings.path.clone();
    let app = indigo_frontend::router(db.clone(), settings);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}; pass --port to use another"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(
            "Indigo listening on http://{local}, data in {}",
            path.display()
        );
        println!(
            "Indigo listening on http://{local} (data: {})",
            path.display()
        );
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|e| e.to_string())
    })?;
    drop(rt);
    // In-flight requests are done; dropping the database checkpoints and closes it.
    match Arc::try_unwrap(db) {
        Ok(db) => drop(db),
        Err(_) => tracing::warn!("requests still hold the database; exiting anyway"),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
