//! zkCli's commands: parsing, execution and zkCli-compatible output and error messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rookery_client::{acls, AddWatchMode, Client, CreateMode, CreateOptions, Error, WatcherType};

use crate::format;

/// Every command with its usage line, as `help` prints them.
pub const COMMANDS: &[(&str, &str)] = &[
    ("addWatch", "addWatch [-m mode] path # optional mode is one of [PERSISTENT, PERSISTENT_RECURSIVE] - default is PERSISTENT_RECURSIVE"),
    ("addauth", "addauth scheme auth"),
    ("close", "close"),
    ("config", "config [-c] [-w] [-s]"),
    ("connect", "connect host:port"),
    ("create", "create [-s] [-e] [-c] [-t ttl] path [data] [acl]"),
    ("delete", "delete [-v version] path"),
    ("deleteall", "deleteall path [-b batch size]"),
    ("get", "get [-s] [-w] path"),
    ("getAcl", "getAcl [-s] path"),
    ("getAllChildrenNumber", "getAllChildrenNumber path"),
    ("getEphemerals", "getEphemerals path"),
    ("help", "help"),
    ("ls", "ls [-s] [-w] [-R] path"),
    ("quit", "quit"),
    ("reconfig", "reconfig [-s] [-v version] [[-file path] | [-members serverID=host:port1:port2;port3[,...]*]] | [-add serverId=host:port1:port2;port3[,...]]* [-remove serverId[,...]*]"),
    ("removewatches", "removewatches path [-c|-d|-a] [-l]"),
    ("set", "set [-s] [-v version] path data"),
    ("setAcl", "setAcl [-s] [-v version] [-R] path acl"),
    ("stat", "stat [-w] path"),
    ("sync", "sync path"),
    ("version", "version"),
    ("whoami", "whoami"),
];

/// A failed command: the message zkCli would print.
#[derive(Debug)]
pub struct CliError(pub String);

/// What the shell should do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    Quit,
}

/// The shell's state: the connection (replaced by `connect`, dropped by `close`).
#[derive(Clone)]
pub struct Shell {
    /// Shared with the line editor's completer.
    pub client: Arc<Mutex<Option<Client>>>,
    /// The connection string in use.
    pub server: Arc<Mutex<String>>,
    /// Session timeout for `connect`.
    pub timeout: Duration,
    /// Whether `-w` watches print their events (interactive shells only).
    pub print_watches: bool,
}

impl Shell {
    pub fn client(&self) -> Result<Client, CliError> {
        self.client
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| CliError("Not connected".into()))
    }

    pub fn server(&self) -> String {
        self.server.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Connects as zkCli does: a session with the given timeout.
pub async fn connect(server: &str, timeout: Duration) -> Result<Client, Error> {
    Client::builder(server)
        .session_timeout(timeout)
        .request_timeout(timeout.max(Duration::from_secs(5)))
        .connect_timeout(timeout.clamp(Duration::from_secs(1), Duration::from_secs(10)))
        .connect()
        .await
}

/// Splits a command line into words; single and double quotes group words.
pub fn tokenize(line: &str) -> Result<Vec<String>, CliError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(CliError("unterminated quote".into()));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Options of one command: flags (`-s`), flags with a value (`-v 3`), then positionals.
struct Args {
    /// Flags seen, with their value if they take one.
    flags: HashMap<String, Option<String>>,
    /// Everything else, in order.
    positional: Vec<String>,
}

impl Args {
    fn parse(
        cmd: &str,
        words: &[String],
        bools: &[&str],
        valued: &[&str],
    ) -> Result<Args, CliError> {
        let mut flags = HashMap::new();
        let mut positional = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let w = &words[i];
            // Before the first positional every dash-word is an option; after it, only known ones
            // are (so `set /a -1` sets "-1").
            let known = bools.contains(&w.as_str()) || valued.contains(&w.as_str());
            if (w.len() > 1 && w.starts_with('-') && positional.is_empty()) || known {
                if bools.contains(&w.as_str()) {
                    flags.insert(w.clone(), None);
                } else if valued.contains(&w.as_str()) {
                    let Some(v) = words.get(i + 1) else {
                        return Err(usage(cmd));
                    };
                    flags.insert(w.clone(), Some(v.clone()));
                    i += 1;
                } else {
                    return Err(CliError(format!(
                        "Unrecognized option: {w}\n{}",
                        usage_line(cmd)
                    )));
                }
            } else {
                positional.push(w.clone());
            }
            i += 1;
        }
        Ok(Args { flags, positional })
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.contains_key(flag)
    }

    fn value(&self, flag: &str) -> Option<&str> {
        self.flags.get(flag).and_then(|v| v.as_deref())
    }

    fn int(&self, flag: &str) -> Result<Option<i64>, CliError> {
        match self.value(flag) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| CliError(format!("{flag} argument must be a number, not '{v}'"))),
        }
    }
}

