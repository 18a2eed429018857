//! Sessions: the replicated table of live sessions (part of the state machine) and the
//! leader's expiry tracker (in memory only: touches are too frequent to replicate).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use parking_lot::Mutex;
use rookery_protocol::{DecodeError, Reader, Record};

/// A live session as every replica knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The timeout negotiated at creation, in ms; a resuming client may renegotiate.
    pub timeout_ms: i32,
    /// The secret a client must present to resume the session.
    pub passwd: Vec<u8>,
}

/// The replicated session table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionTable {
    /// Live sessions by id; ordered so snapshots are deterministic.
    sessions: BTreeMap<i64, SessionInfo>,
    /// The next id to hand out; seeded from the first CreateSession entry's time, like
    /// ZooKeeper seeds it from the clock, so ids differ across data-dir wipes.
    next_session_id: i64,
}

impl SessionTable {
    /// Creates a session at apply time; the id comes from replicated state only.
    pub fn create(&mut self, server_id: u64, time_ms: i64, info: SessionInfo) -> i64 {
        if self.next_session_id == 0 {
            // ZooKeeper: ((time << 24) >>> 8) | (serverId << 56).
            let base = ((time_ms as u64) << 24) >> 8;
            self.next_session_id = (base | ((server_id & 0x7f) << 56)) as i64;
            if self.next_session_id == 0 {
                self.next_session_id = 1;
            }
        }
        let id = self.next_session_id;
        self.next_session_id = self.next_session_id.wrapping_add(1);
        self.sessions.insert(id, info);
        id
    }

    /// Removes a session at apply time; false if it did not exist.
    pub fn remove(&mut self, session_id: i64) -> bool {
        self.sessions.remove(&session_id).is_some()
    }

    /// The session, if it is live.
    pub fn get(&self, session_id: i64) -> Option<&SessionInfo> {
        self.sessions.get(&session_id)
    }

    /// Whether the session is live.
    pub fn contains(&self, session_id: i64) -> bool {
        self.sessions.contains_key(&session_id)
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Live sessions in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&i64, &SessionInfo)> {
        self.sessions.iter()
    }

    /// Appends the table to a snapshot (deterministic: ordered by id).
    pub fn serialize(&self, out: &mut BytesMut) {
        out.put_i64(self.next_session_id);
        out.put_u32(self.sessions.len() as u32);
        for (id, info) in &self.sessions {
            out.put_i64(*id);
            out.put_i32(info.timeout_ms);
            info.passwd.write(out);
        }
    }

    /// Reads a table written by [`SessionTable::serialize`]; lengths are checked first.
    pub fn deserialize(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let next_session_id = input.read_i64()?;
        let count = input.read_i32()?;
        if count < 0 || count as usize > input.remaining() / 16 {
            return Err(DecodeError::InvalidLength(count));
        }
        let mut sessions = BTreeMap::new();
        for _ in 0..count {
            let id = input.read_i64()?;
            let timeout_ms = input.read_i32()?;
            let passwd = input.read_buffer()?;
            sessions.insert(id, SessionInfo { timeout_ms, passwd });
        }
        Ok(SessionTable {
            sessions,
            next_session_id,
        })
    }
}

/// How long after proposing a session's CloseSession the tracker offers it for expiry again if
/// it still exists. The proposal may have been lost (the raft thread refused it, e.g. while the
/// disk was full) or dropped by Raft, and nothing else would retry it: the dead session's
/// ephemerals would stay until the next election, which never comes for a standalone server.
/// Applying CloseSession twice is harmless (the second finds no session), so a retry that races
/// a slow apply costs one no-op entry.
pub const CLOSE_RETRY: Duration = Duration::from_secs(2);

/// One session's liveness, as the expiry tracker sees it.
#[derive(Debug, Clone, Copy)]
struct Liveness {
    /// The session expires if nothing is heard from it before this instant.
    deadline: Instant,
    /// How far each touch pushes the deadline.
    timeout: Duration,
    /// When a CloseSession was proposed; none is proposed again before [`CLOSE_RETRY`] has
    /// passed (an applied one removes the session from the tracker).
    closing_since: Option<Instant>,
}

/// Decides when sessions expire. Every server tracks; only the leader acts on it.
#[derive(Debug, Default)]
pub struct SessionTracker {
    /// Liveness by session id.
    sessions: Mutex<HashMap<i64, Liveness>>,
}

impl SessionTracker {
    /// A session became known (created, or restored after a restart): it gets a full timeout
    /// from now, so a restart or an election never causes an expiry storm.
    pub fn add(&self, session_id: i64, timeout: Duration) {
        self.sessions.lock().insert(
            session_id,
            Liveness {
                deadline: Instant::now() + timeout,
                timeout,
                closing_since: None,
            },
        );
    }

