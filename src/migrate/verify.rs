//! `rookery verify --source ZK_HOST:PORT --target ROOKERY_HOST:PORT`: walks both servers'
//! trees through the client protocol, node by node, and reports every difference in data
//! (null and empty told apart), ACL, children and each Stat field. Nodes a side may not read
//! (NoAuth) are compared by that answer; `--auth` gives both sessions credentials.

use std::collections::BTreeSet;

use futures::stream::{self, StreamExt};
use rookery_client::{Acl, Client, Error, Stat};

use super::{connect_client, MigrateError};

/// The fields a copy through the client protocol preserves.
pub const PRESERVABLE: &[&str] = &["data", "acl", "children", "dataLength", "numChildren"];

/// The Stat fields a copy through the client protocol cannot preserve (zxids, times,
/// versions, owners): what `--ignore-stat` leaves out.
pub const UNPRESERVABLE: &[&str] = &[
    "czxid",
    "mzxid",
    "ctime",
    "mtime",
    "version",
    "cversion",
    "aversion",
    "ephemeralOwner",
    "pzxid",
];

/// Whether `name` is a field `verify` compares (for `--ignore`).
pub fn is_field(name: &str) -> bool {
    PRESERVABLE.contains(&name) || UNPRESERVABLE.contains(&name)
}

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The source (a ZooKeeper server), `host:port[,host:port...]`.
    pub source: String,
    /// The target (a rookery server).
    pub target: String,
    /// Credentials both sessions add: (scheme, auth), e.g. ("digest", b"user:pw").
    pub auth: Vec<(String, Vec<u8>)>,
    /// Field names (see [`is_field`]) not compared.
    pub ignore: Vec<String>,
    /// Subtrees (exact path and below) not compared, e.g. `/zookeeper/config`.
    pub skip: Vec<String>,
    /// Nodes read at once.
    pub concurrency: usize,
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The znode.
    pub path: String,
    /// The field (see [`is_field`]), or "exists".
    pub field: &'static str,
    /// The source's value.
    pub source: String,
    /// The target's value.
    pub target: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: source {} != target {}",
            self.path, self.field, self.source, self.target
        )
    }
}

/// What a verify found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Znodes compared (present on either side).
    pub nodes: usize,
    /// Every difference, sorted by path.
    pub differences: Vec<Difference>,
}

/// One side's view of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum View {
    /// It does not exist.
    Missing,
    /// It exists but this session may not read it (the error's name).
    Unreadable(String),
    /// Read.
    Node {
        /// Its data; `None` is null.
        data: Option<Vec<u8>>,
        /// Its Stat.
        stat: Stat,
        /// Its ACL list.
        acl: Vec<Acl>,
        /// Its children, sorted.
        children: Vec<String>,
    },
}

async fn read(client: &Client, path: &str) -> Result<View, MigrateError> {
    let fail = |e: Error| MigrateError::Client(format!("reading {path}: {e}"));
    // The three reads in flight together.
    let (data, acl, children) = tokio::join!(
        client.get_data_opt(path),
        client.get_acl(path),
        client.get_children(path)
    );
    let (data, stat) = match data {
        Ok(r) => r,
        Err(Error::NoNode) => return Ok(View::Missing),
        // It exists (exists checks no ACL) but this session may not read it.
        Err(Error::NoAuth) => return Ok(View::Unreadable("NoAuth".into())),
        Err(e) => return Err(fail(e)),
    };
    let acl = match acl {
        Ok((acl, _)) => acl,
        Err(Error::NoNode) => return Ok(View::Missing),
        Err(Error::NoAuth) => Vec::new(),
        Err(e) => return Err(fail(e)),
    };
    let mut children = match children {
        Ok(c) => c,
        Err(Error::NoNode) => return Ok(View::Missing),
        Err(e) => return Err(fail(e)),
    };
    children.sort_unstable();
    Ok(View::Node {
        data,
        stat,
        acl,
        children,
    })
}

fn show_data(d: &Option<Vec<u8>>) -> String {
    match d {
        None => "null".into(),
        Some(b) if b.len() > 64 => format!("{} bytes {:?}...", b.len(), &b[..64]),
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
    }
}

