//! End-to-end tests of the raft thread with real LMDB files in a temp dir.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ::raft::{GetEntriesContext, Storage as _, StorageError};

use super::*;
use crate::storage::{LmdbStorage, SnapshotDir};

/// What the test state machine observed; shared with the test body.
#[derive(Default, Clone, Debug)]
struct Observed {
    /// Every applied (index, data), in apply order; restored snapshots replace it.
    entries: Vec<(u64, Vec<u8>)>,
    /// Index of the snapshot the machine was restored from, if any.
    restored_from: Option<u64>,
    /// Data of proposals Raft refused.
    dropped: Vec<Vec<u8>>,
    /// Answers to read_index: (ctx, index).
    reads: Vec<(Vec<u8>, u64)>,
    /// Leadership notifications.
    roles: Vec<bool>,
    /// `on_leader_change` notifications: (leader id, term).
    leaders: Vec<(u64, u64)>,
    /// `on_caught_up` notifications: terms.
    caught_up: Vec<u64>,
    /// `apply_membership` calls: (index, context, voters, outgoing).
    memberships: Vec<Applied>,
    /// `membership_refused` calls.
    refusals: Vec<(Vec<u8>, MembershipRefusal)>,
    /// Terms of the applied `member:` entries: (data, term).
    request_terms: Vec<(Vec<u8>, u64)>,
    /// Terms of the applied conf changes with a context: (context, term).
    joint_terms: Vec<(Vec<u8>, u64)>,
}

/// One `apply_membership` call: (index, context, voters, outgoing).
type Applied = (u64, Vec<u8>, Vec<u64>, Vec<u64>);

/// Blocks `apply` of an entry whose data is `b"gate"` until opened (group-commit test).
#[derive(Default)]
struct Gate {
    /// Whether `apply` may proceed past the gate entry.
    open: Mutex<bool>,
    /// Wakes the parked raft thread when the gate opens.
    cv: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
}

struct TestSm {
    /// Shared with the test body, which asserts on it.
    obs: Arc<Mutex<Observed>>,
    /// Optional gate to park the raft thread (group-commit test only).
    gate: Option<Arc<Gate>>,
    /// Set by an entry `fatal`, returned by `take_fatal`.
    fatal: Option<String>,
    /// Set by an entry `member:<ids>` (voters, comma-separated), for the raft thread.
    membership: Option<MembershipChange>,
    /// Parks the raft thread when a conf change with a context applies (a leader dying
    /// between entering and leaving a joint configuration).
    joint_gate: Option<Arc<Gate>>,
    /// Changes of applied `member:` entries not settled by their conf change yet.
    unsettled: Vec<MembershipChange>,
}

impl TestSm {
    fn new() -> (Box<TestSm>, Arc<Mutex<Observed>>) {
        let obs = Arc::new(Mutex::new(Observed::default()));
        (
            Box::new(TestSm {
                obs: obs.clone(),
                gate: None,
                fatal: None,
                membership: None,
                joint_gate: None,
                unsettled: Vec::new(),
            }),
            obs,
        )
    }
}

impl TestSm {
    /// A state machine reporting to `obs` whose `gate` entry parks the raft thread.
    fn gated(obs: &Arc<Mutex<Observed>>, gate: &Arc<Gate>) -> Box<TestSm> {
        Box::new(TestSm {
            obs: obs.clone(),
            gate: Some(gate.clone()),
            fatal: None,
            membership: None,
            joint_gate: None,
            unsettled: Vec::new(),
        })
    }
}

impl StateMachine for TestSm {
    fn take_fatal(&mut self) -> Option<String> {
        self.fatal.take()
    }

    fn apply(&mut self, index: u64, _term: u64, data: &[u8]) {
        if data == b"panic" {
            panic!("injected apply panic");
        }
        if data == b"fatal" {
            self.fatal = Some("injected unappliable entry".into());
            return;
        }
        if data == b"gate" {
            if let Some(g) = &self.gate {
                g.wait();
            }
        }
        if let Some(ids) = data.strip_prefix(b"member:") {
            // `member:<voters>[/<learners>]`, comma-separated ids.
            let text = std::str::from_utf8(ids).unwrap();
            let (voters, learners) = text.split_once('/').unwrap_or((text, ""));
            let parse = |list: &str| -> Vec<u64> {
                list.split(',')
                    .filter(|i| !i.is_empty())
                    .map(|i| i.parse().unwrap())
                    .collect()
            };
            let change = MembershipChange {
                voters: parse(voters),
                learners: parse(learners),
                context: data.to_vec(),
                term: _term,
            };
            self.unsettled.push(change.clone());
            self.membership = Some(change);
            self.obs
                .lock()
                .unwrap()
                .request_terms
                .push((data.to_vec(), _term));
        }
        let mut o = self.obs.lock().unwrap();
        if let Some((last, _)) = o.entries.last() {
            assert!(index > *last, "apply out of order: {index} after {last}");
        }
        o.entries.push((index, data.to_vec()));
    }

    fn snapshot(&self) -> Vec<u8> {
        let o = self.obs.lock().unwrap();
        let mut out = Vec::new();
        for (i, d) in &o.entries {
            out.extend_from_slice(&i.to_be_bytes());
            out.extend_from_slice(&(d.len() as u32).to_be_bytes());
            out.extend_from_slice(d);
        }
        out
    }

    fn restore(&mut self, index: u64, mut data: &[u8]) -> Result<(), String> {
        let mut entries = Vec::new();
        while !data.is_empty() {
            if data.len() < 12 {
                return Err("truncated".into());
            }
            let i = u64::from_be_bytes(data[..8].try_into().unwrap());
            let n = u32::from_be_bytes(data[8..12].try_into().unwrap()) as usize;
            entries.push((i, data[12..12 + n].to_vec()));
            data = &data[12 + n..];
        }
        let mut o = self.obs.lock().unwrap();
        o.entries = entries;
        o.restored_from = Some(index);
        Ok(())
    }

    fn proposal_dropped(&mut self, data: &[u8]) {
        self.obs.lock().unwrap().dropped.push(data.to_vec());
    }

    fn on_role_change(&mut self, is_leader: bool, _term: u64) {
        self.obs.lock().unwrap().roles.push(is_leader);
    }

    fn on_read_index(&mut self, ctx: &[u8], index: u64) {
        self.obs.lock().unwrap().reads.push((ctx.to_vec(), index));
    }

    fn on_leader_change(&mut self, leader_id: u64, term: u64) {
        self.obs.lock().unwrap().leaders.push((leader_id, term));
    }

    fn on_caught_up(&mut self, term: u64) {
        self.obs.lock().unwrap().caught_up.push(term);
    }

    fn take_membership_change(&mut self) -> Option<MembershipChange> {
        self.membership.take()
    }

    fn unsettled_membership_changes(&self) -> Vec<MembershipChange> {
        self.unsettled.clone()
    }

    fn membership_refused(&mut self, context: &[u8], reason: MembershipRefusal) -> Option<Vec<u8>> {
        self.obs
            .lock()
            .unwrap()
            .refusals
            .push((context.to_vec(), reason));
        None
    }

    fn apply_membership(
        &mut self,
        index: u64,
        _term: u64,
        context: &[u8],
        voters: &[u64],
        _learners: &[u64],
        outgoing: &[u64],
    ) {
        self.obs.lock().unwrap().memberships.push((
            index,
            context.to_vec(),
            voters.to_vec(),
            outgoing.to_vec(),
        ));
        if !context.is_empty() {
            self.unsettled.retain(|c| c.context != context);
            self.obs
                .lock()
                .unwrap()
                .joint_terms
                .push((context.to_vec(), _term));
            if let Some(g) = &self.joint_gate {
                g.wait();
            }
        }
    }
}

