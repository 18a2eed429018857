//! [`ReadBarrier`]: linearizable `sync` on any node, etcd's `linearizableReadLoop` shape.
//!
//! One ReadIndex request is in flight at a time and serves every waiter queued *before* it
//! was sent; waiters that arrive while it is in flight wait for the next one (the leader may
//! already have fixed the first one's index). A request is resent every [`READ_RESEND`] and
//! at once when the leader or term changes, because raft-rs drops ReadIndex silently (no
//! leader; a new leader before its first commit in the term; a deposed leader). Once
//! answered with `index`, its waiters complete when this node's applied index reaches
//! `index`, i.e. after it applied everything committed before the call.
//!
//! The state lives in the raft `Shared` (one barrier per node) and is driven by the raft
//! thread (answers, applied index, leader changes, the resend timer on each tick); callers
//! only enqueue. Waiters get a tokio oneshot; a caller's timeout is its own business (drop
//! the receiver): nothing here waits forever on its behalf, but nothing gives up either.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{RaftError, RaftHandle};

/// How often an unanswered ReadIndex is sent again (etcd's `readIndexRetryTime`).
pub const READ_RESEND: Duration = Duration::from_millis(500);

/// Prefix of the ReadIndex contexts the barrier uses, so its answers can be told apart from
/// other [`RaftHandle::read_index`] users' (which go to `StateMachine::on_read_index`).
const CTX_MAGIC: &[u8; 4] = b"RBAR";

/// Encodes a barrier request's context.
fn encode_ctx(seq: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(CTX_MAGIC);
    v.extend_from_slice(&seq.to_be_bytes());
    v
}

