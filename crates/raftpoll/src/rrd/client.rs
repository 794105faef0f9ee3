//! rrdcached protocol client over TCP or a unix socket.
//!
//! The protocol is line based: one command a line, answered by
//! `<status> <message>` and, when status > 0, that many more lines. A
//! negative status is an error carrying rrdcached's message. `BATCH` sends
//! many commands and answers once, with one `<command#> <message>` line per
//! failed command.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::{TcpStream, UnixStream};

use super::layout::{RRDCACHED_DEFAULT_PORT, RrdDef, RrdUpdate, create_args, update_line};

/// Start of rrdcached's answer to a CREATE in a directory that does not exist
/// when it runs without `-R`; a second line ("Did you pass -R …") follows.
const RECURSIVE_CREATE_REFUSED: &str = "No permission to recursively create";

/// Where rrdcached listens: `host:port` (port defaults to 42217),
/// `[v6]:port`, or `unix:/path` (a bare `/path` is a unix socket too).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RrdcachedAddr {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl fmt::Display for RrdcachedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RrdcachedAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            RrdcachedAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            RrdcachedAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl FromStr for RrdcachedAddr {
    type Err = RrdError;

    fn from_str(input: &str) -> Result<Self, RrdError> {
        let invalid = |reason: &str| RrdError::InvalidAddr {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(invalid("empty address"));
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid(
                    "`unix:` needs a socket path, e.g. unix:/run/rrdcached.sock",
                ));
            }
            return Ok(RrdcachedAddr::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(RrdcachedAddr::Unix(PathBuf::from(s)));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| invalid("missing `]` after IPv6 address"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(invalid("expected `:port` after `]`")),
                },
            }
        } else {
            match s.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => {
                    return Err(invalid("IPv6 addresses need brackets, e.g. [::1]:42217"));
                }
                Some((host, port)) => (host, Some(port)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '[' | ']'))
        {
            return Err(invalid("host contains a space, `/`, `[` or `]`"));
        }
        let port = match port {
            None => RRDCACHED_DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(invalid("port must be a number from 1 to 65535")),
                Ok(port) => port,
            },
        };
        Ok(RrdcachedAddr::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

impl serde::Serialize for RrdcachedAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RrdcachedAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Errors of the rrdcached client and writer. Each names the rrdcached
/// address, and the file when one is involved.
#[derive(Debug, thiserror::Error)]
pub enum RrdError {
    #[error("invalid rrdcached address {input:?}: {reason}")]
    InvalidAddr { input: String, reason: String },
    #[error("cannot connect to rrdcached at {addr}: {source}")]
    Connect {
        addr: RrdcachedAddr,
        #[source]
        source: io::Error,
    },
    #[error("rrdcached at {addr} did not answer within {timeout:?} ({during})")]
    Timeout {
        addr: RrdcachedAddr,
        during: &'static str,
        timeout: Duration,
    },
    #[error("I/O error talking to rrdcached at {addr}: {source}")]
    Io {
        addr: RrdcachedAddr,
        #[source]
        source: io::Error,
    },
    #[error("rrdcached at {addr} closed the connection")]
    Closed { addr: RrdcachedAddr },
    #[error("unexpected answer from rrdcached at {addr}: {line:?}")]
    Protocol { addr: RrdcachedAddr, line: String },
    #[error(
        "refusing to send a command with a line break or an empty command to rrdcached at {addr}"
    )]
    BadCommand { addr: RrdcachedAddr },
    #[error("rrdcached at {addr} refused {verb}{}: {message}", on_file(.file))]
    Command {
        addr: RrdcachedAddr,
        verb: String,
        file: Option<String>,
        status: i64,
        message: String,
    },
}

fn on_file(file: &Option<String>) -> String {
    file.as_ref()
        .map(|f| format!(" of {f}"))
        .unwrap_or_default()
}

pub type Result<T, E = RrdError> = std::result::Result<T, E>;

/// A successful answer: status (≥ 0), message, and the lines that followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: i64,
    pub message: String,
    pub lines: Vec<String>,
}

/// One command of a `BATCH` that rrdcached rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchLineError {
    /// 1-based index into the commands passed to [`RrdcachedClient::batch`].
    pub line: usize,
    pub message: String,
}

/// The answer to a `BATCH`: how many commands were sent and which failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub commands: usize,
    pub errors: Vec<BatchLineError>,
}

