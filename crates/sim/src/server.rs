//! UDP serving loop: one task per socket, each with its own scratch buffers, plus the
//! optional buffered record file of answered requests.

use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;

use super::SimError;
use super::agent::{Agent, Handler, Outcome};
use super::misbehave::Action;

/// Socket buffer size asked for (the kernel caps it at net.core.rmem_max / wmem_max).
const SOCKET_BUFFER: usize = 8 << 20;

/// How often the record file is flushed while running.
const RECORD_FLUSH: Duration = Duration::from_millis(200);

/// Counters of what the server did.
#[derive(Debug, Default)]
pub struct Stats {
    pub answered: AtomicU64,
    pub malformed: AtomicU64,
    pub unknown_community: AtomicU64,
    /// Varbinds in the lists of the answers without error status.
    pub varbinds: AtomicU64,
}

impl Stats {
    fn bump(&self, outcome: Outcome, varbinds: u32) {
        let c = match outcome {
            Outcome::Respond(_) => {
                self.varbinds
                    .fetch_add(u64::from(varbinds), Ordering::Relaxed);
                &self.answered
            }
            Outcome::Malformed => &self.malformed,
            Outcome::UnknownCommunity => &self.unknown_community,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Buffered `unix_ms src_addr community port varbinds` lines, one per answered request.
#[derive(Debug)]
pub struct Recorder {
    out: Mutex<BufWriter<File>>,
}

impl Recorder {
    pub fn create(path: &Path) -> Result<Self, SimError> {
        let file = File::create(path).map_err(|source| SimError::RecordFile {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            out: Mutex::new(BufWriter::with_capacity(1 << 16, file)),
        })
    }

    fn record(&self, src: SocketAddr, community: &[u8], port: u16, varbinds: u32) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        if let Ok(mut out) = self.out.lock() {
            // A failed write only loses record lines; serving goes on.
            let _ = writeln!(
                out,
                "{ms} {src} {} {port} {varbinds}",
                community.escape_ascii()
            );
        }
    }

    pub fn flush(&self) {
        if let Ok(mut out) = self.out.lock() {
            let _ = out.flush();
        }
    }
}

/// Binds a UDP socket with large kernel buffers, ready for tokio.
pub fn bind_udp(addr: SocketAddr) -> Result<std::net::UdpSocket, SimError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| SimError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    // Best effort: a smaller buffer only means drops under extreme bursts.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    Ok(socket.into())
}

/// Serves every socket until `shutdown` completes. Must run inside a tokio runtime.
pub async fn serve(
    sockets: Vec<std::net::UdpSocket>,
    agent: Arc<Agent>,
    recorder: Option<Arc<Recorder>>,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for std_socket in sockets {
        let addr = std_socket.local_addr().map_err(|source| SimError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let socket =
            UdpSocket::from_std(std_socket).map_err(|source| SimError::Bind { addr, source })?;
        tasks.spawn(answer_loop(
            socket,
            addr.port(),
            agent.clone(),
            recorder.clone(),
            stats.clone(),
            start,
        ));
    }
    if let Some(rec) = recorder.clone() {
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(RECORD_FLUSH);
            loop {
                tick.tick().await;
                rec.flush();
            }
        });
    }
    shutdown.await;
    tasks.shutdown().await;
    if let Some(rec) = recorder {
        rec.flush();
    }
    Ok(())
}

async fn answer_loop(
    socket: UdpSocket,
    port: u16,
    agent: Arc<Agent>,
    recorder: Option<Arc<Recorder>>,
    stats: Arc<Stats>,
    start: Instant,
) {
    // Shared with the tasks that send delayed (`slow`) answers.
    let socket = Arc::new(socket);
    let mut handler = Handler::default();
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(65536);
    let mut answers: u64 = 0;
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "recv_from failed");
                continue;
            }
        };
        let req = &buf[..n];
        let outcome = handler.handle(&agent, port, req, start.elapsed().as_secs_f64(), &mut out);
        stats.bump(outcome, handler.varbinds());
        let Outcome::Respond(dev) = outcome else {
            continue;
        };
        let device = &agent.devices()[dev as usize];
        answers += 1;
        let action = match device.misbehave {
            Some(m) => m.apply(&mut out, answers),
            None => Action::Send,
        };
        match action {
            Action::Drop => continue,
            Action::Send => {
                if let Err(e) = socket.send_to(&out, src).await {
                    tracing::debug!(error = %e, "send_to failed");
                }
            }
            Action::SendAfter(delay) => {
                let (socket, answer) = (socket.clone(), out.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Err(e) = socket.send_to(&answer, src).await {
                        tracing::debug!(error = %e, "send_to failed");
                    }
                });
            }
        }
        if let Some(rec) = &recorder {
            rec.record(src, &device.community, port, handler.varbinds());
        }
    }
}
