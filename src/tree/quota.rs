//! Quota accounting, as ZooKeeper's DataTree keeps it: a `zookeeper_limits` node under
//! `/zookeeper/quota/<path>` marks `<path>` as quota'd (`PathTrie`), and every create,
//! delete and setData below the deepest quota'd prefix adjusts the `count`/`bytes` in
//! `/zookeeper/quota/<prefix>/zookeeper_stats` (`updateQuotaStat`). Creating the stats node
//! fills it with the subtree's current totals (`updateQuotaForPath`). Enforcement
//! (`zookeeper.enforceQuota`) is off by default in ZooKeeper and not done here.
//!
//! Where ZooKeeper would throw (and stop applying transactions) on malformed stats data or
//! odd quota paths, the update is skipped instead. Quota stats are not recomputed when a
//! snapshot is loaded (ZooKeeper's `setupQuota` does), so that a snapshot round-trips.

use std::collections::BTreeMap;

use super::node::NodeId;
use super::DataTree;

/// `Quotas.quotaZookeeper`.
pub(crate) const QUOTA_ROOT: &str = "/zookeeper/quota";
/// `Quotas.limitNode`.
pub(crate) const LIMIT_NODE: &str = "zookeeper_limits";
/// `Quotas.statNode`.
pub(crate) const STAT_NODE: &str = "zookeeper_stats";