impl BatchOutcome {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Default timeout for connecting and for each answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection to rrdcached. Not shared: the writer task owns it.
pub struct RrdcachedClient {
    addr: RrdcachedAddr,
    stream: BufStream<Box<dyn Io>>,
    timeout: Duration,
}

impl fmt::Debug for RrdcachedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RrdcachedClient")
            .field("addr", &self.addr)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RrdcachedClient {
    /// Connects within `timeout`; the same timeout then bounds every write
    /// and every answer.
    pub async fn connect(addr: &RrdcachedAddr, timeout: Duration) -> Result<Self> {
        let connecting = async {
            let io: Box<dyn Io> = match addr {
                RrdcachedAddr::Tcp { host, port } => {
                    let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                    // Batches are written in one go; answers are small.
                    tcp.set_nodelay(true)?;
                    Box::new(tcp)
                }
                RrdcachedAddr::Unix(path) => Box::new(UnixStream::connect(path).await?),
            };
            Ok::<_, io::Error>(io)
        };
        let io = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => {
                return Err(RrdError::Timeout {
                    addr: addr.clone(),
                    during: "connecting",
                    timeout,
                });
            }
            Ok(Err(source)) => {
                return Err(RrdError::Connect {
                    addr: addr.clone(),
                    source,
                });
            }
            Ok(Ok(io)) => io,
        };
        Ok(RrdcachedClient {
            addr: addr.clone(),
            stream: BufStream::new(io),
            timeout,
        })
    }

    pub fn addr(&self) -> &RrdcachedAddr {
        &self.addr
    }

    /// The limit on each write and each answer from now on (e.g. longer for
    /// a `BATCH` that creates many files).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one command line (without the newline) and reads its answer. A
    /// negative status becomes [`RrdError::Command`] with rrdcached's message.
    pub async fn command(&mut self, line: &str) -> Result<Response> {
        self.check_line(line)?;
        self.send(&[line]).await?;
        let response = self.read_response("reading an answer").await?;
        if response.status < 0 {
            let mut words = line.split_whitespace();
            return Err(RrdError::Command {
                addr: self.addr.clone(),
                verb: words.next().unwrap_or_default().to_ascii_uppercase(),
                file: words.next().map(str::to_string),
                status: response.status,
                message: response.message,
            });
        }
        Ok(response)
    }

    /// Sends `commands` in one `BATCH … .` exchange. Per-command failures are
    /// returned in the outcome, not as an error.
    pub async fn batch(&mut self, commands: &[String]) -> Result<BatchOutcome> {
        if commands.is_empty() {
            return Ok(BatchOutcome::default());
        }
        for c in commands {
            // A lone "." would end the batch early.
            if c.trim() == "." {
                return Err(RrdError::BadCommand {
                    addr: self.addr.clone(),
                });
            }
            self.check_line(c)?;
        }
        self.command("BATCH").await?;
        let mut lines: Vec<&str> = commands.iter().map(String::as_str).collect();
        lines.push(".");
        self.send(&lines).await?;
        let answer = self.read_response("reading a BATCH answer").await?;
        if answer.status < 0 {
            return Err(RrdError::Command {
                addr: self.addr.clone(),
                verb: "BATCH".to_string(),
                file: None,
                status: answer.status,
                message: answer.message,
            });
        }
        let mut errors = Vec::with_capacity(answer.lines.len());
        for l in answer.lines {
            let parsed = l
                .split_once(' ')
                .and_then(|(n, msg)| Some((n.parse::<usize>().ok()?, msg.trim().to_string())));
            match parsed {
                Some((line, message)) if (1..=commands.len()).contains(&line) => {
                    errors.push(BatchLineError { line, message })
                }
                _ => {
                    return Err(RrdError::Protocol {
                        addr: self.addr.clone(),
                        line: l,
                    });
                }
            }
        }
        Ok(BatchOutcome {
            commands: commands.len(),
            errors,
        })
    }

    /// `CREATE <path> -s <step> -b <start> -O …`. A file that already exists
    /// is kept and counts as success.
    pub async fn create(&mut self, path: &str, def: &RrdDef, step: u32, start: u64) -> Result<()> {
        match self.command(&create_command(path, def, step, start)).await {
            Err(RrdError::Command { message, .. }) if is_file_exists(&message) => Ok(()),
            other => other.map(drop),
        }
    }

    /// `UPDATE <path> <ts>:<v>…`.
    pub async fn update(&mut self, u: &RrdUpdate) -> Result<()> {
        self.command(&update_command(u)).await.map(drop)
    }

