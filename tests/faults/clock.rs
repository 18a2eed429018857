//! Wall-clock jumps of one member (`Fault::ClockJump`), through libfaketime (Debian's
//! `faketime` package): every rookery process is started with the library preloaded and told to
//! read its clock offset from a file of its own (`<member dir>/faketime.rc`), which the nemesis
//! rewrites. Only the realtime clock moves (`DONT_FAKE_MONOTONIC`): a real clock step (NTP, an
//! operator) never moves the monotonic clock, and the test is whether anything that must not
//! follow the wall clock (session expiry, leases, elections) does.

use std::path::PathBuf;

use crate::common::cluster::Cluster;
use crate::common::{target, Target};

/// Debian's libfaketime, the multi-threaded build (rookery runs many threads).
const LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const OFFSET_FILE: &str = "faketime.rc";

/// Whether clock jumps can be injected here: libfaketime installed and a rookery target (the
/// suite does not preload it into ZooKeeper's JVM).
pub fn available() -> Result<(), String> {
    if target() != Target::Rookery {
        return Err("clock jumps are injected into rookery only".to_string());
    }
    if !std::path::Path::new(LIBRARY).exists() {
        return Err(format!("{LIBRARY} missing (apt-get install faketime)"));
    }
    Ok(())
}

/// The environment of every member's process (`ClusterOpts::env`; `{dir}` is the member's
/// directory). The offset file is read on every realtime clock call (`FAKETIME_NO_CACHE`), so a
/// jump takes effect at once; a missing file means no offset.
pub fn env() -> Vec<(String, String)> {
    [
        ("LD_PRELOAD", LIBRARY.to_string()),
        ("FAKETIME_TIMESTAMP_FILE", format!("{{dir}}/{OFFSET_FILE}")),
        ("FAKETIME_NO_CACHE", "1".to_string()),
        ("DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn offset_file(c: &Cluster, i: usize) -> PathBuf {
    c.member_dir(i).join(OFFSET_FILE)
}

/// Sets member `i`'s wall clock `secs` away from the real one (0: back to real time).
pub fn set_offset(c: &Cluster, i: usize, secs: i64) {
    // Written whole and renamed, so the library never reads half a line.
    let path = offset_file(c, i);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{secs:+}\n")).expect("write the fake-clock offset");
    std::fs::rename(&tmp, &path).expect("install the fake-clock offset");
}

/// Puts every member whose clock the suite moved back on real time.
pub fn reset_all(c: &Cluster) {
    for i in 0..c.len() {
        if offset_file(c, i).exists() {
            set_offset(c, i, 0);
        }
    }
}
