//! The `rookery` binary: a standalone server or, with `server.N` lines, an ensemble member;
//! configured by defaults, a zoo.cfg and flags. `rookery admin ...` instead talks to a running
//! member through its control socket (`dataDir/admin.sock`), e.g.
//! `rookery admin --config zoo.cfg transfer-leader --to 2`. `rookery import zookeeper ...` and
//! `rookery export zookeeper ...` move a data dir from and to Apache ZooKeeper
//! ([`rookery::migrate`]).

use clap::Parser;
use rookery::config::{Config, Flags};
use rookery::server::listener::Server;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ROOKERY_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,raft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // With the `failpoints` feature, FAILPOINTS=name=action;... configures them for tests.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    if std::env::args_os().nth(1).is_some_and(|a| a == "admin") {
        return admin_main();
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "import" || a == "export" || a == "verify")
    {
        return migrate_main();
    }
    let flags = Flags::parse();
    let config = match Config::load(&flags) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("rookery: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rookery: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(server) => server,
            Err(error) => {
                eprintln!("rookery: {error}");
                return std::process::ExitCode::FAILURE;
            }
        };
        match server.run(shutdown_signal()).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                // Fail-stop: a supervisor restarts the process on a storage it can trust.
                tracing::error!(%error, "rookery is exiting after a fatal error");
                eprintln!("rookery: fatal: {error}");
                std::process::ExitCode::from(3)
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `rookery admin`: commands for a running ensemble member, sent to its control socket.
#[derive(Parser, Debug)]
#[command(name = "rookery admin")]
struct AdminCli {
    /// The member's zoo.cfg (its dataDir holds the control socket).
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// The member's data directory (instead of, or overriding, --config).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    command: AdminCommand,
}

/// A `rookery admin` command.
#[derive(clap::Subcommand, Debug)]
enum AdminCommand {
    /// Move leadership to server N (any member forwards it to the leader), or, without --to
    /// and sent to the leader, to its most caught-up voter. Prints the new leader and term.
    TransferLeader {
        /// The server id that should lead.
        #[arg(long, value_name = "N")]
        to: Option<u64>,
    },
    /// Print the leader this member knows, and its term.
    Leader,
}

/// Runs `rookery admin`; exit 0 on `ok`, 1 on an error answer, 2 on bad usage or no server.
fn admin_main() -> std::process::ExitCode {
    use std::io::{Read, Write};
    let cli = AdminCli::parse_from(std::env::args_os().skip(1));
    let data_dir = match (&cli.data_dir, &cli.config) {
        (Some(dir), _) => dir.clone(),
        (None, config) => {
            let flags = Flags {
                config: config.clone(),
                ..Flags::default()
            };
            match Config::load(&flags) {
                Ok(config) => config.data_dir,
                Err(error) => {
                    eprintln!("rookery admin: {error}");
                    return std::process::ExitCode::from(2);
                }
            }
        }
    };
    let line = match &cli.command {
        AdminCommand::TransferLeader { to: Some(to) } => format!("transfer-leader {to}\n"),
        AdminCommand::TransferLeader { to: None } => "transfer-leader\n".to_string(),
        AdminCommand::Leader => "leader\n".to_string(),
    };
    let path = data_dir.join(rookery::server::admin::CONTROL_SOCKET);
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::os::unix::net::UnixStream::connect(&path)?;
        // Bounded: the server answers a transfer within two election timeouts.
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(std::time::Duration::from_secs(5)))?;
        stream.write_all(line.as_bytes())?;
        let mut answer = String::new();
        stream.take(4096).read_to_string(&mut answer)?;
        Ok(answer)
    })();
    match answer {
        Ok(answer) => {
            let answer = answer.trim();
            println!("{answer}");
            if answer.starts_with("ok") {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("rookery admin: cannot reach {}: {error}", path.display());
            std::process::ExitCode::from(2)
        }
    }
}

/// `rookery import|export zookeeper ...`.
#[derive(Parser, Debug)]
#[command(name = "rookery")]
struct MigrateCli {
    /// import or export.
    #[command(subcommand)]
    command: MigrateCommand,
}