fn usage_line(cmd: &str) -> String {
    COMMANDS
        .iter()
        .find(|(name, _)| *name == cmd)
        .map(|(_, u)| u.to_string())
        .unwrap_or_default()
}

fn usage(cmd: &str) -> CliError {
    CliError(format!("Usage: {}", usage_line(cmd)))
}

/// zkCli's message for a failed operation on `path`.
pub fn describe(e: &Error, path: &str) -> CliError {
    CliError(match e {
        Error::NoNode => format!("Node does not exist: {path}"),
        Error::NodeExists => format!("Node already exists: {path}"),
        Error::NotEmpty => format!("Node not empty: {path}"),
        Error::BadVersion => format!("version No is not valid : {path}"),
        Error::NoAuth => format!("Insufficient permission : {path}"),
        Error::InvalidAcl => format!("Acl is not valid : {path}"),
        Error::AuthFailed => format!("Authentication is not valid : {path}"),
        Error::NoChildrenForEphemerals => format!("Ephemerals cannot have children: {path}"),
        Error::NoWatcher => format!("No watcher of the given type on path: {path}"),
        Error::InvalidArgument(msg) => msg.clone(),
        Error::MultiFailed { source, .. } => return describe(source, path),
        Error::Connect(msg) => msg.clone(),
        other => match other.code() {
            Some(code) => format!("KeeperErrorCode = {code:?} for {path}"),
            None => format!("{other} for {path}"),
        },
    })
}