fn opts(dir: &Path, snapshot_every: u64) -> RaftOptions {
    RaftOptions {
        tick_interval: Duration::from_millis(10),
        snapshot_every,
        max_batch: 256,
        ..RaftOptions::standalone(dir)
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn applied_count(obs: &Arc<Mutex<Observed>>) -> usize {
    obs.lock().unwrap().entries.len()
}

/// The payloads applied so far, in order.
fn applied_data(obs: &Arc<Mutex<Observed>>) -> Vec<Vec<u8>> {
    obs.lock()
        .unwrap()
        .entries
        .iter()
        .map(|(_, d)| d.clone())
        .collect()
}

/// Requests a snapshot, waits until it covers everything applied, and returns its index.
fn snapshot_now(h: &RaftHandle) -> u64 {
    h.request_snapshot().unwrap();
    wait_until("snapshot", || h.snapshot_index() == h.applied_index());
    h.snapshot_index()
}

/// Proposes `n` entries and waits until `total` entries have been applied.
fn propose_applied(
    h: &RaftHandle,
    obs: &Arc<Mutex<Observed>>,
    prefix: &str,
    n: usize,
    total: usize,
) {
    propose_n(h, prefix, n);
    wait_until("applied", || applied_count(obs) == total);
}

fn propose_n(h: &RaftHandle, prefix: &str, n: usize) {
    for i in 0..n {
        h.propose(format!("{prefix}-{i}").into_bytes()).unwrap();
    }
}

fn stop(h: RaftHandle, j: thread::JoinHandle<()>) {
    h.shutdown();
    j.join().unwrap();
}

/// Restarts on `dir` and waits until the replay reproduced `expect_len` entries.
fn restart(
    dir: &Path,
    every: u64,
    expect_len: usize,
) -> (RaftHandle, thread::JoinHandle<()>, Arc<Mutex<Observed>>) {
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(dir, every), sm).unwrap();
    wait_until("replay", || applied_count(&obs) >= expect_len);
    // Give a wrongly re-delivered entry a chance to show up.
    thread::sleep(Duration::from_millis(50));
    (h, j, obs)
}

#[test]
fn concurrent_proposals_apply_exactly_once_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    wait_until("leadership", || h.is_leader());

    let threads: Vec<_> = (0..4)
        .map(|t| {
            let h = h.clone();
            thread::spawn(move || propose_n(&h, &format!("t{t}"), 250))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_until("all applied", || applied_count(&obs) == 1000);

    let o = obs.lock().unwrap().clone();
    assert!(o.entries.windows(2).all(|w| w[0].0 < w[1].0));
    let mut seen = std::collections::HashSet::new();
    for (_, d) in &o.entries {
        assert!(seen.insert(d.clone()), "applied twice: {d:?}");
    }
    // Each thread's proposals keep their relative order (one FIFO queue, one log).
    for t in 0..4 {
        let mine: Vec<_> = o
            .entries
            .iter()
            .filter_map(|(_, d)| String::from_utf8(d.clone()).ok())
            .filter(|s| s.starts_with(&format!("t{t}-")))
            .collect();
        let expect: Vec<_> = (0..250).map(|i| format!("t{t}-{i}")).collect();
        assert_eq!(mine, expect);
    }
    assert_eq!(h.applied_index(), o.entries.last().unwrap().0);
    assert!(o.dropped.is_empty());
    assert_eq!(o.roles, vec![true]);
    stop(h, j);
}

#[test]
fn restart_replays_exactly_the_committed_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    propose_applied(&h, &obs, "a", 300, 300);
    let before = obs.lock().unwrap().entries.clone();
    stop(h, j);

    let (h, j, obs2) = restart(tmp.path(), 1_000_000, 300);
    assert_eq!(obs2.lock().unwrap().entries, before);
    assert_eq!(obs2.lock().unwrap().restored_from, None);
    // New writes continue after the old log.
    propose_n(&h, "b", 10);
    wait_until("more applied", || applied_count(&obs2) == 310);
    let after = obs2.lock().unwrap().entries.clone();
    assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(&after[..300], &before[..]);
    stop(h, j);

    // And once more, to cover a restart after a restart.
    let (h, j, obs3) = restart(tmp.path(), 1_000_000, 310);
    assert_eq!(obs3.lock().unwrap().entries, after);
    stop(h, j);
}

#[test]
fn snapshots_compact_the_log_and_restart_from_snapshot_plus_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let every = 50;
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), every), sm).unwrap();
    // Sequential waves so several snapshots happen at distinct points.
    for wave in 0..5 {
        propose_n(&h, &format!("w{wave}"), 40);
        wait_until("wave applied", || applied_count(&obs) == 40 * (wave + 1));
    }
    wait_until("two snapshots", || h.stats().snapshots_taken >= 2);
    let before = obs.lock().unwrap().entries.clone();
    let newest = h.snapshot_index();
    stop(h, j);

    let snaps = SnapshotDir::open(tmp.path().join("snapshots")).unwrap();
    let files = snaps.list().unwrap();
    assert_eq!(files.len(), 2, "keep the newest two: {files:?}");
    assert_eq!(files[0].0, newest);
    let older = files[1].0;
    assert!(older > 0 && newest >= older + every);
    {
        // The log is compacted to the older snapshot: entries <= older are gone,
        // term(first - 1) still answers.
        let mut log = LmdbStorage::open(&tmp.path().join("raft"), None).unwrap();
        assert_eq!(log.first_index().unwrap(), older + 1);
        assert!(log.term(older).is_ok());
        assert_eq!(
            log.entries(older, older + 1, None, GetEntriesContext::empty(false)),
            Err(::raft::Error::Store(StorageError::Compacted))
        );
        let last = log.last_index().unwrap();
        // Entries below the point go a chunk per transaction (or idle turn): whatever the
        // node had not purged yet goes now, and exactly the tail above the point stays.
        for _ in 0..100 {
            if !log.purge_step().unwrap() {
                break;
            }
        }
        assert_eq!(log.stored_entry_count().unwrap(), last - older);
    }

    let (h, j, obs2) = restart(tmp.path(), every, before.len());
    {
        let o = obs2.lock().unwrap();
        assert_eq!(o.restored_from, Some(newest));
        assert_eq!(o.entries, before);
    }
    stop(h, j);
}

#[test]
fn request_snapshot_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    propose_applied(&h, &obs, "x", 20, 20);
    snapshot_now(&h);
    let path = SnapshotDir::open(tmp.path().join("snapshots"))
        .unwrap()
        .file_path(h.snapshot_index());
    assert!(path.exists());
    // Nothing new applied: a second request must not write another file.
    h.request_snapshot().unwrap();
    thread::sleep(Duration::from_millis(50));
    assert_eq!(h.stats().snapshots_taken, 1);
    stop(h, j);
}

#[test]
fn the_log_is_bounded_by_bytes_as_well_as_by_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    // The count bound is never reached; 64 KiB of log triggers a snapshot.
    let o = RaftOptions {
        snapshot_bytes: 64 * 1024,
        ..opts(tmp.path(), 1_000_000)
    };
    let (h, j) = RaftHandle::start(o, sm).unwrap();
    let big = vec![b'b'; 4096];
    // 15 entries of 4 KiB: under the bound, no snapshot.
    for _ in 0..15 {
        h.propose(big.clone()).unwrap();
    }
    wait_until("applied", || applied_count(&obs) == 15);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        h.stats().snapshots_taken,
        0,
        "snapshot before the byte bound"
    );
    // Past 64 KiB: one snapshot.
    for _ in 0..5 {
        h.propose(big.clone()).unwrap();
    }
    wait_until("applied", || applied_count(&obs) == 20);
    wait_until("a snapshot by bytes", || h.stats().snapshots_taken == 1);
    // Small entries that add up to less than the bound take no further snapshot.
    propose_applied(&h, &obs, "s", 50, 70);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(h.stats().snapshots_taken, 1);
    stop(h, j);
}

/// Builds snapshots S1 < S2 with log entries after S2, returns (S1, S2, applied state).
fn two_snapshots(dir: &Path) -> (u64, u64, Vec<(u64, Vec<u8>)>) {
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(dir, 1_000_000), sm).unwrap();
    let mut snaps = Vec::new();
    for wave in 0..2 {
        propose_n(&h, &format!("s{wave}"), 30);
        wait_until("applied", || applied_count(&obs) == 30 * (wave + 1));
        snaps.push(snapshot_now(&h));
    }
    propose_n(&h, "tail", 30);
    wait_until("applied", || applied_count(&obs) == 90);
    let state = obs.lock().unwrap().entries.clone();
    stop(h, j);
    (snaps[0], snaps[1], state)
}

fn flip_byte(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() - 3;
    b[i] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

#[test]
fn corrupt_newest_snapshot_falls_back_to_older_plus_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (s1, s2, before) = two_snapshots(tmp.path());
    let snaps = SnapshotDir::open(tmp.path().join("snapshots")).unwrap();
    flip_byte(&snaps.file_path(s2));

    let (h, j, obs) = restart(tmp.path(), 1_000_000, before.len());
    {
        let o = obs.lock().unwrap();
        assert_eq!(o.restored_from, Some(s1));
        assert_eq!(o.entries, before);
    }
    assert!(!snaps.file_path(s2).exists(), "corrupt file set aside");
    stop(h, j);
}

#[test]
fn corrupt_only_snapshot_without_compaction_replays_full_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    propose_applied(&h, &obs, "x", 40, 40);
    let s = snapshot_now(&h);
    let before = obs.lock().unwrap().entries.clone();
    stop(h, j);
    flip_byte(
        &SnapshotDir::open(tmp.path().join("snapshots"))
            .unwrap()
            .file_path(s),
    );

    let (h, j, obs) = restart(tmp.path(), 1_000_000, before.len());
    assert_eq!(obs.lock().unwrap().restored_from, None);
    assert_eq!(obs.lock().unwrap().entries, before);
    stop(h, j);
}

#[test]
fn missing_history_is_a_clear_startup_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (s1, s2, _) = two_snapshots(tmp.path());
    let snaps = SnapshotDir::open(tmp.path().join("snapshots")).unwrap();
    flip_byte(&snaps.file_path(s1));
    flip_byte(&snaps.file_path(s2));
    let (sm, obs) = TestSm::new();
    match RaftHandle::start(opts(tmp.path(), 1_000_000), sm) {
        Err(RaftError::MissingHistory {
            compacted_to,
            newest_valid,
        }) => {
            assert_eq!((compacted_to, newest_valid), (s1, None));
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("started despite missing history"),
    }
    assert!(obs.lock().unwrap().entries.is_empty());
}

#[test]
fn crash_with_lagging_commit_index_recovers_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    propose_applied(&h, &obs, "c", 60, 60);
    let snap = snapshot_now(&h);
    propose_n(&h, "d", 20);
    wait_until("applied", || applied_count(&obs) == 80);
    let before = obs.lock().unwrap().entries.clone();
    h.crash_for_test();
    j.join().unwrap();
    {
        // The commit index on disk trails the applied index (it is written lazily)...
        let log = LmdbStorage::open(&tmp.path().join("raft"), None).unwrap();
        assert!(log.hard_state().commit < before.last().unwrap().0);
        assert_eq!(log.last_index().unwrap(), before.last().unwrap().0);
    }
    // ...yet every durable entry comes back, once.
    let (h, j, obs2) = restart(tmp.path(), 1_000_000, before.len());
    assert_eq!(obs2.lock().unwrap().restored_from, Some(snap));
    assert_eq!(obs2.lock().unwrap().entries, before);
    stop(h, j);
}

