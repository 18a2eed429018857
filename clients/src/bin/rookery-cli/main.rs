//! `rookery-cli`: a zkCli-like shell for rookery and ZooKeeper.
//!
//! ```text
//! rookery-cli [-server host:port[,host:port][/chroot]] [-timeout ms] [cmd args...]
//! ```
//! With a command: runs it and exits (non-zero on error). Without: an interactive shell with
//! history and completion when stdin is a terminal, else reads commands from stdin, one per
//! line, and exits non-zero if any failed.

mod commands;
mod format;

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use commands::{execute, tokenize, CliError, Outcome, Shell, COMMANDS};

/// Command-line options.
struct Options {
    /// Connection string.
    server: String,
    /// Session timeout.
    timeout: Duration,
    /// A one-shot command, if given.
    command: Vec<String>,
}

/// What the command line asks for.
enum Parsed {
    /// Connect and run.
    Run(Options),
    /// `-h` / `--help`: print the usage and exit 0, without connecting.
    Help,
}

fn usage() -> String {
    let mut text = String::from(
        "usage: rookery-cli [-server host:port[,host:port...][/chroot]] [-timeout ms] [cmd args...]\n\
         \n\
         Options (zkCli's single-dash spelling; --server and --timeout work too):\n\
         \x20 -server host:port[,...][/chroot]   servers to connect to (default localhost:2181)\n\
         \x20 -timeout ms                        session timeout (default 30000)\n\
         \x20 -h, --help                         print this help and exit\n\
         \n\
         With a command: run it and exit (non-zero on error). Without: an interactive shell,\n\
         or commands from stdin, one per line.\n\
         \n\
         Commands:\n",
    );
    for (_, line) in COMMANDS {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn parse_options(args: Vec<String>) -> Result<Parsed, String> {
    let mut options = Options {
        server: "localhost:2181".into(),
        timeout: Duration::from_millis(30_000),
        command: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-server" | "--server" => {
                options.server = it.next().ok_or("-server needs host:port")?;
            }
            "-timeout" | "--timeout" => {
                let ms: u64 = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("-timeout needs a number of milliseconds")?;
                options.timeout = Duration::from_millis(ms);
            }
            "-waitforconnection" | "--waitforconnection" | "-r" | "--readonly" => {}
            "-h" | "--help" | "-help" => return Ok(Parsed::Help),
            _ => {
                options.command.push(arg);
                options.command.extend(it.by_ref());
            }
        }
    }
    Ok(Parsed::Run(options))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let options = match parse_options(std::env::args().skip(1).collect()) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("{msg}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = match runtime.block_on(commands::connect(&options.server, options.timeout)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Unable to connect to {}: {e}", options.server);
            return ExitCode::FAILURE;
        }
    };
    let interactive = options.command.is_empty() && std::io::stdin().is_terminal();
    let shell = Shell {
        client: Arc::new(Mutex::new(Some(client))),
        server: Arc::new(Mutex::new(options.server.clone())),
        timeout: options.timeout,
        print_watches: interactive,
    };
    let code = if !options.command.is_empty() {
        match runtime.block_on(execute(&shell, &options.command)) {
            Ok(_) => ExitCode::SUCCESS,
            Err(CliError(msg)) => {
                eprintln!("{msg}");
                ExitCode::FAILURE
            }
        }
    } else if interactive {
        interactive_loop(&runtime, &shell)
    } else {
        scripted_loop(&runtime, &shell)
    };
    let client = shell.client.lock().ok().and_then(|mut c| c.take());
    if let Some(c) = client {
        runtime.block_on(c.close());
    }
    code
}

/// Runs one line; false if it failed.
fn run_line(runtime: &tokio::runtime::Runtime, shell: &Shell, line: &str) -> Result<Outcome, ()> {
    let words = match tokenize(line) {
        Ok(w) => w,
        Err(CliError(msg)) => {
            eprintln!("{msg}");
            return Err(());
        }
    };
    match runtime.block_on(execute(shell, &words)) {
        Ok(o) => Ok(o),
        Err(CliError(msg)) => {
            eprintln!("{msg}");
            Err(())
        }
    }
}

/// Commands from a pipe or file: no prompt, exit status 1 if any command failed.
fn scripted_loop(runtime: &tokio::runtime::Runtime, shell: &Shell) -> ExitCode {
    let mut failed = false;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match run_line(runtime, shell, line) {
            Ok(Outcome::Quit) => break,
            Ok(Outcome::Continue) => {}
            Err(()) => failed = true,
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn interactive_loop(runtime: &tokio::runtime::Runtime, shell: &Shell) -> ExitCode {
    let mut editor: Editor<CliHelper, DefaultHistory> = match Editor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot start the line editor: {e}");
            return ExitCode::FAILURE;
        }
    };
    editor.set_helper(Some(CliHelper {
        shell: shell.clone(),
        runtime: runtime.handle().clone(),
    }));
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".rookery_cli_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut n = 0;
    loop {
        let state = shell
            .client
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.state()));
        let state = match state {
            Some(s) if s.is_connected() => "CONNECTED".to_string(),
            Some(s) => format!("{s:?}").to_uppercase(),
            None => "CLOSED".to_string(),
        };
        let prompt = format!("[zk: {}({state}) {n}] ", shell.server());
        match editor.readline(&prompt) {
            Ok(line) => {
                let line = line.trim().to_string();
                if line.is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line.as_str());
                n += 1;
                if let Ok(Outcome::Quit) = run_line(runtime, shell, &line) {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("{e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    ExitCode::SUCCESS
}

/// Completes command names, then znode paths (asking the server for children).
struct CliHelper {
    /// Gives access to the current client.
    shell: Shell,
    /// To run the children lookup from the editor's (non-async) thread.
    runtime: tokio::runtime::Handle,
}

impl Completer for CliHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(char::is_whitespace)
            .map(|i| i + 1)
            .unwrap_or(0);
        let word = &before[start..];
        if start == 0 {
            let pairs = COMMANDS
                .iter()
                .filter(|(name, _)| name.starts_with(word))
                .map(|(name, _)| Pair {
                    display: name.to_string(),
                    replacement: format!("{name} "),
                })
                .collect();
            return Ok((start, pairs));
        }
        if !word.starts_with('/') {
            return Ok((pos, Vec::new()));
        }
        let Ok(client) = self.shell.client() else {
            return Ok((pos, Vec::new()));
        };
        let (parent, prefix) = match word.rfind('/') {
            Some(0) => ("/", &word[1..]),
            Some(i) => (&word[..i], &word[i + 1..]),
            None => return Ok((pos, Vec::new())),
        };
        let children = self
            .runtime
            .block_on(commands::children_of(&client, parent));
        let pairs = children
            .into_iter()
            .filter(|c| c.starts_with(prefix))
            .map(|c| {
                let full = rookery_client::join_path(parent, &c);
                Pair {
                    display: c,
                    replacement: full,
                }
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for CliHelper {
    type Hint = String;
}

impl Highlighter for CliHelper {}

impl Validator for CliHelper {}

impl Helper for CliHelper {}