/// Runs one command, writing its output to stdout.
pub async fn execute(shell: &Shell, words: &[String]) -> Result<Outcome, CliError> {
    let Some((cmd, rest)) = words.split_first() else {
        return Ok(Outcome::Continue);
    };
    let out = |s: String| println!("{s}");
    match cmd.as_str() {
        "help" | "h" => {
            println!("ZooKeeper -server host:port -client-configuration properties-file cmd args");
            for (_, u) in COMMANDS {
                println!("\t{u}");
            }
        }
        "quit" | "exit" => return Ok(Outcome::Quit),
        "version" => out(format!("rookery-cli {}", env!("CARGO_PKG_VERSION"))),
        "close" => {
            let client = shell.client.lock().ok().and_then(|mut c| c.take());
            if let Some(c) = client {
                c.close().await;
            }
        }
        "connect" => {
            let a = Args::parse(cmd, rest, &[], &[])?;
            let server = a
                .positional
                .first()
                .cloned()
                .unwrap_or_else(|| shell.server());
            let old = shell.client.lock().ok().and_then(|mut c| c.take());
            if let Some(c) = old {
                c.close().await;
            }
            let client = connect(&server, shell.timeout)
                .await
                .map_err(|e| CliError(format!("Unable to connect to {server}: {e}")))?;
            if let Ok(mut c) = shell.client.lock() {
                *c = Some(client);
            }
            if let Ok(mut s) = shell.server.lock() {
                *s = server;
            }
        }
        "ls" => {
            let a = Args::parse(cmd, rest, &["-s", "-w", "-R"], &[])?;
            let [path] = a.positional.as_slice() else {
                return Err(usage(cmd));
            };
            let c = shell.client()?;
            if a.has("-R") {
                // Breadth-first, the path itself first, like ZKUtil.listSubTreeBFS.
                let mut queue = std::collections::VecDeque::from([path.clone()]);
                while let Some(node) = queue.pop_front() {
                    let mut children = match c.get_children(&node).await {
                        Ok(ch) => ch,
                        Err(Error::NoNode) if node != *path => continue,
                        Err(e) => return Err(describe(&e, &node)),
                    };
                    out(node.clone());
                    children.sort();
                    for child in children {
                        queue.push_back(rookery_client::join_path(&node, &child));
                    }
                }
                return Ok(Outcome::Continue);
            }
            let (mut children, stat) = if a.has("-w") {
                let (children, stat, w) = c
                    .get_children2_w(path)
                    .await
                    .map_err(|e| describe(&e, path))?;
                spawn_watch(shell, w);
                (children, stat)
            } else {
                c.get_children2(path)
                    .await
                    .map_err(|e| describe(&e, path))?
            };
            children.sort();
            out(format!("[{}]", children.join(", ")));
            if a.has("-s") {
                out(format::stat(&stat));
            }
        }
        "get" => {
            let a = Args::parse(cmd, rest, &["-s", "-w"], &[])?;
            let [path] = a.positional.as_slice() else {
                return Err(usage(cmd));
            };
            let c = shell.client()?;
            let (data, stat) = if a.has("-w") {
                let (d, s, w) = c.get_data_w(path).await.map_err(|e| describe(&e, path))?;
                spawn_watch(shell, w);
                (d, s)
            } else {
                c.get_data(path).await.map_err(|e| describe(&e, path))?
            };
            out(String::from_utf8_lossy(&data).into_owned());
            if a.has("-s") {
                out(format::stat(&stat));
            }
        }
        "set" => {
            let a = Args::parse(cmd, rest, &["-s"], &["-v"])?;
            let [path, data] = a.positional.as_slice() else {
                return Err(usage(cmd));
            };
            let version = a.int("-v")?.map(|v| v as i32);
            let stat = shell
                .client()?
                .set_data(path, data.as_bytes(), version)
                .await
                .map_err(|e| describe(&e, path))?;
            if a.has("-s") {
                out(format::stat(&stat));
            }
        }
        "create" => {
            let a = Args::parse(cmd, rest, &["-s", "-e", "-c"], &["-t"])?;
            let (path, data, acl) = match a.positional.as_slice() {
                [p] => (p, "", None),
                [p, d] => (p, d.as_str(), None),
                [p, d, acl] => (p, d.as_str(), Some(acl)),
                _ => return Err(usage(cmd)),
            };
            let (seq, eph, container) = (a.has("-s"), a.has("-e"), a.has("-c"));
            let ttl = a.int("-t")?;
            if container && (seq || eph) {
                return Err(CliError("-c cannot be combined with -s or -e. Containers cannot be ephemeral or sequential.".into()));
            }
            if ttl.is_some() && (eph || container) {
                return Err(CliError(
                    "TTLs cannot be used with Ephemeral or Container znodes".into(),
                ));
            }
            let mut options = match (ttl, container, eph, seq) {
                (Some(t), _, _, s) => {
                    if t <= 0 {
                        return Err(CliError(format!("ttl must be positive: {t}")));
                    }
                    CreateOptions::ttl(Duration::from_millis(t as u64), s)
                }
                (None, true, _, _) => CreateOptions::container(),
                (None, false, true, true) => CreateOptions::ephemeral_sequential(),
                (None, false, true, false) => CreateOptions::ephemeral(),
                (None, false, false, true) => CreateOptions::persistent_sequential(),
                (None, false, false, false) => CreateOptions::new(CreateMode::Persistent),
            };
            if let Some(acl) = acl {
                options =
                    options.with_acl(acls::parse_acl_list(acl).map_err(|e| describe(&e, path))?);
            }
            let (created, _) = shell
                .client()?
                .create(path, data.as_bytes(), &options)
                .await
                .map_err(|e| describe(&e, path))?;
            out(format!("Created {created}"));
        }
        "delete" => {
            let a = Args::parse(cmd, rest, &[], &["-v"])?;
            let [path] = a.positional.as_slice() else {
                return Err(usage(cmd));
            };
            let version = a.int("-v")?.map(|v| v as i32);
            shell
                .client()?
                .delete(path, version)
                .await
                .map_err(|e| describe(&e, path))?;
        }
        "deleteall" | "rmr" => {
            let a = Args::parse(cmd, rest, &[], &["-b"])?;
            let [path] = a.positional.as_slice() else {
                return Err(usage("deleteall"));
            };
            let c = shell.client()?;
            c.exists(path)
                .await
                .map_err(|e| describe(&e, path))?
                .ok_or_else(|| describe(&Error::NoNode, path))?;
            c.delete_all(path).await.map_err(|e| describe(&e, path))?;
        }
        "stat" => {
            let a = Args::parse(cmd, rest, &["-w"], &[])?;
            let [path] = a.positional.as_slice() else {
                return Err(usage(cmd));
            };
            let c = shell.client()?;
            let stat = if a.has("-w") {
                let (s, w) = c.exists_w(path).await.map_err(|e| describe(&e, path))?;
                spawn_watch(shell, w);
                s
            } else {
                c.exists(path).await.map_err(|e| describe(&e, path))?
            };
            let stat = stat.ok_or_else(|| describe(&Error::NoNode, path))?;
            out(format::stat(&stat));
        }
        "getAcl" => {
            let a = Args::parse(cmd, rest, &["-s"], &[])?;
            let [path] = a.positional.as_slice() else {
                return Err(usage(cmd));
            };
            let (acl, stat) = shell
                .client()?
                .get_acl(path)
                .await
                .map_err(|e| describe(&e, path))?;
            out(format::acl(&acl));
            if a.has("-s") {
                out(format::stat(&stat));
            }
        }
        "setAcl" => {
            let a = Args::parse(cmd, rest, &["-s", "-R"], &["-v"])?;
            let [path, acl] = a.positional.as_slice() else {
                return Err(usage(cmd));
            };
            let acl = acls::parse_acl_list(acl).map_err(|e| describe(&e, path))?;
            let version = a.int("-v")?.map(|v| v as i32);
            let c = shell.client()?;
            let stat = c
                .set_acl(path, &acl, version)
                .await
                .map_err(|e| describe(&e, path))?;
            if a.has("-R") {
                let mut stack = vec![path.clone()];
                while let Some(node) = stack.pop() {
                    let children = c
                        .get_children(&node)
                        .await
                        .map_err(|e| describe(&e, &node))?;
                    for child in children {
                        let child_path = rookery_client::join_path(&node, &child);
                        c.set_acl(&child_path, &acl, None)
                            .await
                            .map_err(|e| describe(&e, &child_path))?;
                        stack.push(child_path);
                    }
                }
            }
            if a.has("-s") {
                out(format::stat(&stat));
            }
        }
        "addauth" => {
            let a = Args::parse(cmd, rest, &[], &[])?;
            let (scheme, auth) = match a.positional.as_slice() {
                [s] => (s, ""),
                [s, auth] => (s, auth.as_str()),
                _ => return Err(usage(cmd)),
            };
            shell
                .client()?
                .add_auth(scheme, auth.as_bytes())
                .await
                .map_err(|e| describe(&e, scheme))?;
        }
        "sync" => {
            let a = Args::parse(cmd, rest, &[], &[])?;
            let [path] = a.positional.as_slice() else {
                return Err(usage(cmd));
            };
            shell
                .client()?
                .sync(path)
                .await
                .map_err(|e| describe(&e, path))?;
            out("Sync is OK".into());
        }
        "getEphemerals" => {
            let a = Args::parse(cmd, rest, &[], &[])?;
            let path = a.positional.first().map(String::as_str).unwrap_or("/");
            let mut list = shell
                .client()?
                .get_ephemerals(path)
                .await
                .map_err(|e| describe(&e, path))?;
            list.sort();
            out(format!("[{}]", list.join(", ")));
        }
        "getAllChildrenNumber" => {
            let a = Args::parse(cmd, rest, &[], &[])?;
            let [path] = a.positional.as_slice() else {
                return Err(usage(cmd));
            };
            let n = shell
                .client()?
                .get_all_children_number(path)
                .await
                .map_err(|e| describe(&e, path))?;
            out(n.to_string());
        }
        "addWatch" => {
            let a = Args::parse(cmd, rest, &[], &["-m"])?;
            let [path] = a.positional.as_slice() else {
                return Err(usage(cmd));
            };
            let mode = match a.value("-m").map(|m| m.to_ascii_uppercase()) {
                None => AddWatchMode::PersistentRecursive,
                Some(m) if m == "PERSISTENT_RECURSIVE" => AddWatchMode::PersistentRecursive,
                Some(m) if m == "PERSISTENT" => AddWatchMode::Persistent,
                Some(m) => {
                    return Err(CliError(format!(
                        "'{m}' is not a valid mode: use PERSISTENT or PERSISTENT_RECURSIVE"
                    )))
                }
            };
            let mut watcher = shell
                .client()?
                .add_watch(path, mode)
                .await
                .map_err(|e| describe(&e, path))?;
            if shell.print_watches {
                tokio::spawn(async move {
                    while let Some(ev) = watcher.next().await {
                        println!("\n{}", format::event(&ev));
                    }
                });
            }
        }
        "removewatches" => {
            let a = Args::parse(cmd, rest, &["-c", "-d", "-a", "-l"], &[])?;
            let [path] = a.positional.as_slice() else {
                return Err(usage(cmd));
            };
            if a.has("-l") {
                return Err(CliError("-l (local only) is not supported".into()));
            }
            let kind = if a.has("-c") {
                WatcherType::Children
            } else if a.has("-d") {
                WatcherType::Data
            } else {
                WatcherType::Any
            };
            shell
                .client()?
                .remove_watches(path, kind)
                .await
                .map_err(|e| describe(&e, path))?;
        }
        "whoami" => {
            let who = shell
                .client()?
                .whoami()
                .await
                .map_err(|e| describe(&e, "/"))?;
            out("Auth scheme: User".into());
            for info in who {
                out(format!("{}: {}", info.auth_scheme, info.user));
            }
        }
        "config" => {
            let a = Args::parse(cmd, rest, &["-c", "-w", "-s"], &[])?;
            let c = shell.client()?;
            let (data, stat) = c
                .get_config()
                .await
                .map_err(|e| describe(&e, rookery_client::CONFIG_NODE))?;
            let text = String::from_utf8_lossy(&data).into_owned();
            if a.has("-c") {
                // Only the server list, as a connection string.
                let servers: Vec<String> = text
                    .lines()
                    .filter(|l| l.starts_with("server."))
                    .filter_map(|l| l.rsplit(';').next().map(str::to_string))
                    .collect();
                out(servers.join(","));
            } else {
                out(text);
            }
            if a.has("-s") {
                out(format::stat(&stat));
            }
        }
        "reconfig" => reconfig(shell, cmd, rest).await?,
        other => {
            return Err(CliError(format!(
                "Command not found: Command not found {other}"
            )))
        }
    }
    Ok(Outcome::Continue)
}