#[test]
fn crash_right_after_snapshot_above_disk_commit_recovers() {
    // Raft needs applied <= commit at startup; a snapshot written just before a crash can be
    // ahead of the (lazily written) commit index on disk, and recovery must arrange that.
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    propose_applied(&h, &obs, "e", 25, 25);
    let snap = snapshot_now(&h);
    let before = obs.lock().unwrap().entries.clone();
    h.crash_for_test();
    j.join().unwrap();
    {
        let log = LmdbStorage::open(&tmp.path().join("raft"), None).unwrap();
        assert!(log.hard_state().commit < snap);
    }
    let (h, j, obs2) = restart(tmp.path(), 1_000_000, before.len());
    assert_eq!(obs2.lock().unwrap().restored_from, Some(snap));
    assert_eq!(obs2.lock().unwrap().entries, before);
    propose_n(&h, "f", 5);
    wait_until("applied", || applied_count(&obs2) == 30);
    stop(h, j);
}

#[test]
fn group_commit_batches_queued_proposals() {
    let tmp = tempfile::tempdir().unwrap();
    let obs = Arc::new(Mutex::new(Observed::default()));
    let gate = Arc::new(Gate::default());
    let sm = TestSm::gated(&obs, &gate);
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    wait_until("leadership", || h.is_leader());
    // The gate entry parks the raft thread inside apply while 1000 proposals queue up.
    h.propose(b"gate".to_vec()).unwrap();
    thread::sleep(Duration::from_millis(50));
    let before = h.stats();
    propose_n(&h, "g", 1000);
    gate.open();
    wait_until("applied", || applied_count(&obs) == 1001);
    let after = h.stats();
    let txns = after.write_txns - before.write_txns;
    let entries = after.entries_appended - before.entries_appended;
    assert_eq!(entries, 1000);
    // max_batch = 256 commands per Ready: ~4 transactions, far fewer than 1000.
    assert!(
        txns <= 10,
        "{txns} write transactions for {entries} entries"
    );
    assert!(txns >= 1000 / 256);
    stop(h, j);
}

#[test]
fn a_leader_whose_raft_thread_stalls_is_not_fresh() {
    let tmp = tempfile::tempdir().unwrap();
    let obs = Arc::new(Mutex::new(Observed::default()));
    let gate = Arc::new(Gate::default());
    let sm = TestSm::gated(&obs, &gate);
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    wait_until("a fresh leader", || h.is_leader() && h.is_fresh());
    // The raft thread parks inside apply: the published role still says leader, but past an
    // election timeout this node must no longer count as fresh (it serves nothing then).
    h.propose(b"gate".to_vec()).unwrap();
    wait_until("unfresh while stalled", || !h.is_fresh());
    assert!(
        h.is_leader(),
        "the stale role flag is what the check must not trust"
    );
    assert!(h.since_leader_contact().unwrap() > h.election_timeout());
    gate.open();
    wait_until("fresh again", || h.is_fresh());
    assert!(applied_count(&obs) >= 1);
    stop(h, j);
}

#[test]
fn proposals_without_a_leader_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    // Three voters, no transport: this node can never win an election.
    let o = RaftOptions {
        voters: vec![1, 2, 3],
        ..opts(tmp.path(), 1_000_000)
    };
    let (h, j) = RaftHandle::start(o, sm).unwrap();
    h.propose(b"nope".to_vec()).unwrap();
    wait_until("dropped", || !obs.lock().unwrap().dropped.is_empty());
    assert!(!h.is_leader());
    assert_eq!(obs.lock().unwrap().dropped, vec![b"nope".to_vec()]);
    stop(h, j);
}

#[test]
fn read_index_answers_on_a_single_node() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    propose_applied(&h, &obs, "r", 5, 5);
    h.read_index(b"ctx-1".to_vec()).unwrap();
    wait_until("read state", || !obs.lock().unwrap().reads.is_empty());
    let (ctx, index) = obs.lock().unwrap().reads[0].clone();
    assert_eq!(ctx, b"ctx-1");
    assert!(index >= obs.lock().unwrap().entries.last().unwrap().0);
    stop(h, j);
}

#[test]
fn handle_is_clone_send_sync_and_fails_after_stop() {
    fn assert_traits<T: Clone + Send + Sync>() {}
    assert_traits::<RaftHandle>();
    let tmp = tempfile::tempdir().unwrap();
    let (sm, _obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    let h2 = h.clone();
    stop(h, j);
    assert!(matches!(
        h2.propose(b"late".to_vec()),
        Err(RaftError::Stopped)
    ));
    assert!(!h2.is_leader());
}

#[test]
fn invalid_options_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, _) = TestSm::new();
    let o = RaftOptions {
        node_id: 0,
        ..opts(tmp.path(), 10)
    };
    assert!(matches!(
        RaftHandle::start(o, sm),
        Err(RaftError::InvalidOptions(_))
    ));
}

/// Starts a node whose state machine parks the raft thread on a `b"gate"` entry.
fn start_gated(
    o: RaftOptions,
) -> (
    RaftHandle,
    thread::JoinHandle<()>,
    Arc<Mutex<Observed>>,
    Arc<Gate>,
) {
    let obs = Arc::new(Mutex::new(Observed::default()));
    let gate = Arc::new(Gate::default());
    let sm = TestSm::gated(&obs, &gate);
    let (h, j) = RaftHandle::start(o, sm).unwrap();
    wait_until("leadership", || h.is_caught_up_leader());
    (h, j, obs, gate)
}

#[test]
fn applied_entries_survive_losing_the_unflushed_transaction() {
    // The durability rule: an LMDB commit is durable only once the next one commits (or a
    // sync). Crash between two commits under load, then lose the newest transaction as a
    // power failure may: every entry the state machine saw must still be in the log.
    let tmp = tempfile::tempdir().unwrap();
    let (h, j, obs, gate) = start_gated(opts(tmp.path(), 1_000_000));
    h.propose(b"gate".to_vec()).unwrap();
    thread::sleep(Duration::from_millis(50));
    // Four batches of <= 256 queue up behind the gate, and the crash behind them: it strikes
    // after the last batch was committed but before anything flushed it.
    propose_n(&h, "p", 1000);
    h.crash_for_test();
    gate.open();
    j.join().unwrap();
    let before = obs.lock().unwrap().entries.clone();
    assert!(
        h.shared
            .unsynced_at_crash
            .load(std::sync::atomic::Ordering::Acquire),
        "the crash should hit an unflushed transaction"
    );
    let applied = before.last().unwrap().0;
    assert!(before.len() > 1, "earlier batches were applied");
    assert!(before.len() < 1001, "the unflushed batch was not applied");

    LmdbStorage::roll_back_newest_txn(&tmp.path().join("raft")).unwrap();
    {
        let log = LmdbStorage::open(&tmp.path().join("raft"), None).unwrap();
        assert!(log.last_index().unwrap() >= applied);
        let first = before.first().unwrap().0;
        let stored = log
            .entries(first, applied + 1, None, GetEntriesContext::empty(false))
            .unwrap();
        let stored: Vec<_> = stored.iter().map(|e| (e.index, e.data.to_vec())).collect();
        assert_eq!(stored, before);
    }
    // And a restart replays every one of them, once.
    let (h, j, obs2) = restart(tmp.path(), 1_000_000, before.len());
    assert_eq!(&obs2.lock().unwrap().entries[..before.len()], &before[..]);
    stop(h, j);
}

#[test]
fn durable_state_survives_a_crash_after_idle_proposals() {
    // Idle proposals are synced before they are applied: dropping the thread without stop()
    // (and then losing the newest transaction, which was flushed) loses nothing.
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    for i in 0..20 {
        h.propose(format!("i{i}").into_bytes()).unwrap();
        wait_until("applied", || applied_count(&obs) == i + 1);
    }
    let before = obs.lock().unwrap().entries.clone();
    h.crash_for_test();
    j.join().unwrap();
    assert!(!h
        .shared
        .unsynced_at_crash
        .load(std::sync::atomic::Ordering::Acquire));
    let (h, j, obs2) = restart(tmp.path(), 1_000_000, before.len());
    assert_eq!(obs2.lock().unwrap().entries, before);
    stop(h, j);
}

#[test]
fn burst_costs_one_flush_per_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let (h, j, obs, gate) = start_gated(opts(tmp.path(), 1_000_000));
    h.propose(b"gate".to_vec()).unwrap();
    thread::sleep(Duration::from_millis(50));
    let before = h.stats();
    propose_n(&h, "b", 1000);
    gate.open();
    wait_until("applied", || applied_count(&obs) == 1001);
    let after = h.stats();
    let txns = after.write_txns - before.write_txns;
    let syncs = after.syncs - before.syncs;
    assert_eq!(after.entries_appended - before.entries_appended, 1000);
    // max_batch = 256: 4 batches, one commit each; each commit flushes the previous batch,
    // and only the last one needs an explicit sync.
    assert!((4..=6).contains(&txns), "{txns} commits for 4 batches");
    assert!(syncs <= 1, "{syncs} explicit syncs for {txns} commits");
    // A sole voter commits only what it made durable itself: it never applies ahead.
    assert_eq!(after.applied_ahead, 0);
    stop(h, j);
}

#[test]
fn idle_proposal_is_applied_after_one_commit_and_one_sync() {
    let tmp = tempfile::tempdir().unwrap();
    // No tick will come to the rescue: a proposal left waiting for a next commit would hang.
    let o = RaftOptions {
        tick_interval: Duration::from_secs(3600),
        ..opts(tmp.path(), 1_000_000)
    };
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(o, sm).unwrap();
    wait_until("leadership", || h.is_caught_up_leader());
    let before = h.stats();
    h.propose(b"alone".to_vec()).unwrap();
    wait_until("applied", || applied_count(&obs) == 1);
    let after = h.stats();
    assert_eq!(after.write_txns - before.write_txns, 1);
    assert_eq!(after.syncs - before.syncs, 1);
    stop(h, j);
}