    /// `LAST <path>`: the file's last update time, as rrdcached knows it
    /// (its cache included), rounded down to the file's step.
    pub async fn last(&mut self, path: &str) -> Result<u64> {
        let response = self.command(&format!("LAST {path}")).await?;
        response
            .message
            .trim()
            .parse()
            .map_err(|_| RrdError::Protocol {
                addr: self.addr.clone(),
                line: format!("{} {}", response.status, response.message),
            })
    }

    /// `FLUSH <path>`: answers once the file's pending values are on disk.
    pub async fn flush(&mut self, path: &str) -> Result<()> {
        self.command(&format!("FLUSH {path}")).await.map(drop)
    }

    /// `FLUSHALL`: starts writing every pending value; returns at once.
    pub async fn flush_all(&mut self) -> Result<()> {
        self.command("FLUSHALL").await.map(drop)
    }

    /// `PING`.
    pub async fn ping(&mut self) -> Result<()> {
        self.command("PING").await.map(drop)
    }

    /// `STATS` as name → value (`QueueLength`, `UpdatesReceived`, …).
    pub async fn stats(&mut self) -> Result<BTreeMap<String, u64>> {
        let response = self.command("STATS").await?;
        let mut out = BTreeMap::new();
        for line in response.lines {
            let parsed = line
                .split_once(':')
                .and_then(|(k, v)| Some((k.trim().to_string(), v.trim().parse::<u64>().ok()?)));
            match parsed {
                Some((k, v)) => {
                    out.insert(k, v);
                }
                None => {
                    return Err(RrdError::Protocol {
                        addr: self.addr.clone(),
                        line,
                    });
                }
            }
        }
        Ok(out)
    }

    fn check_line(&self, line: &str) -> Result<()> {
        if line.trim().is_empty() || line.contains(['\n', '\r']) {
            return Err(RrdError::BadCommand {
                addr: self.addr.clone(),
            });
        }
        Ok(())
    }

    async fn send(&mut self, lines: &[&str]) -> Result<()> {
        let writing = async {
            for l in lines {
                self.stream.write_all(l.as_bytes()).await?;
                self.stream.write_all(b"\n").await?;
            }
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, writing).await {
            Err(_) => Err(RrdError::Timeout {
                addr: self.addr.clone(),
                during: "sending a command",
                timeout: self.timeout,
            }),
            Ok(Err(source)) => Err(self.io_error(source)),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn read_response(&mut self, during: &'static str) -> Result<Response> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.read_response_inner()).await {
            Err(_) => Err(RrdError::Timeout {
                addr: self.addr.clone(),
                during,
                timeout,
            }),
            Ok(r) => r,
        }
    }

    async fn read_response_inner(&mut self) -> Result<Response> {
        let first = self.read_line().await?;
        let (status, message) = match first.split_once(' ') {
            Some((n, msg)) => (n.parse::<i64>().ok(), msg.trim().to_string()),
            None => (first.parse::<i64>().ok(), String::new()),
        };
        let Some(status) = status else {
            return Err(RrdError::Protocol {
                addr: self.addr.clone(),
                line: first,
            });
        };
        let message = self.with_continuation(message).await?;
        let mut lines = Vec::new();
        for _ in 0..status.max(0) {
            let line = self.read_line().await?;
            lines.push(self.with_continuation(line).await?);
        }
        Ok(Response {
            status,
            message,
            lines,
        })
    }

    /// rrdcached's one two-line error (a CREATE in a missing directory of a
    /// daemon started without `-R`) is joined into one message, so the second
    /// line is not taken for the answer to the next command.
    async fn with_continuation(&mut self, line: String) -> Result<String> {
        if line.contains(RECURSIVE_CREATE_REFUSED) {
            let next = self.read_line().await?;
            return Ok(format!("{line} ({})", next.trim()));
        }
        Ok(line)
    }

    async fn read_line(&mut self) -> Result<String> {
        let mut buf = Vec::new();
        let n = self
            .stream
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| self.io_error(e))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Err(RrdError::Closed {
                addr: self.addr.clone(),
            });
        }
        let line = String::from_utf8_lossy(&buf);
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    }

    fn io_error(&self, source: io::Error) -> RrdError {
        RrdError::Io {
            addr: self.addr.clone(),
            source,
        }
    }
}

/// The full `CREATE` command line for `path`.
pub fn create_command(path: &str, def: &RrdDef, step: u32, start: u64) -> String {
    format!("CREATE {path} {}", create_args(def, step, start))
}

/// The full `UPDATE` command line for one sample.
pub fn update_command(u: &RrdUpdate) -> String {
    format!("UPDATE {} {}", u.path, update_line(u))
}