/// Prints a one-shot watch's event when it fires (interactive shells).
fn spawn_watch(shell: &Shell, w: rookery_client::OneshotWatcher) {
    if shell.print_watches {
        tokio::spawn(async move {
            let ev = w.changed().await;
            println!("\n{}", format::event(&ev));
        });
    }
}

/// Used by completion: a Stat-free probe of children names.
pub async fn children_of(client: &Client, path: &str) -> Vec<String> {
    match tokio::time::timeout(Duration::from_millis(500), client.get_children(path)).await {
        Ok(Ok(mut c)) => {
            c.sort();
            c
        }
        _ => Vec::new(),
    }
}

/// zkCli's `ReconfigCommand`: `-add`/`-remove` (incremental) or `-members`/`-file`
/// (non-incremental, not mixed), `-v` the hex config version to replace, `-s` the Stat.
async fn reconfig(shell: &Shell, cmd: &str, rest: &[String]) -> Result<(), CliError> {
    let a = Args::parse(
        cmd,
        rest,
        &["-s"],
        &["-v", "-add", "-remove", "-members", "-file"],
    )?;
    let incremental = a.has("-add") || a.has("-remove");
    let whole = a.has("-members") || a.has("-file");
    if !incremental && !whole {
        return Err(usage(cmd));
    }
    if incremental && whole {
        return Err(CliError(
            "Can't use -file or -members together with -add or -remove (mixing incremental and non-incremental modes is not allowed)".into(),
        ));
    }
    if a.has("-members") && a.has("-file") {
        return Err(CliError(
            "Can't use -file and -members together (conflicting non-incremental modes)".into(),
        ));
    }
    let version = match a.value("-v") {
        None => None,
        Some(v) => Some(i64::from_str_radix(v, 16).map_err(|_| {
            CliError("-v must be followed by a long (configuration version)".into())
        })?),
    };
    // zkCli lower-cases the server lists.
    let lower = |flag: &str| a.value(flag).map(str::to_lowercase);
    let members = match a.value("-file") {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError(format!("Error processing {path}{e}")))?;
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("server."))
                .collect();
            Some(lines.join("\n"))
        }
        None => lower("-members"),
    };
    let (joining, leaving) = (lower("-add"), lower("-remove"));
    let (data, stat) = shell
        .client()?
        .reconfig(
            joining.as_deref(),
            leaving.as_deref(),
            members.as_deref(),
            version,
        )
        .await
        .map_err(|e| match e {
            Error::BadVersion | Error::NoAuth => describe(&e, ""),
            other => match other.code() {
                Some(code) => CliError(format!("KeeperErrorCode = {code:?}")),
                None => describe(&other, ""),
            },
        })?;
    println!(
        "Committed new configuration:\n{}",
        String::from_utf8_lossy(&data)
    );
    if a.has("-s") {
        println!("{}", format::stat(&stat));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes() {
        assert_eq!(tokenize("ls  /").unwrap(), vec!["ls", "/"]);
        assert_eq!(
            tokenize("create /a \"hello world\" 'x y'").unwrap(),
            vec!["create", "/a", "hello world", "x y"]
        );
        assert_eq!(tokenize("set /a \"\"").unwrap(), vec!["set", "/a", ""]);
        assert!(tokenize("get \"/a").is_err());
    }

    #[test]
    fn parses_flags() {
        let w: Vec<String> = ["-s", "-v", "3", "/a", "data"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = Args::parse("set", &w, &["-s"], &["-v"]).unwrap();
        assert!(a.has("-s"));
        assert_eq!(a.int("-v").unwrap(), Some(3));
        assert_eq!(a.positional, vec!["/a", "data"]);
        // zkCli also accepts flags after the path.
        let w: Vec<String> = ["/a", "-c"].iter().map(|s| s.to_string()).collect();
        let a = Args::parse("removewatches", &w, &["-c"], &[]).unwrap();
        assert!(a.has("-c"));
        assert!(Args::parse("ls", &["-x".to_string()], &["-s"], &[]).is_err());
    }
}