/// In-memory network for a multi-node group: messages go straight into the peer's queue.
#[derive(Clone, Default)]
struct Net {
    /// Handles by node id, registered once each node started.
    peers: Arc<Mutex<std::collections::HashMap<u64, RaftHandle>>>,
    /// Nodes cut off from everybody (both directions).
    isolated: Arc<Mutex<std::collections::HashSet<u64>>>,
    /// Message types dropped on their way to a node: (to, type).
    dropped: Arc<Mutex<std::collections::HashSet<(u64, ::raft::eraftpb::MessageType)>>>,
}

impl Transport for Net {
    fn send(&self, msgs: Vec<Message>) {
        let peers = self.peers.lock().unwrap();
        let isolated = self.isolated.lock().unwrap();
        let dropped = self.dropped.lock().unwrap();
        for m in msgs {
            if isolated.contains(&m.to)
                || isolated.contains(&m.from)
                || dropped.contains(&(m.to, m.get_msg_type()))
            {
                continue;
            }
            let (from, to) = (m.from, m.to);
            let snapshot = m.get_msg_type() == ::raft::eraftpb::MessageType::MsgSnapshot;
            if let Some(p) = peers.get(&to) {
                let _ = p.step(m);
                // As the peer network does once a snapshot was handed over: without a report
                // raft-rs never sends that peer anything again (a refused snapshot included).
                if snapshot {
                    if let Some(sender) = peers.get(&from) {
                        let _ = sender.report_snapshot(to, SnapshotStatus::Finish);
                    }
                }
            }
        }
    }
}

#[test]
fn three_nodes_replicate_with_async_persistence() {
    // Followers acknowledge appends (persisted messages) only once durable; the group must
    // still elect a leader, replicate and apply everywhere in the same order.
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let (sm, obs) = TestSm::new();
        let o = RaftOptions {
            node_id: id,
            voters: vec![1, 2, 3],
            ..opts(&tmp.path().join(format!("n{id}")), 1_000_000)
        };
        let (h, j) = RaftHandle::start_with_transport(o, sm, Box::new(net.clone())).unwrap();
        net.peers.lock().unwrap().insert(id, h.clone());
        nodes.push((h, j, obs));
    }
    wait_until("a leader", || {
        nodes.iter().any(|(h, _, _)| h.is_caught_up_leader())
    });
    let leader = nodes
        .iter()
        .position(|(h, _, _)| h.is_caught_up_leader())
        .unwrap();
    propose_n(&nodes[leader].0, "m", 300);
    for (_, _, obs) in &nodes {
        wait_until("replicated", || applied_count(obs) == 300);
    }
    let first = nodes[0].2.lock().unwrap().entries.clone();
    for (_, _, obs) in &nodes[1..] {
        assert_eq!(obs.lock().unwrap().entries, first);
    }
    net.peers.lock().unwrap().clear();
    for (h, j, _) in nodes {
        stop(h, j);
    }
}

#[test]
fn late_follower_catches_up_from_a_snapshot() {
    // A follower that joins after the log was compacted installs the leader's snapshot (file +
    // LMDB in one transaction, flushed before old files go) and then follows the log.
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let start = |id: u64| {
        let (sm, obs) = TestSm::new();
        let o = RaftOptions {
            node_id: id,
            voters: vec![1, 2, 3],
            ..opts(&tmp.path().join(format!("n{id}")), 40)
        };
        let (h, j) = RaftHandle::start_with_transport(o, sm, Box::new(net.clone())).unwrap();
        (h, j, obs)
    };
    let mut nodes = Vec::new();
    for id in 1..=2u64 {
        let n = start(id);
        net.peers.lock().unwrap().insert(id, n.0.clone());
        nodes.push(n);
    }
    wait_until("a leader", || {
        nodes.iter().any(|(h, _, _)| h.is_caught_up_leader())
    });
    let leader = nodes
        .iter()
        .position(|(h, _, _)| h.is_caught_up_leader())
        .unwrap();
    for wave in 0..4 {
        propose_n(&nodes[leader].0, &format!("w{wave}"), 40);
        wait_until("applied", || {
            applied_count(&nodes[leader].2) == 40 * (wave + 1)
        });
    }
    wait_until("two snapshots", || {
        nodes[leader].0.stats().snapshots_taken >= 2
    });
    {
        // Make sure the leader compacted its log, so node 3 cannot be fed entries from 1.
        wait_until("compaction", || {
            SnapshotDir::open(
                tmp.path()
                    .join(format!("n{}", leader + 1))
                    .join("snapshots"),
            )
            .unwrap()
            .list()
            .unwrap()
            .len()
                == 2
        });
    }
    let n3 = start(3);
    net.peers.lock().unwrap().insert(3, n3.0.clone());
    nodes.push(n3);
    propose_n(&nodes[leader].0, "after", 10);
    wait_until("node 3 caught up", || applied_count(&nodes[2].2) == 170);
    let expect = nodes[leader].2.lock().unwrap().entries.clone();
    {
        let o = nodes[2].2.lock().unwrap();
        assert!(
            o.restored_from.is_some(),
            "node 3 should have installed a snapshot"
        );
        assert_eq!(o.entries, expect);
    }
    net.peers.lock().unwrap().clear();
    for (h, j, _) in nodes {
        stop(h, j);
    }
}

#[test]
fn batches_are_bounded_in_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    // 1000-byte proposals and a 2000-byte batch bound: at most 2 per Ready, however many queue.
    let (h, j, obs, gate) = start_gated(RaftOptions {
        max_batch_bytes: 2000,
        ..opts(tmp.path(), 1_000_000)
    });
    h.propose(b"gate".to_vec()).unwrap();
    thread::sleep(Duration::from_millis(100));
    let before = h.stats();
    for i in 0..40u8 {
        h.propose(vec![i; 1000]).unwrap();
    }
    gate.open();
    wait_until("applied", || applied_count(&obs) == 41);
    let after = h.stats();
    let txns = after.write_txns - before.write_txns;
    // By count alone (max_batch 256) all 40 would share one transaction.
    assert!(
        txns >= 20,
        "{txns} write transactions for 40 proposals of 1000 bytes"
    );
    stop(h, j);
}

#[test]
fn proposals_beyond_the_uncommitted_byte_bound_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (h, j, obs, gate) = start_gated(RaftOptions {
        // raft-rs requires at least max_size_per_msg (1 MiB).
        max_uncommitted_bytes: 2_500_000,
        max_batch_bytes: 64 << 20,
        ..opts(tmp.path(), 1_000_000)
    });
    h.propose(b"gate".to_vec()).unwrap();
    thread::sleep(Duration::from_millis(100));
    // All 20 are drained in one turn (max_batch 256, 64 MiB), so raft-rs sees them before any
    // commits: it takes ~2.5 MB worth and refuses the rest.
    for i in 0..20u8 {
        h.propose(vec![i; 1_000_000]).unwrap();
    }
    gate.open();
    wait_until("all accounted for", || {
        let o = obs.lock().unwrap();
        o.entries.len().saturating_sub(1) + o.dropped.len() == 20
    });
    let o = obs.lock().unwrap().clone();
    let applied = o.entries.len() - 1;
    assert!((1..=3).contains(&applied), "{applied} applied");
    assert_eq!(o.dropped.len(), 20 - applied);
    drop(o);
    stop(h, j);
}

#[test]
fn a_panic_while_applying_is_fatal_and_published() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    wait_until("leadership", || h.is_leader());
    propose_applied(&h, &obs, "ok", 3, 3);
    assert!(h.fatal_reason().is_none());
    h.propose(b"panic".to_vec()).unwrap();
    wait_until("fatal", || h.fatal_reason().is_some());
    let reason = h.fatal_reason().unwrap();
    assert!(reason.contains("injected apply panic"), "{reason}");
    assert!(!h.is_leader());
    assert!(matches!(h.propose(b"x".to_vec()), Err(RaftError::Stopped)));
    // The async waiter the server selects on resolves with the same reason.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let waited =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), h.fatal_error()).await });
    assert_eq!(waited.unwrap(), reason);
    // The thread ended (caught the panic) instead of unwinding out of join.
    j.join().unwrap();
}

#[test]
fn an_entry_the_state_machine_cannot_apply_is_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    wait_until("leadership", || h.is_leader());
    propose_applied(&h, &obs, "ok", 3, 3);
    h.propose(b"fatal".to_vec()).unwrap();
    h.propose(b"after".to_vec()).unwrap();
    wait_until("fatal", || h.fatal_reason().is_some());
    let reason = h.fatal_reason().unwrap();
    assert!(reason.contains("fatal apply error"), "{reason}");
    assert!(reason.contains("injected unappliable entry"), "{reason}");
    // Nothing after the unappliable entry was applied.
    assert!(obs
        .lock()
        .unwrap()
        .entries
        .iter()
        .all(|(_, d)| d != b"after"));
    j.join().unwrap();
}

#[test]
fn storage_full_errors_are_retryable_and_others_are_not() {
    let enospc = || std::io::Error::from_raw_os_error(libc::ENOSPC);
    let full = RaftError::Log(LogError::Lmdb(heed::Error::Io(enospc())));
    assert!(full.is_storage_full());
    let map_full = RaftError::Log(LogError::Lmdb(heed::Error::Mdb(heed::MdbError::MapFull)));
    assert!(map_full.is_storage_full());
    let eio = RaftError::Log(LogError::Lmdb(heed::Error::Io(
        std::io::Error::from_raw_os_error(libc::EIO),
    )));
    assert!(!eio.is_storage_full());
    // A failed fsync is fatal even when it says ENOSPC: the dirty pages may be gone.
    let sync = RaftError::Log(LogError::Sync(heed::Error::Io(enospc())));
    assert!(!sync.is_storage_full());
    let snap = RaftError::Snapshot(SnapshotError::Io {
        path: "x".into(),
        source: enospc(),
    });
    assert!(snap.is_storage_full());
}

#[test]
fn the_lmdb_env_does_not_use_writemap_and_dirs_are_created_durably() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/raft");
    let store = LmdbStorage::open(&dir, None).unwrap();
    assert!(!store.uses_write_map().unwrap());
    assert!(dir.join("data.mdb").is_file());
}