/// The sequence number of a barrier context, `None` for anybody else's context.
pub(super) fn decode_ctx(ctx: &[u8]) -> Option<u64> {
    let rest = ctx.strip_prefix(CTX_MAGIC.as_slice())?;
    let bytes: [u8; 8] = rest.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// A caller waiting for the barrier; receives the read index it was served at.
type Waiter = oneshot::Sender<u64>;

/// The request currently in flight.
#[derive(Debug)]
struct InFlight {
    /// Its sequence number (the context's payload).
    seq: u64,
    /// When it was (re)sent, for [`READ_RESEND`].
    sent_at: Instant,
    /// Waiters that all queued before it was (re)sent.
    waiters: Vec<Waiter>,
}

/// Barrier bookkeeping; every method is O(waiters) and never blocks.
#[derive(Debug, Default)]
pub(super) struct BarrierState {
    /// Next sequence number (contexts are unique per request and resend).
    next_seq: u64,
    /// The outstanding request, if any.
    in_flight: Option<InFlight>,
    /// Waiters that arrived while a request was in flight: served by the next one.
    queued: Vec<Waiter>,
    /// Answered requests waiting for `applied >= index`, oldest (smallest index) first.
    ready: Vec<(u64, Vec<Waiter>)>,
}

impl BarrierState {
    /// Starts a new request for `waiters`; returns the context to send.
    fn start(&mut self, waiters: Vec<Waiter>, now: Instant) -> Vec<u8> {
        self.next_seq = self.next_seq.wrapping_add(1);
        let seq = self.next_seq;
        self.in_flight = Some(InFlight {
            seq,
            sent_at: now,
            waiters,
        });
        encode_ctx(seq)
    }

    /// A new waiter. Returns the context to send if it started a request (nothing was in
    /// flight); otherwise it rides on the next request.
    pub(super) fn enqueue(&mut self, w: Waiter, now: Instant) -> Option<Vec<u8>> {
        if self.in_flight.is_some() {
            self.queued.push(w);
            None
        } else {
            Some(self.start(vec![w], now))
        }
    }

    /// A ReadIndex answer for barrier request `seq` at `index`. A stale `seq` (a resent
    /// request's earlier copy) is ignored. Returns the next request's context when waiters
    /// queued behind the answered one.
    pub(super) fn answered(
        &mut self,
        seq: u64,
        index: u64,
        applied: u64,
        now: Instant,
    ) -> Option<Vec<u8>> {
        if self.in_flight.as_ref().is_none_or(|f| f.seq != seq) {
            return None;
        }
        let done = self.in_flight.take().map(|f| f.waiters).unwrap_or_default();
        if index <= applied {
            complete(done, index);
        } else {
            // Answers come in request order, so indexes only grow; keep it sorted anyway.
            let at = self.ready.partition_point(|(i, _)| *i <= index);
            self.ready.insert(at, (index, done));
        }
        if self.queued.is_empty() {
            None
        } else {
            let next = std::mem::take(&mut self.queued);
            Some(self.start(next, now))
        }
    }

    /// Completes every answered request whose index is applied.
    pub(super) fn applied(&mut self, applied: u64) {
        let n = self.ready.partition_point(|(i, _)| *i <= applied);
        for (index, waiters) in self.ready.drain(..n) {
            complete(waiters, index);
        }
    }

    /// The timer (each raft tick) and leader changes (`force`): forgets waiters that gave up,
    /// and resends the request in flight if it is [`READ_RESEND`] old or `force` is set,
    /// folding the queued waiters into it (they all arrived before the resend). Returns the
    /// context to send, if any.
    pub(super) fn poll(&mut self, now: Instant, applied: u64, force: bool) -> Option<Vec<u8>> {
        self.applied(applied);
        self.queued.retain(|w| !w.is_closed());
        for (_, ws) in &mut self.ready {
            ws.retain(|w| !w.is_closed());
        }
        self.ready.retain(|(_, ws)| !ws.is_empty());
        let mut flight = self.in_flight.take()?;
        flight.waiters.retain(|w| !w.is_closed());
        if flight.waiters.is_empty() && self.queued.is_empty() {
            // Everybody timed out: stop asking.
            return None;
        }
        if force || now.saturating_duration_since(flight.sent_at) >= READ_RESEND {
            let mut waiters = flight.waiters;
            waiters.append(&mut self.queued);
            return Some(self.start(waiters, now));
        }
        self.in_flight = Some(flight);
        None
    }

    /// Drops every waiter (the raft thread stopped): their receivers report the error.
    pub(super) fn fail_all(&mut self) {
        self.in_flight = None;
        self.queued.clear();
        self.ready.clear();
    }

    /// Waiters not completed yet (for `zk_pending_syncs`).
    pub(super) fn pending(&self) -> usize {
        self.in_flight.as_ref().map_or(0, |f| f.waiters.len())
            + self.queued.len()
            + self.ready.iter().map(|(_, w)| w.len()).sum::<usize>()
    }
}

fn complete(waiters: Vec<Waiter>, index: u64) {
    for w in waiters {
        // The caller may have timed out and dropped its receiver: nothing to do then.
        let _ = w.send(index);
    }
}

/// A node's linearizable read barrier (`sync`, resume of a locally unknown session), usable
/// from tokio. Cheap to clone; every clone shares the node's single barrier.
///
/// [`ReadBarrier::wait`] resolves with the read index once this node applied everything
/// committed before the call, on a leader, follower or learner alike. It never gives up by
/// itself while the raft thread runs (with no leader it keeps resending every
/// [`READ_RESEND`]), so callers bound it with their operation timeout and close the client's
/// connection when it passes (ConnectionLoss). It fails with [`RaftError::Stopped`] once the
/// raft thread stops.
#[derive(Clone)]
pub struct ReadBarrier {
    /// The node whose barrier this is.
    raft: RaftHandle,
}

impl ReadBarrier {
    pub(super) fn new(raft: RaftHandle) -> Self {
        ReadBarrier { raft }
    }

    /// Queues a waiter; the receiver yields the read index once it is applied here, or an
    /// error (sender dropped) if the raft thread stopped.
    pub fn wait(&self) -> Result<oneshot::Receiver<u64>, RaftError> {
        let shared = &self.raft.shared;
        if shared.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RaftError::Stopped);
        }
        let (tx, rx) = oneshot::channel();
        let ctx = shared.barrier.lock().enqueue(tx, Instant::now());
        if let Some(ctx) = ctx {
            if let Err(e) = self.raft.read_index(ctx) {
                shared.barrier.lock().fail_all();
                return Err(e);
            }
        }
        if shared.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            // Raced with the raft thread stopping: it may have failed the others before we
            // queued; make sure this one does not hang.
            shared.barrier.lock().fail_all();
        }
        Ok(rx)
    }

    /// Waits until this node applied everything committed before the call; returns the read
    /// index. Bound it with a timeout (see the type's docs).
    pub async fn sync(&self) -> Result<u64, RaftError> {
        let rx = self.wait()?;
        rx.await.map_err(|_| RaftError::Stopped)
    }

    /// Waiters not completed yet (`zk_pending_syncs`).
    pub fn pending(&self) -> usize {
        self.raft.shared.barrier.lock().pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq_of(ctx: &[u8]) -> u64 {
        decode_ctx(ctx).unwrap()
    }

    #[test]
    fn one_request_serves_everyone_queued_before_it() {
        let now = Instant::now();
        let mut s = BarrierState::default();
        let (t1, mut r1) = oneshot::channel();
        let (t2, mut r2) = oneshot::channel();
        let (t3, mut r3) = oneshot::channel();
        let first = s.enqueue(t1, now).unwrap();
        // In flight: the next waiters do not start requests of their own.
        assert!(s.enqueue(t2, now).is_none());
        assert!(s.enqueue(t3, now).is_none());
        // The answer serves only the first (the others may postdate the leader's index)...
        let second = s.answered(seq_of(&first), 10, 5, now).unwrap();
        assert_ne!(first, second);
        assert!(r1.try_recv().is_err(), "index 10 is not applied yet");
        s.applied(10);
        assert_eq!(r1.try_recv().unwrap(), 10);
        // ...and one more request serves both later ones.
        assert!(s.answered(seq_of(&second), 12, 12, now).is_none());
        assert_eq!(r2.try_recv().unwrap(), 12);
        assert_eq!(r3.try_recv().unwrap(), 12);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn resend_after_timeout_and_on_leader_change_and_ignore_stale_answers() {
        let now = Instant::now();
        let mut s = BarrierState::default();
        let (t1, mut r1) = oneshot::channel();
        let (t2, mut r2) = oneshot::channel();
        let first = s.enqueue(t1, now).unwrap();
        assert!(s.enqueue(t2, now).is_none());
        assert!(s.poll(now + READ_RESEND / 2, 0, false).is_none());
        let resent = s.poll(now + READ_RESEND, 0, false).unwrap();
        assert_ne!(first, resent);
        let forced = s.poll(now + READ_RESEND, 0, true).unwrap();
        assert_ne!(resent, forced);
        // An answer to an older copy is ignored.
        assert!(s.answered(seq_of(&first), 3, 3, now).is_none());
        assert!(r1.try_recv().is_err());
        // The resend carries both waiters (it was sent after both arrived).
        assert!(s.answered(seq_of(&forced), 3, 3, now).is_none());
        assert_eq!(r1.try_recv().unwrap(), 3);
        assert_eq!(r2.try_recv().unwrap(), 3);
    }

    #[test]
    fn abandoned_waiters_stop_the_resends_and_fail_all_errors_out() {
        let now = Instant::now();
        let mut s = BarrierState::default();
        let (t1, r1) = oneshot::channel();
        s.enqueue(t1, now).unwrap();
        drop(r1);
        assert!(s.poll(now + READ_RESEND * 2, 0, true).is_none());
        assert_eq!(s.pending(), 0);
        let (t2, mut r2) = oneshot::channel();
        assert!(s.enqueue(t2, now).is_some(), "nothing in flight any more");
        s.fail_all();
        assert!(matches!(
            r2.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(decode_ctx(b"other"), None);
    }
}