/// `PathTrie.split` joined back: components that are not blank (Java `trim`), as "/a/b".
/// `None` when nothing is left (PathTrie ignores a quota on the root).
pub(crate) fn normalize(path: &str) -> Option<String> {
    let mut out = String::new();
    for part in path.split('/') {
        if !part.trim_matches(|c: char| c <= ' ').is_empty() {
            out.push('/');
            out.push_str(part);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// If a node named `name` under `parent` is a limit node, the quota'd path it stands for.
pub(crate) fn limit_target(parent: &str, name: &str) -> Option<String> {
    if name != LIMIT_NODE {
        return None;
    }
    normalize(parent.strip_prefix(QUOTA_ROOT)?)
}

/// `StatsTrack`: `count=N,bytes=N` then, if other keys exist, `=` and `;key=value` sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct StatsTrack {
    /// Every key=value pair; `count` and `bytes` read as -1 when absent.
    stats: BTreeMap<String, i64>,
}

impl StatsTrack {
    /// Parses like `new StatsTrack(String)`; `None` where Java would throw.
    pub(crate) fn parse(data: &[u8]) -> Option<StatsTrack> {
        let text = String::from_utf8_lossy(data);
        let mut stats = BTreeMap::new();
        if text.is_empty() {
            return Some(StatsTrack { stats });
        }
        let mut pairs: Vec<&str> = text.split([',', ';']).collect();
        // Pattern.split drops trailing empty strings; runs of separators count as one.
        while pairs.last().is_some_and(|p| p.is_empty()) {
            pairs.pop();
        }
        for (i, pair) in pairs.iter().enumerate() {
            if pair.is_empty() && i > 0 {
                continue; // between two separators: "[,;]+" matched them together
            }
            let mut kv: Vec<&str> = pair.split('=').collect();
            while kv.last().is_some_and(|p| p.is_empty()) {
                kv.pop();
            }
            let key = kv.first()?;
            let value = *kv.get(1)?;
            if value.is_empty() {
                stats.insert((*key).to_string(), -1);
                continue;
            }
            let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            stats.insert((*key).to_string(), value.parse().ok()?);
        }
        Some(StatsTrack { stats })
    }

    fn get(&self, key: &str) -> i64 {
        self.stats.get(key).copied().unwrap_or(-1)
    }

    /// Sets `count` and `bytes`.
    pub(crate) fn set(&mut self, count: i64, bytes: i64) {
        self.stats.insert("count".into(), count);
        self.stats.insert("bytes".into(), bytes);
    }

    /// Adds to `count` and `bytes`.
    pub(crate) fn add(&mut self, count: i64, bytes: i64) {
        let c = self.get("count").wrapping_add(count);
        let b = self.get("bytes").wrapping_add(bytes);
        self.stats.insert("count".into(), c);
        self.stats.insert("bytes".into(), b);
    }

    /// `StatsTrack.toString`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = format!("count={},bytes={}", self.get("count"), self.get("bytes"));
        let others: Vec<(&String, &i64)> = self
            .stats
            .iter()
            .filter(|(k, _)| *k != "count" && *k != "bytes")
            .collect();
        if !others.is_empty() {
            out.push('=');
            for (k, v) in others {
                out.push_str(&format!(";{k}={v}"));
            }
        }
        out.into_bytes()
    }
}

/// A data change made by quota accounting, for a multi to undo.
#[derive(Debug)]
pub(crate) struct QuotaChange {
    /// The stats node.
    pub(crate) path: String,
    /// Its data before (`None` if null).
    pub(crate) old: Option<Vec<u8>>,
}

impl DataTree {
    /// `getMaxPrefixWithQuota`: the deepest quota'd path that is a prefix of `path`
    /// (component-wise, after `normalize`).
    pub(crate) fn quota_prefix(&self, path: &str) -> Option<String> {
        if self.quotas.is_empty() {
            return None;
        }
        let normalized = normalize(path)?;
        let mut best = None;
        for (i, c) in normalized.char_indices().skip(1) {
            if c == '/' && self.quotas.contains_key(&normalized[..i]) {
                best = Some(i);
            }
        }
        if self.quotas.contains_key(&normalized) {
            return Some(normalized);
        }
        best.map(|i| normalized[..i].to_string())
    }

    /// Replaces a stats node's data without touching its stat (as ZooKeeper does).
    fn set_stats_data(
        &mut self,
        id: NodeId,
        path: &str,
        data: Option<&[u8]>,
    ) -> Option<QuotaChange> {
        let node = self.nodes.get_mut(id)?;
        let old = node.replace_data(data);
        let (new_len, old_len) = (
            data.map_or(0, <[u8]>::len),
            old.as_ref().map_or(0, Vec::len),
        );
        self.data_size = (self.data_size + new_len as u64).saturating_sub(old_len as u64);
        Some(QuotaChange {
            path: path.to_string(),
            old,
        })
    }

    /// `updateQuotaStat`: adjusts the stats of the deepest quota covering `path`.
    pub(crate) fn quota_adjust(
        &mut self,
        path: &str,
        bytes: i64,
        count: i64,
    ) -> Option<QuotaChange> {
        let prefix = self.quota_prefix(path)?;
        let stat_path = format!("{QUOTA_ROOT}{prefix}/{STAT_NODE}");
        let id = self.nodes.lookup(&stat_path)?;
        let mut stats = StatsTrack::parse(self.nodes.get(id)?.data())?;
        stats.add(count, bytes);
        self.set_stats_data(id, &stat_path, Some(&stats.encode()))
    }

    /// `updateQuotaForPath`, when `<quota>/zookeeper_stats` is created under `parent`:
    /// the node gets the subtree's current count and bytes.
    pub(crate) fn quota_init_stats(&mut self, parent: &str, name: &str) -> Option<QuotaChange> {
        if name != STAT_NODE {
            return None;
        }
        let real = parent.strip_prefix(QUOTA_ROOT)?;
        let (mut count, mut bytes) = (0i64, 0i64);
        if let Some(start) = self.nodes.lookup(real) {
            let mut stack = vec![start];
            while let Some(id) = stack.pop() {
                if let Some(node) = self.nodes.get(id) {
                    count += 1;
                    bytes += node.data().len() as i64;
                    stack.extend_from_slice(node.children());
                }
            }
        }
        let stat_path = format!("{QUOTA_ROOT}{real}/{STAT_NODE}");
        let id = self.nodes.lookup(&stat_path)?;
        let mut stats = StatsTrack::default();
        stats.set(count, bytes);
        self.set_stats_data(id, &stat_path, Some(&stats.encode()))
    }

    /// Puts back what a `QuotaChange` replaced.
    pub(crate) fn quota_undo(&mut self, change: QuotaChange) {
        if let Some(id) = self.nodes.lookup(&change.path) {
            self.set_stats_data(id, &change.path, change.old.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_like_path_trie() {
        assert_eq!(normalize("/a/b"), Some("/a/b".into()));
        assert_eq!(normalize("a//b/"), Some("/a/b".into()));
        assert_eq!(normalize("/a/ /b"), Some("/a/b".into()));
        assert_eq!(normalize("/"), None);
        assert_eq!(normalize(""), None);
        assert_eq!(
            limit_target("/zookeeper/quota/a", LIMIT_NODE),
            Some("/a".into())
        );
        assert_eq!(
            limit_target("/zookeeper/quotaX", LIMIT_NODE),
            Some("/X".into())
        );
        assert_eq!(limit_target("/zookeeper/quota", LIMIT_NODE), None);
        assert_eq!(limit_target("/zookeeper/quota/a", STAT_NODE), None);
        assert_eq!(limit_target("/other/a", LIMIT_NODE), None);
    }

    #[test]
    fn stats_track_format() {
        let s = StatsTrack::parse(b"count=1,bytes=2").unwrap();
        assert_eq!(s.encode(), b"count=1,bytes=2");
        let s = StatsTrack::parse(b"count=1,bytes=2=;countHardLimit=5;byteHardLimit=-1").unwrap();
        assert_eq!(
            s.encode(),
            b"count=1,bytes=2=;byteHardLimit=-1;countHardLimit=5"
        );
        let mut s = StatsTrack::parse(b"").unwrap();
        assert_eq!(s.encode(), b"count=-1,bytes=-1");
        s.add(3, 10);
        assert_eq!(s.encode(), b"count=2,bytes=9");
        assert!(StatsTrack::parse(b"count").is_none());
        assert!(StatsTrack::parse(b"count=").is_none());
        assert!(StatsTrack::parse(b"count=x").is_none());
        assert!(StatsTrack::parse(b",count=1").is_none());
        assert_eq!(
            StatsTrack::parse(b"count==5").unwrap().encode(),
            b"count=-1,bytes=-1"
        );
        assert_eq!(
            StatsTrack::parse(b"count=1,,;bytes=+2,").unwrap().encode(),
            b"count=1,bytes=2"
        );
    }
}