#[test]
fn the_proposal_queue_is_bounded_in_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (h, j, obs, gate) = start_gated(RaftOptions {
        max_queued_bytes: 10_000,
        ..opts(tmp.path(), 1_000_000)
    });
    h.propose(b"gate".to_vec()).unwrap();
    thread::sleep(Duration::from_millis(100));
    // The raft thread is parked: the queue fills to 10 proposals of 1000 bytes, then refuses.
    let mut accepted = 0;
    for i in 0..20u8 {
        match h.propose(vec![i; 1000]) {
            Ok(()) => accepted += 1,
            Err(RaftError::Overloaded) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(accepted, 10);
    gate.open();
    wait_until("applied", || applied_count(&obs) == 11);
    // Drained: proposals are taken again.
    wait_until("queue drained", || h.propose(b"again".to_vec()).is_ok());
    wait_until("applied", || applied_count(&obs) == 12);
    stop(h, j);
}

/// One member of an in-memory test group.
struct Member {
    id: u64,
    h: RaftHandle,
    j: thread::JoinHandle<()>,
    obs: Arc<Mutex<Observed>>,
}

/// Starts node `id` of a group with these voters and learners on `net` (10 ms ticks, an
/// election timeout of 10 ticks).
fn start_member(net: &Net, root: &Path, id: u64, voters: &[u64], learners: &[u64]) -> Member {
    let catch_up = GroupOptions::default().catch_up_timeout;
    start_member_with(net, root, id, voters, learners, None, catch_up)
}

/// [`start_member`] whose state machine parks at a joint conf change with `joint_gate`, and
/// whose joiners get `catch_up_timeout` to catch up.
fn start_member_with(
    net: &Net,
    root: &Path,
    id: u64,
    voters: &[u64],
    learners: &[u64],
    joint_gate: Option<Arc<Gate>>,
    catch_up_timeout: Duration,
) -> Member {
    let (mut sm, obs) = TestSm::new();
    sm.joint_gate = joint_gate;
    let o = RaftOptions {
        node_id: id,
        voters: voters.to_vec(),
        ..opts(&root.join(format!("n{id}")), 1_000_000)
    };
    let group = GroupOptions {
        learners: learners.to_vec(),
        catch_up_timeout,
        ..GroupOptions::default()
    };
    let (h, j) = RaftHandle::start_group(o, group, sm, Box::new(net.clone())).unwrap();
    net.peers.lock().unwrap().insert(id, h.clone());
    Member { id, h, j, obs }
}

fn start_members(net: &Net, root: &Path, voters: &[u64], learners: &[u64]) -> Vec<Member> {
    voters
        .iter()
        .chain(learners)
        .map(|id| start_member(net, root, *id, voters, learners))
        .collect()
}

fn leader_of(ms: &[Member]) -> Option<usize> {
    ms.iter().position(|m| m.h.is_caught_up_leader())
}

fn stop_members(net: &Net, ms: Vec<Member>) {
    net.peers.lock().unwrap().clear();
    for m in ms {
        stop(m.h, m.j);
    }
}

#[test]
fn leader_kill_fires_on_leader_change_on_the_survivors() {
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let mut ms = start_members(&net, tmp.path(), &[1, 2, 3], &[]);
    wait_until("a leader", || leader_of(&ms).is_some());
    let l = leader_of(&ms).unwrap();
    let (old_id, old_term) = (ms[l].id, ms[l].h.term());
    propose_n(&ms[l].h, "a", 20);
    for m in &ms {
        wait_until("replicated", || applied_count(&m.obs) == 20);
        // Every node, follower or not, was told who leads.
        wait_until("leader reported", || {
            m.obs.lock().unwrap().leaders.last() == Some(&(old_id, old_term))
        });
        assert_eq!(m.h.leader_id(), old_id);
    }
    // Followers never flipped role, yet learned the leader: that is on_leader_change's job.
    for m in ms.iter().filter(|m| m.id != old_id) {
        assert!(m.obs.lock().unwrap().roles.is_empty());
        assert_eq!(m.h.role(), NodeRole::Follower);
    }
    assert_eq!(ms[l].h.role(), NodeRole::Leader);

    let old = ms.remove(l);
    net.peers.lock().unwrap().remove(&old.id);
    stop(old.h, old.j);
    wait_until("a new leader", || leader_of(&ms).is_some());
    let n = leader_of(&ms).unwrap();
    let (new_id, new_term) = (ms[n].id, ms[n].h.term());
    assert_ne!(new_id, old_id);
    assert!(new_term > old_term);
    for m in &ms {
        wait_until("new leader reported", || {
            m.obs.lock().unwrap().leaders.last() == Some(&(new_id, new_term))
        });
        let o = m.obs.lock().unwrap();
        let at = o
            .leaders
            .iter()
            .position(|l| *l == (old_id, old_term))
            .unwrap();
        // Reported in order, never going back to the old leader.
        // (A pre-candidate forgets the leader without a new term: (0, old_term).)
        assert!(o.leaders[at + 1..]
            .iter()
            .all(|(id, t)| *id != old_id && (*t > old_term || *id == 0)));
    }
    assert_eq!(ms[n].obs.lock().unwrap().roles.last(), Some(&true));
    // Only leaders catch up, once per term.
    {
        let o = ms[n].obs.lock().unwrap();
        assert_eq!(o.caught_up.last(), Some(&new_term));
        assert_eq!(o.caught_up.iter().filter(|t| **t == new_term).count(), 1);
    }
    for m in ms.iter().filter(|m| m.id != new_id) {
        let o = m.obs.lock().unwrap();
        assert!(!o.caught_up.contains(&new_term) && !o.caught_up.contains(&old_term));
    }
    // The group still works.
    propose_n(&ms[n].h, "b", 5);
    for m in &ms {
        wait_until("replicated after failover", || applied_count(&m.obs) == 25);
    }
    stop_members(&net, ms);
}

#[test]
fn a_follower_applying_under_load_stays_fresh() {
    // A follower always lags the newest commit index it heard of by the entries it is about
    // to apply; that must not count as "not fresh" (the server would refuse handshakes and,
    // past an election timeout, close every client while the leader is alive and well).
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let ms = start_members(&net, tmp.path(), &[1, 2, 3], &[]);
    wait_until("a leader", || leader_of(&ms).is_some());
    let l = leader_of(&ms).unwrap();
    propose_n(&ms[l].h, "warm", 5);
    for m in &ms {
        wait_until("fresh", || applied_count(&m.obs) == 5 && m.h.is_fresh());
    }
    let f = (l + 1) % 3;
    let (mut samples, mut unfresh) = (0u32, 0u32);
    for round in 0..40 {
        propose_n(&ms[l].h, &format!("load{round}"), 50);
        let until = Instant::now() + Duration::from_millis(10);
        while Instant::now() < until {
            samples += 1;
            if !ms[f].h.is_fresh() {
                unfresh += 1;
            }
        }
    }
    wait_until("all applied", || applied_count(&ms[f].obs) == 5 + 40 * 50);
    assert!(samples > 100, "{samples} samples");
    assert_eq!(
        unfresh, 0,
        "follower not fresh in {unfresh} of {samples} samples under load"
    );
}

#[test]
fn a_partitioned_follower_is_not_fresh_until_it_caught_up_again() {
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let ms = start_members(&net, tmp.path(), &[1, 2, 3], &[]);
    wait_until("a leader", || leader_of(&ms).is_some());
    let l = leader_of(&ms).unwrap();
    propose_n(&ms[l].h, "a", 10);
    for m in &ms {
        wait_until("fresh", || applied_count(&m.obs) == 10 && m.h.is_fresh());
        assert!(m.h.since_leader_contact().unwrap() <= m.h.election_timeout());
        assert!(m.h.commit_index() >= 10);
    }
    let f = (l + 1) % 3;
    let other = (l + 2) % 3;
    let cut = Instant::now();
    net.isolated.lock().unwrap().insert(ms[f].id);
    wait_until("follower not fresh", || !ms[f].h.is_fresh());
    // Not before an election timeout of silence (with slack for a tick and a heartbeat).
    assert!(cut.elapsed() + Duration::from_millis(30) >= ms[f].h.election_timeout());
    // The majority side keeps serving and writing.
    propose_n(&ms[l].h, "b", 50);
    wait_until("majority applied", || applied_count(&ms[other].obs) == 60);
    wait_until("majority fresh", || {
        ms[l].h.is_fresh() && ms[other].h.is_fresh()
    });
    // Still not fresh after several election timeouts (a learner-like follower that keeps
    // its leader id would be caught here too).
    thread::sleep(ms[f].h.election_timeout() * 3);
    assert!(!ms[f].h.is_fresh());
    assert!(ms[f].h.since_leader_contact().unwrap() > ms[f].h.election_timeout());
    assert_eq!(applied_count(&ms[f].obs), 10);

    let committed = ms[l].h.commit_index();
    // Heal, but keep the appends from reaching the follower for a while: it hears the
    // leader's heartbeats again (whose commit index is capped at what the follower already
    // has), yet is behind, so it must not count as fresh.
    net.dropped
        .lock()
        .unwrap()
        .insert((ms[f].id, ::raft::eraftpb::MessageType::MsgAppend));
    net.isolated.lock().unwrap().clear();
    wait_until("leader contact", || {
        ms[f].h.leader_id() != 0
            && ms[f]
                .h
                .since_leader_contact()
                .is_some_and(|d| d < ms[f].h.election_timeout() / 2)
    });
    thread::sleep(ms[f].h.election_timeout() * 3);
    assert!(ms[f].h.since_leader_contact().unwrap() < ms[f].h.election_timeout());
    assert!(
        !ms[f].h.is_fresh(),
        "fresh while behind the leader's commit index"
    );
    assert_eq!(applied_count(&ms[f].obs), 10);
    net.dropped.lock().unwrap().clear();
    wait_until("follower fresh again", || ms[f].h.is_fresh());
    // Fresh means caught up with what the leader had committed, not merely "heard a
    // heartbeat" (whose commit index is capped at what the follower already has).
    assert!(
        ms[f].h.applied_index() >= committed,
        "fresh at {} while the leader had committed {committed}",
        ms[f].h.applied_index()
    );
    assert_eq!(applied_count(&ms[f].obs), 60);
    stop_members(&net, ms);
}

#[test]
fn a_learner_applies_reports_its_role_and_never_votes() {
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let mut ms = start_members(&net, tmp.path(), &[1, 2], &[3]);
    wait_until("a leader", || leader_of(&ms).is_some());
    let l = leader_of(&ms).unwrap();
    assert_ne!(ms[l].id, 3, "a learner never leads");
    propose_n(&ms[l].h, "a", 30);
    for m in &ms {
        wait_until("replicated", || applied_count(&m.obs) == 30);
    }
    assert_eq!(ms[2].h.role(), NodeRole::Learner);
    wait_until("learner fresh", || ms[2].h.is_fresh());
    assert_eq!(
        ms[2].obs.lock().unwrap().entries,
        ms[l].obs.lock().unwrap().entries
    );

    // Stop the other voter: one voter plus a learner is no quorum (the learner's vote would
    // make two of three). The leader steps down (check_quorum), nobody leads, nothing commits.
    let v = 1 - l;
    let survivor = ms[l].id;
    let gone = ms.remove(v);
    net.peers.lock().unwrap().remove(&gone.id);
    let gone_id = gone.id;
    stop(gone.h, gone.j);
    let l = ms.iter().position(|m| m.id == survivor).unwrap();
    wait_until("leader steps down", || !ms[l].h.is_leader());
    let _ = ms[l].h.propose(b"lost".to_vec());
    thread::sleep(ms[l].h.election_timeout() * 10);
    assert!(ms.iter().all(|m| !m.h.is_leader()));
    assert!(ms.iter().all(|m| applied_count(&m.obs) == 30));
    wait_until("learner not fresh", || !ms[1].h.is_fresh());
    assert_eq!(ms[1].h.role(), NodeRole::Learner);

    // The second voter returns: the group leads and commits again, the learner follows.
    let back = start_member(&net, tmp.path(), gone_id, &[1, 2], &[3]);
    ms.push(back);
    wait_until("a leader again", || leader_of(&ms).is_some());
    let l = leader_of(&ms).unwrap();
    assert_ne!(ms[l].id, 3);
    propose_n(&ms[l].h, "b", 5);
    let learner = ms.iter().find(|m| m.id == 3).unwrap();
    wait_until("learner applied", || has_applied(learner, b"b-4"));
    stop_members(&net, ms);
}

#[test]
fn sync_on_a_follower_waits_until_it_applied_everything_committed_before() {
    use ::raft::eraftpb::MessageType;
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let ms = start_members(&net, tmp.path(), &[1, 2, 3], &[]);
    wait_until("a leader", || leader_of(&ms).is_some());
    let l = leader_of(&ms).unwrap();
    let f = (l + 1) % 3;
    propose_n(&ms[l].h, "a", 5);
    for m in &ms {
        wait_until("replicated", || applied_count(&m.obs) == 5);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let barrier = ms[f].h.read_barrier();
    let index = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), barrier.sync()).await })
        .unwrap()
        .unwrap();
    assert!(index >= ms[f].obs.lock().unwrap().entries.last().unwrap().0);

    // The follower stops receiving appends (heartbeats, read index traffic still flow), so
    // it falls behind what the majority commits.
    net.dropped
        .lock()
        .unwrap()
        .insert((ms[f].id, MessageType::MsgAppend));
    propose_n(&ms[l].h, "b", 20);
    let other = (l + 2) % 3;
    wait_until("majority applied", || applied_count(&ms[other].obs) == 25);
    let committed = ms[l].h.commit_index();
    assert_eq!(applied_count(&ms[f].obs), 5);

    // Several syncs at once share the barrier; none may return while the follower lags.
    let rxs: Vec<_> = (0..5).map(|_| barrier.wait().unwrap()).collect();
    thread::sleep(READ_RESEND * 2);
    assert_eq!(barrier.pending(), 5);
    let mut rxs: Vec<_> = rxs
        .into_iter()
        .map(|mut rx| {
            assert!(
                rx.try_recv().is_err(),
                "sync returned while the follower lags"
            );
            rx
        })
        .collect();

    net.dropped.lock().unwrap().clear();
    let applied_at_return: Vec<(u64, usize)> = rt.block_on(async {
        let mut out = Vec::new();
        for rx in rxs.drain(..) {
            let index = tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .unwrap()
                .unwrap();
            out.push((index, applied_count(&ms[f].obs)));
        }
        out
    });
    for (index, applied) in applied_at_return {
        assert!(
            index >= committed,
            "read index {index} < commit {committed}"
        );
        assert_eq!(
            applied, 25,
            "sync returned before the follower applied everything"
        );
    }
    assert!(ms[f].h.applied_index() >= committed);
    assert_eq!(barrier.pending(), 0);

    // With no leader reachable, a sync does not return (callers time out), and it completes
    // once the leader is back: the barrier resends by itself.
    net.isolated.lock().unwrap().insert(ms[f].id);
    let rx = barrier.wait().unwrap();
    let timed_out =
        rt.block_on(async { tokio::time::timeout(READ_RESEND * 3, barrier.sync()).await });
    assert!(timed_out.is_err());
    net.isolated.lock().unwrap().clear();
    let index = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), rx).await })
        .unwrap()
        .unwrap();
    assert!(index >= committed);
    stop_members(&net, ms);
    // After shutdown a sync fails at once instead of hanging.
    assert!(matches!(
        rt.block_on(barrier.sync()),
        Err(RaftError::Stopped)
    ));
}