/// rrdcached's answer to `CREATE -O` on a file that is already there.
pub fn is_file_exists(message: &str) -> bool {
    message.contains("File exists")
}

/// rrdcached's answer to `UPDATE` or `FLUSH` of a file that is not there
/// (`LAST` says "… No such file or directory").
pub fn is_no_such_file(message: &str) -> bool {
    message.starts_with("No such file") || message.ends_with("No such file or directory")
}

/// rrdcached's answer to an `UPDATE` not newer than the file's last one.
pub fn is_stale_update(message: &str) -> bool {
    message.contains("illegal attempt to update")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn parses_addresses() {
        let tcp = |h: &str, p| RrdcachedAddr::Tcp {
            host: h.to_string(),
            port: p,
        };
        assert_eq!(
            "127.0.0.1:42217".parse::<RrdcachedAddr>().ok(),
            Some(tcp("127.0.0.1", 42217))
        );
        assert_eq!(
            "localhost".parse::<RrdcachedAddr>().ok(),
            Some(tcp("localhost", 42217))
        );
        assert_eq!("[::1]:9".parse::<RrdcachedAddr>().ok(), Some(tcp("::1", 9)));
        assert_eq!(
            "[::1]".parse::<RrdcachedAddr>().ok(),
            Some(tcp("::1", 42217))
        );
        assert_eq!(
            "unix:/run/rrdcached.sock".parse::<RrdcachedAddr>().ok(),
            Some(RrdcachedAddr::Unix("/run/rrdcached.sock".into()))
        );
        assert_eq!(
            "/tmp/r.sock".parse::<RrdcachedAddr>().ok(),
            Some(RrdcachedAddr::Unix("/tmp/r.sock".into()))
        );
        for (addr, text) in [
            (tcp("127.0.0.1", 1), "127.0.0.1:1"),
            (tcp("::1", 2), "[::1]:2"),
            (RrdcachedAddr::Unix("/a/b".into()), "unix:/a/b"),
        ] {
            assert_eq!(addr.to_string(), text);
            assert_eq!(text.parse::<RrdcachedAddr>().ok(), Some(addr));
        }
    }

    #[test]
    fn rejects_bad_addresses_with_reasons() {
        for (input, reason) in [
            ("", "empty"),
            ("unix:", "socket path"),
            ("host:", "port"),
            ("host:99999", "port"),
            ("host:0", "port"),
            (":42217", "missing host"),
            ("::1:42217", "brackets"),
            ("[::1", "`]`"),
            ("[::1]x", "`:port`"),
        ] {
            let err = input.parse::<RrdcachedAddr>().expect_err(input).to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{err}");
        }
    }

    #[test]
    fn command_error_names_address_and_file() {
        let err = RrdError::Command {
            addr: "127.0.0.1:5".parse().expect("addr"),
            verb: "UPDATE".into(),
            file: Some("h/x.rrd".into()),
            status: -1,
            message: "No such file: /b/h/x.rrd".into(),
        };
        assert_eq!(
            err.to_string(),
            "rrdcached at 127.0.0.1:5 refused UPDATE of h/x.rrd: No such file: /b/h/x.rrd"
        );
    }

    /// A scripted fake server: answers each received line from `answers`.
    async fn fake(answers: Vec<&'static str>) -> (RrdcachedAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut seen = String::new();
            let mut answers = answers.into_iter();
            let mut buf = [0u8; 4096];
            let mut pending = String::new();
            while let Ok(n) = sock.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(i) = pending.find('\n') {
                    let line: String = pending.drain(..=i).collect();
                    seen.push_str(&line);
                    let in_batch = seen.contains("BATCH\n") && !seen.ends_with(".\n");
                    if in_batch && line != "BATCH\n" {
                        continue;
                    }
                    if let Some(a) = answers.next() {
                        sock.write_all(a.as_bytes()).await.expect("write");
                    }
                }
            }
            seen
        });
        let addr = RrdcachedAddr::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        (addr, task)
    }

    #[tokio::test]
    async fn reads_multi_line_answers_and_errors() {
        let (addr, server) = fake(vec![
            "2 Statistics follow\nQueueLength: 3\nUpdatesReceived: 7\n",
            "-1 No such file: /base/h/x.rrd\n",
            "-1 RRD Error: creating '/base/h/x.rrd': File exists\n",
        ])
        .await;
        let mut c = RrdcachedClient::connect(&addr, DEFAULT_TIMEOUT)
            .await
            .expect("connect");
        let stats = c.stats().await.expect("stats");
        assert_eq!(stats.get("QueueLength"), Some(&3));
        assert_eq!(stats.get("UpdatesReceived"), Some(&7));
        let err = c
            .flush("h/x.rrd")
            .await
            .expect_err("flush of a missing file");
        match &err {
            RrdError::Command {
                verb,
                file,
                message,
                ..
            } => {
                assert_eq!(verb, "FLUSH");
                assert_eq!(file.as_deref(), Some("h/x.rrd"));
                assert!(is_no_such_file(message));
            }
            other => panic!("unexpected {other:?}"),
        }
        let def = RrdDef { ds: vec![] };
        c.create("h/x.rrd", &def, 300, 1)
            .await
            .expect("existing file is fine");
        drop(c);
        let seen = server.await.expect("server");
        assert!(
            seen.starts_with("STATS\nFLUSH h/x.rrd\nCREATE h/x.rrd -s 300 -b 1 -O RRA:"),
            "{seen}"
        );
    }

    #[tokio::test]
    async fn batch_maps_error_lines_to_commands() {
        let (addr, server) = fake(vec![
            "0 Go ahead.  End with dot '.' on its own line.\n",
            "2 errors\n1 No such file: /b/a.rrd\n3 illegal attempt to update\n",
        ])
        .await;
        let mut c = RrdcachedClient::connect(&addr, DEFAULT_TIMEOUT)
            .await
            .expect("connect");
        let cmds: Vec<String> = ["UPDATE a.rrd 1:1", "UPDATE b.rrd 1:1", "UPDATE b.rrd 1:1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let outcome = c.batch(&cmds).await.expect("batch");
        assert_eq!(outcome.commands, 3);
        assert_eq!(
            outcome.errors,
            vec![
                BatchLineError {
                    line: 1,
                    message: "No such file: /b/a.rrd".into()
                },
                BatchLineError {
                    line: 3,
                    message: "illegal attempt to update".into()
                },
            ]
        );
        drop(c);
        let seen = server.await.expect("server");
        assert_eq!(
            seen,
            "BATCH\nUPDATE a.rrd 1:1\nUPDATE b.rrd 1:1\nUPDATE b.rrd 1:1\n.\n"
        );
    }

    #[tokio::test]
    async fn two_line_create_refusal_stays_one_answer() {
        const REFUSAL: &str =
            "No permission to recursively create: h\nDid you pass -R to the daemon?\n";
        let create = "CREATE h/x.rrd -s 300 DS:a:GAUGE:600:U:U RRA:LAST:0.5:1:10";
        let refused = format!("-1 {REFUSAL}").leak();
        let (addr, _server) = fake(vec![refused, "0 PONG\n"]).await;
        let mut c = RrdcachedClient::connect(&addr, DEFAULT_TIMEOUT)
            .await
            .expect("connect");
        let err = c.command(create).await.expect_err("refused");
        assert!(err.to_string().contains("Did you pass -R"), "{err}");
        c.ping().await.expect("the next answer is PING's");

        let batch_answer = format!("1 errors\n1 {REFUSAL}").leak();
        let (addr, _server) = fake(vec![
            "0 Go ahead.  End with dot '.' on its own line.\n",
            batch_answer,
        ])
        .await;
        let mut c = RrdcachedClient::connect(&addr, DEFAULT_TIMEOUT)
            .await
            .expect("connect");
        let outcome = c.batch(&[create.to_string()]).await.expect("batch");
        assert_eq!(outcome.errors.len(), 1);
        assert!(
            outcome.errors[0].message.contains("Did you pass -R"),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn garbage_closed_and_silent_servers_are_errors() {
        let (addr, _server) = fake(vec!["hello\n"]).await;
        let mut c = RrdcachedClient::connect(&addr, DEFAULT_TIMEOUT)
            .await
            .expect("connect");
        assert!(matches!(c.ping().await, Err(RrdError::Protocol { .. })));

        let (addr, _server) = fake(vec![]).await;
        let mut c = RrdcachedClient::connect(&addr, Duration::from_millis(200))
            .await
            .expect("connect");
        let err = c.ping().await.expect_err("silent server");
        assert!(matches!(err, RrdError::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains(&addr.to_string()));

        assert!(matches!(
            c.command("PING\nQUIT").await,
            Err(RrdError::BadCommand { .. })
        ));
    }

    #[tokio::test]
    async fn unreachable_address_is_named() {
        // Bind then drop to get a port nobody listens on.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr").port()
        };
        let addr = RrdcachedAddr::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let err = RrdcachedClient::connect(&addr, DEFAULT_TIMEOUT)
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, RrdError::Connect { .. }));
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
