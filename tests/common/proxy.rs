//! A loopback TCP proxy that can cut a client off the server (to disconnect a session without
//! touching the server), and delay what it forwards (a slow link: `tc netem` is not available
//! on these machines). Runs on the current tokio runtime.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub struct Proxy {
    pub port: u16,
    blocked: Arc<AtomicBool>,
    /// Milliseconds every chunk is held before it is forwarded (both directions); 0: none.
    delay_ms: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

/// Forwards `from` to `to`, each chunk `delay_ms` (read at arrival) after it arrived, in order.
/// Ends at EOF (shutting `to` down) or on the first error.
async fn pump(
    mut from: impl AsyncRead + Unpin + Send + 'static,
    mut to: impl AsyncWrite + Unpin + Send + 'static,
    delay_ms: Arc<AtomicU64>,
) {
    // Bounded: a stalled receiver stalls the sender, as TCP would.
    let (tx, mut rx) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(256);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = tokio::time::Instant::now()
                        + Duration::from_millis(delay_ms.load(Ordering::Relaxed));
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        Proxy::start_on("127.0.0.1:0", upstream)
            .await
            .expect("proxy bind")
    }

    /// A proxy listening on `bind` (e.g. a loopback address of its own with a given port).
    pub async fn start_on(bind: &str, upstream: String) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(bind).await?;
        let port = listener.local_addr()?.port();
        let blocked = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Default::default();
        let (b, c, d) = (blocked.clone(), conns.clone(), delay_ms.clone());
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    return;
                };
                if b.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let upstream = upstream.clone();
                let d = d.clone();
                let h = tokio::spawn(async move {
                    if let Ok(up) = TcpStream::connect(&upstream).await {
                        let _ = down.set_nodelay(true);
                        let _ = up.set_nodelay(true);
                        let (down_rd, down_wr) = down.into_split();
                        let (up_rd, up_wr) = up.into_split();
                        tokio::join!(pump(down_rd, up_wr, d.clone()), pump(up_rd, down_wr, d));
                    }
                });
                let mut c = c.lock().unwrap();
                c.retain(|h| !h.is_finished());
                c.push(h);
            }
        });
        Ok(Proxy {
            port,
            blocked,
            delay_ms,
            conns,
            acceptor,
        })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Drops every proxied connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    /// Accepts connections again and ends any delay.
    pub fn restore(&self) {
        self.blocked.store(false, Ordering::SeqCst);
        self.delay_ms.store(0, Ordering::SeqCst);
    }

    /// Holds every chunk `ms` before forwarding it, on open and new connections alike, until
    /// `restore` (or `delay(0)`).
    pub fn delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}