#[test]
fn read_barrier_on_a_standalone_leader() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    wait_until("leadership", || h.is_caught_up_leader());
    assert!(h.is_fresh());
    assert_eq!(h.role(), NodeRole::Leader);
    propose_applied(&h, &obs, "x", 10, 10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let index = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(10), h.read_barrier().sync()).await
        })
        .unwrap()
        .unwrap();
    assert!(index >= obs.lock().unwrap().entries.last().unwrap().0);
    // Barrier contexts never reach the state machine.
    assert!(obs.lock().unwrap().reads.is_empty());
    assert_eq!(obs.lock().unwrap().leaders.len(), 1);
    assert_eq!(obs.lock().unwrap().caught_up, vec![h.term()]);
    stop(h, j);
}

#[test]
fn group_options_are_validated_and_a_joiner_starts_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let start = |voters: Vec<u64>, group: GroupOptions, dir: &str| {
        let (sm, _) = TestSm::new();
        let o = RaftOptions {
            node_id: 4,
            voters,
            ..opts(&tmp.path().join(dir), 10)
        };
        RaftHandle::start_group(o, group, sm, Box::new(NoopTransport))
    };
    let bad = [
        (
            vec![1, 2],
            GroupOptions {
                learners: vec![2],
                ..GroupOptions::default()
            },
        ),
        (
            vec![],
            GroupOptions {
                learners: vec![4],
                ..GroupOptions::default()
            },
        ),
        (vec![1, 2, 3], GroupOptions::default()),
        (
            vec![4],
            GroupOptions {
                heartbeat_tick: 10,
                ..GroupOptions::default()
            },
        ),
        (
            vec![4],
            GroupOptions {
                heartbeat_tick: 0,
                ..GroupOptions::default()
            },
        ),
    ];
    for (i, (voters, group)) in bad.into_iter().enumerate() {
        assert!(
            matches!(
                start(voters, group, &format!("bad{i}")),
                Err(RaftError::InvalidOptions(_))
            ),
            "case {i} accepted"
        );
    }
    // A joiner (no voters, no learners) starts, never campaigns, and is not fresh.
    let (h, j) = start(vec![], GroupOptions::default(), "joiner").unwrap();
    thread::sleep(Duration::from_millis(300));
    assert!(!h.is_leader() && h.leader_id() == 0 && !h.is_fresh());
    assert_eq!(h.role(), NodeRole::Follower);
    stop(h, j);
    // Custom timing is accepted.
    let (h, j) = start(
        vec![4],
        GroupOptions {
            election_tick: 20,
            heartbeat_tick: 3,
            learners: vec![5],
            ..GroupOptions::default()
        },
        "timing",
    )
    .unwrap();
    assert_eq!(h.election_timeout(), Duration::from_millis(200));
    stop(h, j);
}

#[test]
fn a_sync_lost_with_a_dead_leader_completes_under_the_next_one() {
    // The follower forwards its ReadIndex to a leader that just died: raft-rs drops it
    // without a word. The barrier must resend (on the leader change and every 500 ms) so the
    // sync completes under the new leader instead of hanging.
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let mut ms = start_members(&net, tmp.path(), &[1, 2, 3], &[]);
    wait_until("a leader", || leader_of(&ms).is_some());
    let l = leader_of(&ms).unwrap();
    propose_n(&ms[l].h, "a", 10);
    for m in &ms {
        wait_until("replicated", || applied_count(&m.obs) == 10);
    }
    let committed = ms[l].h.commit_index();
    let old = ms.remove(l);
    net.peers.lock().unwrap().remove(&old.id);
    stop(old.h, old.j);
    // It still believes in the dead leader (an election takes an election timeout at
    // least): the request goes nowhere.
    let barrier = ms[0].h.read_barrier();
    let rx = barrier.wait().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let index = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(15), rx).await })
        .expect("sync hung after the leader died")
        .unwrap();
    assert!(index >= committed);
    assert!(leader_of(&ms).is_some_and(|n| ms[n].id != old.id));
    stop_members(&net, ms);
}