fn stat_fields(s: &Stat) -> [(&'static str, i64); 11] {
    [
        ("czxid", s.czxid),
        ("mzxid", s.mzxid),
        ("ctime", s.ctime),
        ("mtime", s.mtime),
        ("version", i64::from(s.version)),
        ("cversion", i64::from(s.cversion)),
        ("aversion", i64::from(s.aversion)),
        ("ephemeralOwner", s.ephemeral_owner),
        ("dataLength", i64::from(s.data_length)),
        ("numChildren", i64::from(s.num_children)),
        ("pzxid", s.pzxid),
    ]
}

/// Compares one node's two views; pushes what differs.
fn compare(path: &str, a: &View, b: &View, ignore: &[String], out: &mut Vec<Difference>) {
    let mut diff = |field: &'static str, s: String, t: String| {
        if !ignore.iter().any(|i| i == field) {
            out.push(Difference {
                path: path.to_string(),
                field,
                source: s,
                target: t,
            });
        }
    };
    match (a, b) {
        (
            View::Node {
                data: d1,
                stat: s1,
                acl: a1,
                children: c1,
            },
            View::Node {
                data: d2,
                stat: s2,
                acl: a2,
                children: c2,
            },
        ) => {
            if d1 != d2 {
                diff("data", show_data(d1), show_data(d2));
            }
            if a1 != a2 {
                diff("acl", format!("{a1:?}"), format!("{a2:?}"));
            }
            if c1 != c2 {
                diff("children", format!("{c1:?}"), format!("{c2:?}"));
            }
            for ((name, v1), (_, v2)) in stat_fields(s1).into_iter().zip(stat_fields(s2)) {
                if v1 != v2 {
                    diff(name, v1.to_string(), v2.to_string());
                }
            }
        }
        (x, y) if x == y => {}
        (x, y) => {
            let name = |v: &View| match v {
                View::Missing => "missing".to_string(),
                View::Unreadable(e) => format!("unreadable ({e})"),
                View::Node { .. } => "present".to_string(),
            };
            out.push(Difference {
                path: path.to_string(),
                field: "exists",
                source: name(x),
                target: name(y),
            });
        }
    }
}

/// Walks both trees from "/" and compares every node.
pub async fn verify(opts: &VerifyOptions) -> Result<VerifyReport, MigrateError> {
    let source = connect_client(&opts.source, &opts.auth).await?;
    let target = connect_client(&opts.target, &opts.auth).await?;
    let mut report = VerifyReport::default();
    let mut level = vec!["/".to_string()];
    let skipped = |p: &str| {
        opts.skip
            .iter()
            .any(|s| p == s || p.starts_with(&format!("{s}/")))
    };
    // Breadth first, one level at a time, each level's reads pipelined.
    while !level.is_empty() {
        let results: Vec<Result<(String, View, View), MigrateError>> = stream::iter(level)
            .map(|path| {
                let (source, target) = (&source, &target);
                async move {
                    let (a, b) = tokio::join!(read(source, &path), read(target, &path));
                    Ok((path, a?, b?))
                }
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        let mut next = BTreeSet::new();
        for r in results {
            let (path, a, b) = r?;
            report.nodes += 1;
            compare(&path, &a, &b, &opts.ignore, &mut report.differences);
            for view in [&a, &b] {
                if let View::Node { children, .. } = view {
                    for c in children {
                        let child = if path == "/" {
                            format!("/{c}")
                        } else {
                            format!("{path}/{c}")
                        };
                        if !skipped(&child) {
                            next.insert(child);
                        }
                    }
                }
            }
        }
        level = next.into_iter().collect();
    }
    source.close().await;
    target.close().await;
    report.differences.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(data: Option<&[u8]>, version: i32) -> View {
        View::Node {
            data: data.map(<[u8]>::to_vec),
            stat: Stat {
                version,
                ..Stat::default()
            },
            acl: Vec::new(),
            children: Vec::new(),
        }
    }

    #[test]
    fn compare_names_path_and_field() {
        let mut out = Vec::new();
        compare("/a", &node(None, 1), &node(Some(b""), 2), &[], &mut out);
        let fields: Vec<_> = out.iter().map(|d| d.field).collect();
        assert_eq!(fields, vec!["data", "version"]);
        assert_eq!(out[0].to_string(), "/a: data: source null != target \"\"");
        out.clear();
        compare(
            "/a",
            &node(None, 1),
            &node(Some(b""), 2),
            &["data".into(), "version".into()],
            &mut out,
        );
        assert!(out.is_empty());
        compare("/b", &node(None, 1), &View::Missing, &[], &mut out);
        assert_eq!(out[0].field, "exists");
        out.clear();
        compare("/c", &View::Missing, &View::Missing, &[], &mut out);
        assert!(out.is_empty());
    }
}
