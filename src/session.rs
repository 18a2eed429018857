//! Sessions: the replicated table of live sessions (part of the state machine) and the
//! leader's expiry tracker (in memory only: touches are too frequent to replicate; followers
//! forward them to the leader in batches instead).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use parking_lot::Mutex;
use rookery_protocol::{DecodeError, Reader, Record};

use crate::peer::SessionTouch;

/// A live session as every replica knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The timeout negotiated at creation, in ms; a resuming client may renegotiate.
    pub timeout_ms: i32,
    /// The secret a client must present to resume the session.
    pub passwd: Vec<u8>,
    /// The connection that owns the session, as `(server_id, conn_id)`: set by the
    /// CreateSession entry and moved by each Reattach entry (a resume). Requests proposed
    /// through any other connection get SessionMoved (ZooKeeper's `checkSession(owner)`).
    /// `None` when unknown (a snapshot written before owners were recorded): nothing is fenced.
    pub owner: Option<(u64, u64)>,
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
        // Never reuse a live id (one imported from ZooKeeper could lie ahead of the counter).
        while self.sessions.contains_key(&self.next_session_id) {
            self.next_session_id = self.next_session_id.wrapping_add(1);
        }
        let id = self.next_session_id;
        self.next_session_id = self.next_session_id.wrapping_add(1);
        self.sessions.insert(id, info);
        id
    }

    /// Adds a session under a given id (an import from ZooKeeper, whose ids and passwords
    /// the clients already hold); replaces one with the same id.
    pub fn insert(&mut self, session_id: i64, info: SessionInfo) {
        self.sessions.insert(session_id, info);
    }

    /// Removes a session at apply time; false if it did not exist.
    pub fn remove(&mut self, session_id: i64) -> bool {
        self.sessions.remove(&session_id).is_some()
    }

    /// The session, if it is live.
    pub fn get(&self, session_id: i64) -> Option<&SessionInfo> {
        self.sessions.get(&session_id)
    }

    /// The session, mutably (apply time only).
    pub fn get_mut(&mut self, session_id: i64) -> Option<&mut SessionInfo> {
        self.sessions.get_mut(&session_id)
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
            let (server, conn) = info.owner.unwrap_or((0, 0));
            out.put_u64(server);
            out.put_u64(conn);
        }
    }

    /// Reads a table written by [`SessionTable::serialize`]; lengths are checked first.
    /// `with_owners` is false for the layout written before owners were recorded (every
    /// owner is then `None`).
    pub fn deserialize(input: &mut Reader<'_>, with_owners: bool) -> Result<Self, DecodeError> {
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
            let owner = if with_owners {
                let server = input.read_i64()? as u64;
                let conn = input.read_i64()? as u64;
                (server != 0 || conn != 0).then_some((server, conn))
            } else {
                None
            };
            sessions.insert(
                id,
                SessionInfo {
                    timeout_ms,
                    passwd,
                    owner,
                },
            );
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

/// Default [`SessionTracker`] expiry rate: at most this many sessions are offered for expiry
/// per second (etcd's `leaseRevokeRate`), so a backlog (a long pause, a restart, a clock
/// jump) turns into a bounded stream of CloseSession proposals instead of a storm.
pub const DEFAULT_EXPIRY_RATE: usize = 1000;

/// The window [`DEFAULT_EXPIRY_RATE`]-style caps are measured over.
const RATE_WINDOW: Duration = Duration::from_secs(1);

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

/// Decides when sessions expire.
///
/// Every server learns every session at apply ([`SessionTracker::add`]), but only the
/// **expiring** tracker acts on deadlines: the standalone server's (expiring from the start,
/// as before the ensemble) and, in an ensemble, the caught-up leader's
/// ([`SessionTracker::promote`]). A non-expiring tracker (a follower or observer, after
/// [`SessionTracker::demote`]) instead collects the touches of its own clients in a touch
/// table (ZooKeeper's LearnerSessionTracker `touchTable`), which the server drains every
/// tickTime/2 and sends to the leader ([`crate::peer::PeerNetwork::send_touch`]); the leader
/// applies them with [`SessionTracker::touch_from_peer`]. So a client connected to a follower
/// keeps its session alive at the leader without a log entry per ping.
#[derive(Debug)]
pub struct SessionTracker {
    /// Liveness by session id.
    sessions: Mutex<HashMap<i64, Liveness>>,
    /// Whether this tracker expires sessions (standalone, or a caught-up leader).
    expiring: AtomicBool,
    /// Follower side: sessions touched by local clients since the last drain, with their
    /// timeout in ms.
    touches: Mutex<HashMap<i64, u32>>,
    /// When each of the sessions offered for expiry in the last [`RATE_WINDOW`] was offered.
    recent: Mutex<VecDeque<Instant>>,
    /// At most this many offers per [`RATE_WINDOW`].
    rate: usize,
}

impl Default for SessionTracker {
    fn default() -> Self {
        Self::with_expiry_rate(DEFAULT_EXPIRY_RATE)
    }
}

impl SessionTracker {
    /// An expiring tracker (the standalone behaviour) that offers at most `rate` sessions per
    /// second for expiry (at least 1).
    pub fn with_expiry_rate(rate: usize) -> Self {
        SessionTracker {
            sessions: Mutex::new(HashMap::new()),
            expiring: AtomicBool::new(true),
            touches: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
            rate: rate.max(1),
        }
    }

    /// Every tracked session and when it expires unless heard from (the AdminServer's `dump`).
    pub fn deadlines(&self) -> Vec<(i64, Instant)> {
        self.sessions
            .lock()
            .iter()
            .map(|(id, live)| (*id, live.deadline))
            .collect()
    }

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

    /// The client was heard from on this server. Returns false if the session is unknown
    /// (expired). On a non-expiring tracker the touch is also recorded in the touch table,
    /// to be forwarded to the leader.
    pub fn touch(&self, session_id: i64) -> bool {
        let timeout = match self.sessions.lock().get_mut(&session_id) {
            Some(live) => {
                live.deadline = Instant::now() + live.timeout;
                live.timeout
            }
            None => return false,
        };
        if !self.is_expiring() {
            self.record_touch(session_id, duration_ms(timeout));
        }
        true
    }

    /// Follower side: remembers that a local client of `session_id` (timeout `timeout_ms`)
    /// was heard from, for the next [`SessionTracker::drain_touches`].
    pub fn record_touch(&self, session_id: i64, timeout_ms: u32) {
        self.touches.lock().insert(session_id, timeout_ms);
    }

    /// Follower side: the touches recorded since the last call, as (session id, timeout ms)
    /// in id order, for one `Touch` frame to the leader every tickTime/2. Empties the table.
    pub fn drain_touches(&self) -> Vec<(i64, u32)> {
        let mut out: Vec<(i64, u32)> = self.touches.lock().drain().collect();
        out.sort_unstable();
        out
    }

    /// [`SessionTracker::drain_touches`] as the peer transport's `Touch` frame payload
    /// (for [`crate::peer::PeerNetwork::send_touch`]).
    pub fn drain_touch_frame(&self) -> Vec<SessionTouch> {
        self.drain_touches()
            .into_iter()
            .map(|(session_id, timeout_ms)| SessionTouch {
                session_id,
                timeout_ms,
            })
            .collect()
    }

    /// Leader side: one `Touch` frame from a peer (the `RaftInbound` touch callback).
    /// Returns how many of the sessions were known here.
    pub fn touches_from_peer(&self, touches: &[SessionTouch]) -> usize {
        touches
            .iter()
            .filter(|t| self.touch_from_peer(t.session_id, t.timeout_ms))
            .count()
    }

    /// Leader side: a follower or observer heard from a client of `session_id`, whose
    /// negotiated timeout there is `timeout_ms` (0: keep the known one). Pushes the deadline
    /// to at least now + timeout and learns a renegotiated timeout. Returns false if the
    /// session is unknown here (already closed).
    pub fn touch_from_peer(&self, session_id: i64, timeout_ms: u32) -> bool {
        let now = Instant::now();
        match self.sessions.lock().get_mut(&session_id) {
            Some(live) => {
                if timeout_ms > 0 {
                    live.timeout = Duration::from_millis(u64::from(timeout_ms));
                }
                live.deadline = live.deadline.max(now + live.timeout);
                true
            }
            None => false,
        }
    }

    /// This node became a caught-up leader: start expiring, and give every known session
    /// `deadline = now + its timeout + extension` (ZooKeeper's fresh timeout on leader
    /// start, etcd's `Promote(electionTimeout)`), since touches sent to the old leader were
    /// lost. Nothing expires because of an election, and clients have the extension (an
    /// election timeout) to find the new leader. Closing marks are cleared too.
    pub fn promote(&self, now: Instant, extension: Duration) {
        let mut sessions = self.sessions.lock();
        for live in sessions.values_mut() {
            live.deadline = now + live.timeout + extension;
            live.closing_since = None;
        }
        self.expiring.store(true, Ordering::Release);
        tracing::info!(
            sessions = sessions.len(),
            extension_ms = extension.as_millis() as u64,
            "session tracker promoted: expiring as leader"
        );
    }

    /// This node lost leadership (or is not a caught-up leader): stop expiring, and record
    /// local touches for forwarding instead. Deadlines are rebuilt by the next promotion.
    pub fn demote(&self) {
        let was = self.expiring.swap(false, Ordering::AcqRel);
        self.reset_closing();
        if was {
            tracing::info!(
                sessions = self.len(),
                "session tracker demoted: not expiring"
            );
        }
    }

    /// Whether this tracker expires sessions (standalone, or promoted and not demoted).
    pub fn is_expiring(&self) -> bool {
        self.expiring.load(Ordering::Acquire)
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
        self.touches.lock().remove(&session_id);
    }

    /// Sessions past their deadline that are not closing, or whose CloseSession was proposed
    /// at least [`CLOSE_RETRY`] ago and evidently never applied; marks them closing as of `now`.
    /// Nothing while not expiring. At most the expiry rate per second is offered (most
    /// overdue first); the rest stay due and come in later calls. Returned in id order.
    pub fn take_expired(&self, now: Instant) -> Vec<i64> {
        if !self.is_expiring() {
            return Vec::new();
        }
        let mut recent = self.recent.lock();
        while recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            recent.pop_front();
        }
        let allowance = self.rate.saturating_sub(recent.len());
        if allowance == 0 {
            return Vec::new();
        }
        let mut sessions = self.sessions.lock();
        let mut due: Vec<(Instant, i64)> = sessions
            .iter()
            .filter(|(_, live)| {
                live.deadline <= now
                    && live
                        .closing_since
                        .is_none_or(|since| now.saturating_duration_since(since) >= CLOSE_RETRY)
            })
            .map(|(id, live)| (live.deadline, *id))
            .collect();
        due.sort_unstable();
        due.truncate(allowance);
        let mut expired: Vec<i64> = due.into_iter().map(|(_, id)| id).collect();
        for id in &expired {
            if let Some(live) = sessions.get_mut(id) {
                live.closing_since = Some(now);
            }
            recent.push_back(now);
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

    /// Stops tracking every session for which `keep` is false (a snapshot install replaced
    /// the table); returns their ids, in id order.
    pub fn retain(&self, keep: impl Fn(i64) -> bool) -> Vec<i64> {
        let mut gone: Vec<i64> = {
            let mut sessions = self.sessions.lock();
            let gone: Vec<i64> = sessions.keys().copied().filter(|id| !keep(*id)).collect();
            for id in &gone {
                sessions.remove(id);
            }
            gone
        };
        let mut touches = self.touches.lock();
        for id in &gone {
            touches.remove(id);
        }
        gone.sort_unstable();
        gone
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

/// A timeout in whole ms for the wire (saturating).
fn duration_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_unique() {
        let info = SessionInfo {
            timeout_ms: 4000,
            passwd: vec![7; 16],
            owner: Some((1, 3)),
        };
        let mut a = SessionTable::default();
        let mut b = SessionTable::default();
        let ids_a: Vec<i64> = (0..3).map(|_| a.create(1, 1000, info.clone())).collect();
        let ids_b: Vec<i64> = (0..3).map(|_| b.create(1, 1000, info.clone())).collect();
        assert_eq!(ids_a, ids_b);
        assert_eq!(ids_a[1], ids_a[0] + 1);
        assert!(ids_a.iter().all(|id| *id > 0));
        // An inserted (imported) session's id is skipped, never handed out again.
        a.insert(ids_a[2] + 1, info.clone());
        let next = a.create(1, 1000, info.clone());
        assert_eq!(next, ids_a[2] + 2);
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
                owner: Some((2, 7)),
            },
        );
        table.create(
            1,
            99,
            SessionInfo {
                timeout_ms: 6,
                passwd: vec![3],
                owner: None,
            },
        );
        let mut out = BytesMut::new();
        table.serialize(&mut out);
        let back = SessionTable::deserialize(&mut Reader::new(&out), true).unwrap();
        assert_eq!(back, table);
        assert!(SessionTable::deserialize(&mut Reader::new(&out[..5]), true).is_err());
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

    #[test]
    fn no_expiry_storm_after_promotion() {
        // 2000 sessions whose deadlines went stale while another node led (touches went
        // there): promotion gives each a full timeout plus the election timeout.
        let tracker = SessionTracker::default();
        tracker.demote();
        let timeout = Duration::from_secs(4);
        for id in 1..=2000 {
            tracker.add(id, timeout);
        }
        let elected = Instant::now() + Duration::from_secs(60);
        assert!(tracker.take_expired(elected).is_empty(), "not expiring yet");
        let extension = Duration::from_secs(1);
        tracker.promote(elected, extension);
        assert!(tracker.is_expiring());
        for step_ms in [0u64, 1000, 4000, 4999] {
            let at = elected + Duration::from_millis(step_ms);
            assert!(
                tracker.take_expired(at).is_empty(),
                "expired {step_ms} ms after promotion"
            );
        }
        // Due after timeout + extension, and then at most 1000 per second.
        let due = elected + timeout + extension;
        let first = tracker.take_expired(due);
        assert_eq!(first.len(), 1000);
        assert!(tracker
            .take_expired(due + Duration::from_millis(999))
            .is_empty());
        let second = tracker.take_expired(due + Duration::from_secs(1));
        assert_eq!(second.len(), 1000);
        // Their CloseSessions apply.
        for id in first.iter().chain(&second) {
            tracker.remove(*id);
        }
        assert!(tracker
            .take_expired(due + Duration::from_secs(2))
            .is_empty());
        assert!(tracker.is_empty());
    }

    #[test]
    fn expiry_rate_is_capped_over_any_second() {
        let tracker = SessionTracker::with_expiry_rate(100);
        for id in 0..550 {
            tracker.add(id, Duration::ZERO);
        }
        let t0 = Instant::now() + Duration::from_millis(1);
        let mut offers: Vec<(Instant, usize)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // Poll every 100 ms for 8 s: everything is offered exactly once, never more than 100
        // within any 1 s window.
        for step in 0..80u32 {
            let at = t0 + Duration::from_millis(100) * step;
            let got = tracker.take_expired(at);
            for id in &got {
                assert!(seen.insert(*id), "{id} offered twice");
                tracker.remove(*id);
            }
            offers.push((at, got.len()));
        }
        assert_eq!(seen.len(), 550);
        for (i, (start, _)) in offers.iter().enumerate() {
            let in_window: usize = offers[i..]
                .iter()
                .take_while(|(t, _)| t.saturating_duration_since(*start) < RATE_WINDOW)
                .map(|(_, n)| n)
                .sum();
            assert!(in_window <= 100, "{in_window} expiries within one second");
        }
        // The most overdue go first.
        let tracker = SessionTracker::with_expiry_rate(1);
        tracker.add(5, Duration::from_millis(10));
        tracker.add(9, Duration::ZERO);
        let later = Instant::now() + Duration::from_secs(1);
        assert_eq!(tracker.take_expired(later), vec![9]);
    }

    #[test]
    fn touches_from_a_peer_keep_a_session_alive() {
        let tracker = SessionTracker::default();
        let timeout = Duration::from_secs(2);
        tracker.add(1, timeout);
        tracker.add(2, timeout);
        let t0 = Instant::now();
        // Session 1's client is on a follower, which forwards a touch every second; the
        // leader's checks in between never find it due.
        for s in 1..=6u64 {
            std::thread::sleep(Duration::from_millis(1));
            assert!(tracker.touch_from_peer(1, 2000));
            let now = Instant::now();
            assert!(
                !tracker.take_expired(now + timeout / 2).contains(&1),
                "round {s}"
            );
        }
        // Session 2 was never touched: due one timeout after creation; session 1 only one
        // timeout after its last touch.
        assert_eq!(tracker.take_expired(t0 + timeout), vec![2]);
        assert_eq!(
            tracker.take_expired(Instant::now() + timeout + Duration::from_millis(1)),
            vec![1]
        );
        // A renegotiated timeout reaches the leader with the touch; unknown sessions say so.
        tracker.remove(1);
        tracker.remove(2);
        tracker.add(3, timeout);
        assert!(tracker.touch_from_peer(3, 60_000));
        assert!(tracker
            .take_expired(Instant::now() + Duration::from_secs(30))
            .is_empty());
        assert!(!tracker.touch_from_peer(99, 2000));
        // The frame forms used by the peer transport.
        let frame = [
            SessionTouch {
                session_id: 3,
                timeout_ms: 0,
            },
            SessionTouch {
                session_id: 98,
                timeout_ms: 10,
            },
        ];
        assert_eq!(tracker.touches_from_peer(&frame), 1);
        let follower = SessionTracker::default();
        follower.demote();
        follower.record_touch(5, 700);
        assert_eq!(
            follower.drain_touch_frame(),
            vec![SessionTouch {
                session_id: 5,
                timeout_ms: 700
            }]
        );
    }

    #[test]
    fn a_follower_records_touches_and_a_demoted_tracker_never_expires() {
        let tracker = SessionTracker::default();
        tracker.add(1, Duration::from_millis(1500));
        tracker.add(2, Duration::ZERO);
        // Expiring (standalone/leader): local touches are not forwarded anywhere.
        assert!(tracker.touch(1));
        assert!(tracker.drain_touches().is_empty());
        tracker.demote();
        assert!(!tracker.is_expiring());
        assert!(tracker
            .take_expired(Instant::now() + Duration::from_secs(3600))
            .is_empty());
        // Follower: local touches land in the touch table, drained once.
        assert!(tracker.touch(1));
        assert!(!tracker.touch(7));
        tracker.record_touch(2, 4000);
        assert_eq!(tracker.drain_touches(), vec![(1, 1500), (2, 4000)]);
        assert!(tracker.drain_touches().is_empty());
        // A closed session leaves the table.
        tracker.record_touch(2, 4000);
        tracker.remove(2);
        assert!(tracker.drain_touches().is_empty());
        // Promotion turns expiry back on.
        tracker.promote(Instant::now(), Duration::ZERO);
        assert_eq!(
            tracker.take_expired(Instant::now() + Duration::from_secs(2)),
            vec![1]
        );
    }
}