/// Like [`start_members`], but with an election timeout of `election_tick` 10 ms ticks.
fn start_slow_electing(
    net: &Net,
    root: &Path,
    voters: &[u64],
    election_tick: usize,
) -> Vec<Member> {
    voters
        .iter()
        .map(|id| {
            let (sm, obs) = TestSm::new();
            let o = RaftOptions {
                node_id: *id,
                voters: voters.to_vec(),
                ..opts(&root.join(format!("n{id}")), 1_000_000)
            };
            let group = GroupOptions {
                election_tick,
                ..GroupOptions::default()
            };
            let (h, j) = RaftHandle::start_group(o, group, sm, Box::new(net.clone())).unwrap();
            net.peers.lock().unwrap().insert(*id, h.clone());
            Member { id: *id, h, j, obs }
        })
        .collect()
}

/// Makes `m` campaign now (what a leader transfer's MsgTimeoutNow does).
fn campaign_now(m: &Member) {
    let mut msg = Message::default();
    msg.set_msg_type(::raft::eraftpb::MessageType::MsgTimeoutNow);
    msg.to = m.id;
    m.h.step(msg).unwrap();
}

#[test]
fn a_closed_leader_connection_brings_the_election_forward() {
    // Election timeout 3-6 s: without the early campaign no new leader could appear within
    // the 1.5 s allowed below.
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let mut ms = start_slow_electing(&net, tmp.path(), &[1, 2, 3], 300);
    campaign_now(&ms[0]);
    wait_until("a leader", || leader_of(&ms).is_some());
    let l = leader_of(&ms).unwrap();
    let (old_id, old_term) = (ms[l].id, ms[l].h.term());
    propose_n(&ms[l].h, "a", 5);
    for m in &ms {
        wait_until("replicated", || applied_count(&m.obs) == 5);
    }

    // A live leader: a closed connection alone changes nothing (its heartbeats keep coming,
    // and the other follower still holds the lease).
    let f = (l + 1) % 3;
    ms[f].h.peer_connection_closed(old_id).unwrap();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(ms[l].h.role(), NodeRole::Leader);
    for m in &ms {
        assert_eq!((m.h.leader_id(), m.h.term()), (old_id, old_term));
    }
    // Nor does the close of a connection from a peer that does not lead.
    let other = ms[(l + 2) % 3].id;
    ms[f].h.peer_connection_closed(other).unwrap();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(ms[f].h.term(), old_term);

    // The leader dies; its kernel closes its connections and both followers hear of it.
    let old = ms.remove(l);
    net.peers.lock().unwrap().remove(&old.id);
    stop(old.h, old.j);
    let killed = Instant::now();
    for m in &ms {
        m.h.peer_connection_closed(old_id).unwrap();
    }
    while leader_of(&ms).is_none() {
        assert!(
            killed.elapsed() < Duration::from_millis(1500),
            "no new leader 1.5 s after the old one's connections closed"
        );
        thread::sleep(Duration::from_millis(5));
    }
    let n = leader_of(&ms).unwrap();
    // Staggered by rank: the lower id among the survivors goes first and, with an equal
    // log, wins in the first round (no split vote, so exactly one term more).
    assert_eq!(ms[n].id, *ms.iter().map(|m| &m.id).min().unwrap());
    assert_eq!(ms[n].h.term(), old_term + 1);
    propose_n(&ms[n].h, "b", 3);
    for m in &ms {
        wait_until("replicated after failover", || applied_count(&m.obs) == 8);
    }
    stop_members(&net, ms);
}

#[test]
fn members_apply_what_the_group_committed_before_their_own_flush() {
    // Under load a member often learns that entries are committed while its own copy is
    // written but not yet durable; it applies them then (as a ZooKeeper follower applies a
    // COMMIT), not a flush later. Every member still applies the same entries exactly once,
    // in the same order, and snapshots taken meanwhile (every 150 entries) stay consistent
    // with the log: a restart reproduces the same sequence.
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let mut ms: Vec<Member> = [1u64, 2, 3]
        .iter()
        .map(|id| {
            let (sm, obs) = TestSm::new();
            let o = RaftOptions {
                node_id: *id,
                voters: vec![1, 2, 3],
                ..opts(&tmp.path().join(format!("n{id}")), 150)
            };
            let (h, j) =
                RaftHandle::start_group(o, GroupOptions::default(), sm, Box::new(net.clone()))
                    .unwrap();
            net.peers.lock().unwrap().insert(*id, h.clone());
            Member { id: *id, h, j, obs }
        })
        .collect();
    wait_until("a leader", || leader_of(&ms).is_some());
    let l = leader_of(&ms).unwrap();
    let mut total = 0;
    // Bounded: 30 bursts of 200 at most; one or two normally suffice.
    for burst in 0..30 {
        propose_n(&ms[l].h, &format!("b{burst}-"), 200);
        total += 200;
        for m in &ms {
            wait_until("replicated", || applied_count(&m.obs) == total);
        }
        if ms.iter().map(|m| m.h.stats().applied_ahead).sum::<u64>() > 0 && burst >= 1 {
            break;
        }
    }
    let ahead: Vec<u64> = ms.iter().map(|m| m.h.stats().applied_ahead).collect();
    assert!(
        ahead.iter().sum::<u64>() > 0,
        "no member ever applied ahead of its own flush in {total} entries: {ahead:?}"
    );
    let first = ms[0].obs.lock().unwrap().entries.clone();
    assert_eq!(first.len(), total);
    for m in &ms[1..] {
        assert_eq!(m.obs.lock().unwrap().entries, first);
    }
    // The member that applied ahead the most restarts and replays the same history.
    let most = (0..3).max_by_key(|i| ahead[*i]).unwrap();
    let m = ms.remove(most);
    net.peers.lock().unwrap().remove(&m.id);
    stop(m.h, m.j);
    let (sm, obs) = TestSm::new();
    let o = RaftOptions {
        node_id: m.id,
        voters: vec![1, 2, 3],
        ..opts(&tmp.path().join(format!("n{}", m.id)), 150)
    };
    let (h, j) =
        RaftHandle::start_group(o, GroupOptions::default(), sm, Box::new(net.clone())).unwrap();
    net.peers.lock().unwrap().insert(m.id, h.clone());
    let restored = obs.lock().unwrap().restored_from;
    wait_until("replayed after restart", || applied_count(&obs) == total);
    let again = obs.lock().unwrap().entries.clone();
    assert_eq!(again, first, "restart from snapshot {restored:?} + log");
    ms.push(Member {
        id: m.id,
        h,
        j,
        obs,
    });
    stop_members(&net, ms);
}

#[test]
fn leader_only_proposals_of_an_earlier_term_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (sm, obs) = TestSm::new();
    let (h, j) = RaftHandle::start(opts(tmp.path(), 1_000_000), sm).unwrap();
    wait_until("leadership", || h.is_caught_up_leader());
    let term = h.term();
    h.propose_as_leader(term, b"now".to_vec()).unwrap();
    wait_until("applied", || applied_count(&obs) == 1);
    // Decided under another leadership (an older term, or one this node never led): never
    // proposed, so never applied, and the queue's byte count is given back.
    h.propose_as_leader(term.saturating_sub(1), b"stale".to_vec())
        .unwrap();
    h.propose_as_leader(term + 1, b"future".to_vec()).unwrap();
    propose_n(&h, "after", 2);
    wait_until("applied", || applied_count(&obs) == 3);
    let datas = applied_data(&obs);
    assert_eq!(datas[0], b"now");
    assert!(!datas.contains(&b"stale".to_vec()) && !datas.contains(&b"future".to_vec()));
    assert_eq!(
        h.shared
            .queued_bytes
            .load(std::sync::atomic::Ordering::Acquire),
        0
    );
    stop(h, j);
}

/// Whether member `m` applied an entry with this data.
fn has_applied(m: &Member, data: &[u8]) -> bool {
    m.obs.lock().unwrap().entries.iter().any(|(_, d)| d == data)
}

/// Voters 1, 2, 3 on a fresh in-memory net, once one leads: (dir, net, members, leader).
fn group_of_three() -> (tempfile::TempDir, Net, Vec<Member>, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let ms = start_members(&net, tmp.path(), &[1, 2, 3], &[]);
    wait_until("a leader", || leader_of(&ms).is_some());
    let l = leader_of(&ms).unwrap();
    (tmp, net, ms, l)
}

/// The membership a member last applied: (voters, outgoing).
fn last_membership(m: &Member) -> Option<(Vec<u64>, Vec<u64>)> {
    m.obs
        .lock()
        .unwrap()
        .memberships
        .last()
        .map(|(_, _, v, o)| {
            // raft-rs lists ids in hash order.
            let (mut v, mut o) = (v.clone(), o.clone());
            v.sort_unstable();
            o.sort_unstable();
            (v, o)
        })
}

#[test]
fn a_membership_change_enters_and_leaves_joint_and_one_at_a_time() {
    let (_tmp, net, ms, l) = group_of_three();
    let keep: Vec<u64> = ms
        .iter()
        .map(|m| m.id)
        .filter(|id| *id != ms[(l + 1) % 3].id)
        .collect();
    let change = format!("member:{},{}", keep[0], keep[1]);
    // Two changes back to back: the second finds the first pending and is refused.
    ms[l].h.propose(change.clone().into_bytes()).unwrap();
    ms[l].h.propose(b"member:1,2,3".to_vec()).unwrap();
    for m in ms.iter().filter(|m| keep.contains(&m.id)) {
        wait_until("joint left", || {
            last_membership(m) == Some((keep.clone(), vec![]))
        });
        let o = m.obs.lock().unwrap();
        // Entered joint with the context, then left it with an empty one.
        let joint = o
            .memberships
            .iter()
            .find(|(_, c, _, _)| !c.is_empty())
            .unwrap();
        assert_eq!(joint.1, change.as_bytes());
        let mut voters = joint.2.clone();
        voters.sort_unstable();
        assert_eq!(voters, keep);
        assert_eq!(joint.3.len(), 3);
    }
    assert_eq!(
        ms[l].obs.lock().unwrap().refusals,
        vec![(b"member:1,2,3".to_vec(), MembershipRefusal::InProgress)]
    );
    stop_members(&net, ms);
}