    /// The client was heard from. Returns false if the session is unknown (expired).
    pub fn touch(&self, session_id: i64) -> bool {
        match self.sessions.lock().get_mut(&session_id) {
            Some(live) => {
                live.deadline = Instant::now() + live.timeout;
                true
            }
            None => false,
        }
    }

    /// A resuming client negotiated a new timeout.
    pub fn set_timeout(&self, session_id: i64, timeout: Duration) {
        if let Some(live) = self.sessions.lock().get_mut(&session_id) {
            live.timeout = timeout;
            live.deadline = Instant::now() + timeout;
        }
    }

    /// The session was closed (applied): stop tracking it.
    pub fn remove(&self, session_id: i64) {
        self.sessions.lock().remove(&session_id);
    }

    /// Sessions past their deadline that are not closing, or whose CloseSession was proposed
    /// at least [`CLOSE_RETRY`] ago and evidently never applied; marks them closing as of `now`.
    pub fn take_expired(&self, now: Instant) -> Vec<i64> {
        let mut expired = Vec::new();
        for (id, live) in self.sessions.lock().iter_mut() {
            let retry_due = live
                .closing_since
                .is_none_or(|since| now.saturating_duration_since(since) >= CLOSE_RETRY);
            if retry_due && live.deadline <= now {
                live.closing_since = Some(now);
                expired.push(*id);
            }
        }
        expired.sort_unstable();
        expired
    }

    /// Leadership changed or a proposal was lost: let closing sessions be proposed again.
    pub fn reset_closing(&self) {
        for live in self.sessions.lock().values_mut() {
            live.closing_since = None;
        }
    }

    /// Number of tracked sessions.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_unique() {
        let info = SessionInfo {
            timeout_ms: 4000,
            passwd: vec![7; 16],
        };
        let mut a = SessionTable::default();
        let mut b = SessionTable::default();
        let ids_a: Vec<i64> = (0..3).map(|_| a.create(1, 1000, info.clone())).collect();
        let ids_b: Vec<i64> = (0..3).map(|_| b.create(1, 1000, info.clone())).collect();
        assert_eq!(ids_a, ids_b);
        assert_eq!(ids_a[1], ids_a[0] + 1);
        assert!(ids_a.iter().all(|id| *id > 0));
    }

    #[test]
    fn table_round_trips() {
        let mut table = SessionTable::default();
        table.create(
            1,
            99,
            SessionInfo {
                timeout_ms: 5,
                passwd: vec![1, 2],
            },
        );
        let mut out = BytesMut::new();
        table.serialize(&mut out);
        let back = SessionTable::deserialize(&mut Reader::new(&out)).unwrap();
        assert_eq!(back, table);
        assert!(SessionTable::deserialize(&mut Reader::new(&out[..5])).is_err());
    }

    #[test]
    fn tracker_expires_once() {
        let tracker = SessionTracker::default();
        tracker.add(1, Duration::from_millis(0));
        tracker.add(2, Duration::from_secs(60));
        let now = Instant::now() + Duration::from_millis(1);
        assert_eq!(tracker.take_expired(now), vec![1]);
        assert!(tracker.take_expired(now).is_empty());
        assert!(tracker.touch(2));
        assert!(!tracker.touch(3));
    }

    #[test]
    fn lost_close_proposal_is_retried() {
        let tracker = SessionTracker::default();
        tracker.add(1, Duration::from_millis(0));
        let t0 = Instant::now() + Duration::from_millis(1);
        assert_eq!(tracker.take_expired(t0), vec![1]);
        // The CloseSession was lost: not offered again before the retry deadline...
        assert!(tracker
            .take_expired(t0 + CLOSE_RETRY - Duration::from_millis(1))
            .is_empty());
        // ...and offered again after it, since the session still exists.
        assert_eq!(tracker.take_expired(t0 + CLOSE_RETRY), vec![1]);
        assert!(tracker.take_expired(t0 + CLOSE_RETRY).is_empty());
        // Once applied, the session is gone and never offered again.
        tracker.remove(1);
        assert!(tracker.take_expired(t0 + CLOSE_RETRY * 3).is_empty());
    }

    #[test]
    fn reset_closing_rearms_at_once() {
        // A leadership change re-offers closing sessions without waiting for the deadline.
        let tracker = SessionTracker::default();
        tracker.add(7, Duration::from_millis(0));
        let t0 = Instant::now() + Duration::from_millis(1);
        assert_eq!(tracker.take_expired(t0), vec![7]);
        tracker.reset_closing();
        assert_eq!(tracker.take_expired(t0), vec![7]);
    }
}