/// Which way.
#[derive(clap::Subcommand, Debug)]
enum MigrateCommand {
    /// Move data from Apache ZooKeeper into rookery.
    Import {
        /// The source.
        #[command(subcommand)]
        from: ImportSource,
    },
    /// Write rookery's data as Apache ZooKeeper's.
    Export {
        /// The target.
        #[command(subcommand)]
        to: ExportTarget,
    },
    /// Compare a rookery server's tree with a ZooKeeper server's through the client
    /// protocol, node by node; exit 1 on any difference (each printed with path and field).
    Verify {
        /// The source server (ZooKeeper), host:port[,host:port...].
        #[arg(long, value_name = "HOST:PORT")]
        source: String,
        /// The target server (rookery).
        #[arg(long, value_name = "HOST:PORT")]
        target: String,
        /// Credentials for both sessions, SCHEME:AUTH (e.g. digest:user:password); repeatable.
        #[arg(long, value_name = "SCHEME:AUTH")]
        auth: Vec<String>,
        /// A field not to compare (data, acl, children, czxid, mzxid, ctime, mtime, version,
        /// cversion, aversion, ephemeralOwner, dataLength, numChildren, pzxid); repeatable.
        #[arg(long, value_name = "FIELD")]
        ignore: Vec<String>,
        /// Compare only what a live copy preserves: data, ACLs, children, dataLength and
        /// numChildren (not zxids, times, versions, owners).
        #[arg(long)]
        ignore_stat: bool,
        /// A subtree not to compare (e.g. /zookeeper); repeatable.
        #[arg(long, value_name = "PATH")]
        skip: Vec<String>,
    },
}

/// Where an import reads from.
#[derive(clap::Subcommand, Debug)]
enum ImportSource {
    /// Offline: a stopped ZooKeeper 3.8 server's data dir (snapshot + transaction logs),
    /// written as a new standalone rookery data dir that `rookery --data-dir DIR` serves
    /// (`--data-dir ... --to ...`). Live: a copy from a running ZooKeeper into a running
    /// rookery through the client protocol, then following changes until SIGINT
    /// (`--from ... --server ... [--once]`).
    Zookeeper {
        /// ZooKeeper's dataDir (holding version-2/snapshot.*), or version-2 itself.
        #[arg(
            long,
            value_name = "ZK_DATA_DIR",
            requires = "to",
            conflicts_with = "from"
        )]
        data_dir: Option<std::path::PathBuf>,
        /// ZooKeeper's dataLogDir, if the logs are not in the dataDir.
        #[arg(long, value_name = "ZK_DATALOG_DIR", requires = "data_dir")]
        log_dir: Option<std::path::PathBuf>,
        /// The rookery data dir to create (must be missing or empty).
        #[arg(long, value_name = "ROOKERY_DATA_DIR", requires = "data_dir")]
        to: Option<std::path::PathBuf>,
        /// Live copy: the running ZooKeeper to read.
        #[arg(long, value_name = "ZK_HOST:PORT", requires = "server")]
        from: Option<String>,
        /// Live copy: the running rookery to write.
        #[arg(long, value_name = "ROOKERY_HOST:PORT", requires = "from")]
        server: Option<String>,
        /// Live copy: stop after the first full pass instead of following changes.
        #[arg(long, requires = "from")]
        once: bool,
        /// Live copy: credentials for both sessions, SCHEME:AUTH; repeatable.
        #[arg(long, value_name = "SCHEME:AUTH", requires = "from")]
        auth: Vec<String>,
    },
}

/// Where an export writes to.
#[derive(clap::Subcommand, Debug)]
enum ExportTarget {
    /// A ZooKeeper 3.8 snapshot in ZK_DATA_DIR/version-2 that Apache ZooKeeper loads.
    Zookeeper {
        /// A stopped rookery server's data dir.
        #[arg(long, value_name = "ROOKERY_DATA_DIR")]
        data_dir: std::path::PathBuf,
        /// ZooKeeper's dataDir to write (its version-2 must be missing or empty).
        #[arg(long, value_name = "ZK_DATA_DIR")]
        to: std::path::PathBuf,
    },
}