#[test]
fn a_joint_config_left_behind_by_a_dead_leader_is_left_by_the_next() {
    // Five voters, so that the survivors of a dead leader that removed a follower still hold
    // a majority of both halves of the joint configuration.
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let gate = Arc::new(Gate::default());
    let ids = [1, 2, 3, 4, 5];
    let ms: Vec<Member> = ids
        .iter()
        .map(|id| {
            let catch_up = GroupOptions::default().catch_up_timeout;
            start_member_with(
                &net,
                tmp.path(),
                *id,
                &ids,
                &[],
                Some(gate.clone()),
                catch_up,
            )
        })
        .collect();
    wait_until("a leader", || leader_of(&ms).is_some());
    let l = leader_of(&ms).unwrap();
    let old = ms[l].id;
    let removed = ms.iter().map(|m| m.id).find(|id| *id != old).unwrap();
    let keep: Vec<u64> = ids.iter().copied().filter(|id| *id != removed).collect();
    let list: Vec<String> = keep.iter().map(u64::to_string).collect();
    // The leader removes a follower; it parks (dies) as soon as it applied the joint config,
    // before raft-rs could append the entry that leaves it.
    ms[l]
        .h
        .propose(format!("member:{}", list.join(",")).into_bytes())
        .unwrap();
    wait_until("the leader entered joint", || {
        last_membership(&ms[l]).is_some_and(|(_, out)| !out.is_empty())
    });
    net.isolated.lock().unwrap().insert(old);
    // While joint, the members include the outgoing voter (the address book keeps it).
    assert_eq!(ms[l].h.members(), ids.to_vec());
    // The others also park on the joint entry when they apply it: let them through.
    gate.open();
    let survivors: Vec<&Member> = ms.iter().filter(|m| m.id != old).collect();
    wait_until("a new leader", || {
        survivors.iter().any(|m| m.h.is_caught_up_leader())
    });
    for m in survivors.iter().filter(|m| m.id != removed) {
        wait_until("joint left by the new leader", || {
            last_membership(m) == Some((keep.clone(), vec![]))
        });
    }
    // Still available, without the removed follower.
    let staying: Vec<&Member> = survivors.into_iter().filter(|m| m.id != removed).collect();
    for m in &staying {
        assert_eq!(m.h.members(), keep, "member {}", m.id);
    }
    commits_among(&staying, "after the failover");
    stop_members(&net, ms);
}

/// Waits for a caught-up leader among `ms`, has it commit three entries and waits until every
/// one of `ms` applied them.
fn commits_among(ms: &[&Member], what: &str) {
    wait_until("a leader among them", || {
        ms.iter().any(|m| m.h.is_caught_up_leader())
    });
    let n = ms.iter().find(|m| m.h.is_caught_up_leader()).unwrap();
    let prefix = what.replace(' ', "-");
    propose_n(&n.h, &prefix, 3);
    let last = format!("{prefix}-2").into_bytes();
    for m in ms {
        wait_until(what, || has_applied(m, &last));
    }
}

/// The leader of `term` as `m` saw it (from `on_leader_change`).
fn leader_in(m: &Member, term: u64) -> Option<u64> {
    let o = m.obs.lock().unwrap();
    o.leaders
        .iter()
        .rev()
        .find(|(id, t)| *t == term && *id != 0)
        .map(|(id, _)| *id)
}

#[test]
fn a_leader_removing_itself_hands_over_before_the_joint_change() {
    let (_tmp, net, ms, l) = group_of_three();
    let old = ms[l].id;
    let keep: Vec<u64> = ms.iter().map(|m| m.id).filter(|id| *id != old).collect();
    let change = format!("member:{},{}", keep[0], keep[1]).into_bytes();
    ms[l].h.propose(change.clone()).unwrap();
    let survivors: Vec<&Member> = ms.iter().filter(|m| m.id != old).collect();
    for m in &survivors {
        wait_until("the new membership", || {
            last_membership(m) == Some((keep.clone(), vec![]))
        });
    }
    for m in &survivors {
        let (request_term, joint_term) = {
            let o = m.obs.lock().unwrap();
            let request = o
                .request_terms
                .iter()
                .find(|(d, _)| *d == change)
                .unwrap()
                .1;
            let joint = o.joint_terms.iter().find(|(c, _)| *c == change).unwrap().1;
            (request, joint)
        };
        // The joint change was proposed in a later term, by a leader that stays.
        assert!(
            joint_term > request_term,
            "joint in term {joint_term}, request in {request_term}"
        );
        let proposer = leader_in(m, joint_term).expect("a known leader of the joint term");
        assert_ne!(proposer, old, "the removed leader led the joint change");
        assert!(keep.contains(&proposer));
    }
    // The removed leader was not the one to refuse or abandon anything, and the rest goes on.
    assert!(ms[l].obs.lock().unwrap().refusals.is_empty());
    commits_among(&survivors, "after the change");
    stop_members(&net, ms);
}

#[test]
fn a_change_an_earlier_leader_accepted_is_carried_on_by_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let net = Net::default();
    let catch_up = Duration::from_secs(3);
    let ms: Vec<Member> = [1, 2, 3]
        .iter()
        .map(|id| start_member_with(&net, tmp.path(), *id, &[1, 2, 3], &[], None, catch_up))
        .collect();
    wait_until("a leader", || leader_of(&ms).is_some());
    let l = leader_of(&ms).unwrap();
    let old = ms[l].id;
    // Server 4 never starts: the change waits for it to catch up, and the leader dies first.
    let change = b"member:1,2,3,4".to_vec();
    ms[l].h.propose(change.clone()).unwrap();
    let survivors: Vec<&Member> = ms.iter().filter(|m| m.id != old).collect();
    for m in &survivors {
        wait_until("the request applied", || has_applied(m, &change));
    }
    net.isolated.lock().unwrap().insert(old);
    wait_until("a new leader", || {
        survivors.iter().any(|m| m.h.is_caught_up_leader())
    });
    // The next leader takes the change over, waits for server 4 in vain, and refuses it:
    // the origin gets an answer instead of nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let refused = survivors.iter().any(|m| {
            m.obs
                .lock()
                .unwrap()
                .refusals
                .contains(&(change.clone(), MembershipRefusal::NoQuorum))
        });
        if refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no later leader settled the change"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Nothing joint, nothing pending: the survivors still commit.
    commits_among(&survivors, "after the refusal");
    stop_members(&net, ms);
}

#[test]
fn a_change_whose_new_quorum_is_out_of_touch_is_refused() {
    let (_tmp, net, ms, l) = group_of_three();
    let leader = ms[l].id;
    let others: Vec<u64> = ms.iter().map(|m| m.id).filter(|id| *id != leader).collect();
    let (cut_off, removed) = (others[0], others[1]);
    // The one follower that would stay is cut off for longer than an election timeout; the
    // leader keeps its quorum with the follower that is to be removed.
    net.isolated.lock().unwrap().insert(cut_off);
    thread::sleep(Duration::from_millis(600));
    assert!(ms[l].h.is_leader());
    let change = format!("member:{leader},{cut_off}").into_bytes();
    ms[l].h.propose(change.clone()).unwrap();
    wait_until("the refusal", || {
        ms[l]
            .obs
            .lock()
            .unwrap()
            .refusals
            .contains(&(change.clone(), MembershipRefusal::NoQuorum))
    });
    // Nothing changed: the leader and the follower to be removed still commit.
    let serving: Vec<&Member> = ms.iter().filter(|m| m.id != cut_off).collect();
    commits_among(&serving, "after the refusal");
    assert!(serving
        .iter()
        .all(|m| m.obs.lock().unwrap().joint_terms.is_empty()));
    assert!(ms.iter().any(|m| m.id == removed));
    net.isolated.lock().unwrap().clear();
    stop_members(&net, ms);
}

#[test]
fn a_joiner_catches_up_from_a_snapshot_that_lists_it_then_votes() {
    let (tmp, net, mut ms, l) = group_of_three();
    propose_n(&ms[l].h, "before", 30);
    // Server 4 and observer 5 start empty: no membership of their own.
    ms.push(start_member(&net, tmp.path(), 4, &[], &[]));
    ms.push(start_member(&net, tmp.path(), 5, &[], &[]));
    ms[l].h.propose(b"member:1,2,3,4/5".to_vec()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ms
        .iter()
        .all(|m| last_membership(m) == Some((vec![1, 2, 3, 4], vec![])))
    {
        let seen: Vec<_> = ms.iter().map(|m| (m.id, last_membership(m))).collect();
        assert!(
            Instant::now() < deadline,
            "the new membership not applied everywhere: {seen:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
    for m in &ms[3..] {
        // The log from index 1 lacks the bootstrap membership: they started from a snapshot.
        assert!(m.obs.lock().unwrap().restored_from.is_some());
        let applied = applied_data(&m.obs);
        assert!(
            applied.contains(&b"before-29".to_vec()),
            "{} misses the history",
            m.id
        );
    }
    assert_eq!(ms[3].h.role(), NodeRole::Follower);
    assert_eq!(ms[4].h.role(), NodeRole::Learner);
    // The group goes on committing, to the new members too.
    let l = leader_of(&ms).unwrap();
    propose_n(&ms[l].h, "after", 5);
    for m in &ms {
        wait_until("replicated to the new members", || {
            has_applied(m, b"after-4")
        });
    }
    stop_members(&net, ms);
}
