//! The `rookery` binary: a standalone server or, with `server.N` lines, an ensemble member;
//! configured by defaults, a zoo.cfg and flags. `rookery admin ...` instead talks to a running
//! member through its control socket (`dataDir/admin.sock`), e.g.
//! `rookery admin --config zoo.cfg transfer-leader --to 2`.

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