/// Runs `rookery import` / `rookery export`: exit 0 on success, 1 on failure.
fn migrate_main() -> std::process::ExitCode {
    let cli = MigrateCli::parse();
    let started = std::time::Instant::now();
    let result = match cli.command {
        MigrateCommand::Import {
            from:
                ImportSource::Zookeeper {
                    from: Some(from),
                    server: Some(server),
                    once,
                    auth,
                    ..
                },
        } => {
            let opts = rookery::migrate::live::LiveOptions {
                from,
                server,
                auth: parse_auth(&auth),
                once,
            };
            block_on(async move {
                rookery::migrate::live::live_copy(&opts, shutdown_signal()).await
            })
            .map(|report| print!("{report}"))
        }
        MigrateCommand::Import {
            from:
                ImportSource::Zookeeper {
                    data_dir: Some(data_dir),
                    log_dir,
                    to: Some(to),
                    ..
                },
        } => rookery::migrate::import::import(&data_dir, log_dir.as_deref(), &to).map(|report| {
            print!("{report}");
            println!(
                "wrote {} in {:.2?}; start it with: rookery --data-dir {}",
                to.display(),
                started.elapsed(),
                to.display()
            );
        }),
        MigrateCommand::Export {
            to: ExportTarget::Zookeeper { data_dir, to },
        } => rookery::migrate::export::export(&data_dir, &to).map(|(path, state)| {
            println!(
                "wrote {} ({} znodes, {} sessions, last zxid {:#x}, {} log entries replayed) in {:.2?}",
                path.display(),
                state.tree.znode_count(),
                state.sessions.len(),
                state.last_zxid,
                state.replayed,
                started.elapsed()
            );
        }),
        MigrateCommand::Import { .. } => {
            eprintln!(
                "rookery import zookeeper: give --data-dir and --to (offline), or --from and \
                 --server (live)"
            );
            return std::process::ExitCode::from(2);
        }
        MigrateCommand::Verify {
            source,
            target,
            auth,
            mut ignore,
            ignore_stat,
            skip,
        } => {
            if ignore_stat {
                ignore.extend(
                    rookery::migrate::verify::UNPRESERVABLE
                        .iter()
                        .map(|f| f.to_string()),
                );
            }
            if let Some(bad) = ignore
                .iter()
                .find(|f| !rookery::migrate::verify::is_field(f))
            {
                eprintln!("rookery verify: unknown field {bad:?}");
                return std::process::ExitCode::from(2);
            }
            let opts = rookery::migrate::verify::VerifyOptions {
                source,
                target,
                auth: parse_auth(&auth),
                ignore,
                skip,
                concurrency: 128,
            };
            match block_on(async move { rookery::migrate::verify::verify(&opts).await }) {
                Ok(report) => {
                    for d in &report.differences {
                        println!("{d}");
                    }
                    println!(
                        "compared {} znodes: {} differences ({:.2?})",
                        report.nodes,
                        report.differences.len(),
                        started.elapsed()
                    );
                    if report.differences.is_empty() {
                        return std::process::ExitCode::SUCCESS;
                    }
                    return std::process::ExitCode::FAILURE;
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rookery: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `SCHEME:AUTH` strings as (scheme, auth bytes).
fn parse_auth(auth: &[String]) -> Vec<(String, Vec<u8>)> {
    auth.iter()
        .map(|a| match a.split_once(':') {
            Some((scheme, cred)) => (scheme.to_string(), cred.as_bytes().to_vec()),
            None => (a.clone(), Vec::new()),
        })
        .collect()
}

/// Runs a migration future on a fresh runtime.
fn block_on<T>(
    f: impl std::future::Future<Output = Result<T, rookery::migrate::MigrateError>>,
) -> Result<T, rookery::migrate::MigrateError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| rookery::migrate::MigrateError::Client(format!("async runtime: {e}")))?
        .block_on(f)
}
