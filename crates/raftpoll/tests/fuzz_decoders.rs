//! Seeded fuzz tests of the product's decoders: random and mutated inputs must never panic and
//! must give sane results (exact round trips, errors naming the file).
//!
//! - the rrdcached client's answer parsing (`RrdcachedClient` against a scripted loopback
//!   server, since the parser sits on the socket) and `RrdcachedAddr` parsing.
//! - the spool record decoder (`rrd::spool::decode`) and damaged spool files.
//! - config parsing (`Config::parse` + `validate`) of TOML-ish junk.
//!
//! A small xorshift generator with fixed seeds keeps runs reproducible: a failure names the
//! seed and the input. Iteration counts keep each test to a few seconds in debug builds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raftpoll::config::Config;
use raftpoll::rrd::client::{RrdError, RrdcachedAddr, RrdcachedClient};
use raftpoll::rrd::layout::{DsDef, DsType, RrdDef, RrdUpdate, RrdValue};
use raftpoll::rrd::spool::{self, Spool};
use raftpoll_testbed::fuzz::{Rng, mutate};

// ---------------------------------------------------------------- rrdcached client

/// One scripted exchange: the server reads one request (a line, or a BATCH body up to ".")
/// and answers with these bytes; after the last one it closes the connection.
async fn scripted_server(listener: &tokio::net::TcpListener, script: Vec<Vec<u8>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let Ok((stream, _)) = listener.accept().await else {
        return;
    };
    let mut stream = BufReader::new(stream);
    let mut in_batch = false;
    let mut answers = script.into_iter();
    loop {
        let mut line = Vec::new();
        match stream.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&line).trim().to_string();
        if in_batch && line != "." {
            continue;
        }
        in_batch = line == "BATCH";
        let Some(answer) = answers.next() else { return };
        if stream.get_mut().write_all(&answer).await.is_err() {
            return;
        }
        let _ = stream.get_mut().flush().await;
        // Only a plain "0 …" line lets a client go on (BATCH's go-ahead); after anything
        // else it may wait for lines that never come: closing ends that.
        let go_ahead = answer.starts_with(b"0 ")
            && answer.last() == Some(&b'\n')
            && answer.iter().filter(|b| **b == b'\n').count() == 1;
        if answers.len() == 0 || !go_ahead {
            // Closing ends a half-sent answer; nothing else would.
            return;
        }
    }
}

/// A random answer: well-formed ones of every shape, and junk.
fn random_answer(rng: &mut Rng, commands: usize) -> Vec<u8> {
    let line = |rng: &mut Rng| -> Vec<u8> {
        match rng.below(6) {
            0 => format!("QueueLength: {}", rng.next_u64() >> rng.below(64)).into_bytes(),
            1 => format!("{} error: No such file", rng.below(commands + 2)).into_bytes(),
            2 => b"Weird line without colon".to_vec(),
            3 => format!("Updates: {}", rng.int()).into_bytes(),
            _ => rng.bytes(20).into_iter().filter(|b| *b != b'\n').collect(),
        }
    };
    let mut out = Vec::new();
    match rng.below(8) {
        0 if rng.chance(2) => out.extend_from_slice(b"0 Go ahead\n"),
        0 => out.extend_from_slice(format!("0 {}\n", rng.next_u64() >> rng.below(64)).as_bytes()),
        1 => out
            .extend_from_slice(format!("{} {}\n", rng.next_u64() >> 34, rng.next_u64()).as_bytes()),
        2 => out.extend_from_slice(b"-1 No such file or directory\n"),
        3 => out.extend_from_slice(&rng.bytes(30)),
        4 => out.extend_from_slice(format!("{} oops", rng.int()).as_bytes()),
        _ => {
            let n = rng.below(5);
            // Sometimes announce more lines than follow: the server then closes.
            let announced = if rng.chance(4) {
                n + 1 + rng.below(3)
            } else {
                n
            };
            out.extend_from_slice(format!("{announced} lines follow\r\n").as_bytes());
            for _ in 0..n {
                out.extend(line(rng));
                out.extend_from_slice(if rng.chance(5) { b"\r\n" } else { b"\n" });
            }
        }
    }
    out
}

/// The client against a server answering junk and near-valid answers: no panic, every call
/// ends (answer, error or closed connection), and what it accepts is consistent.
#[test]
fn rrdcached_client_parses_any_answer() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback listener");
        let port = listener.local_addr().expect("address").port();
        let addr = RrdcachedAddr::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let mut rng = Rng::new(0x0cac4ed);
        let mut outcomes: HashMap<&str, (usize, usize)> = HashMap::new();
        for i in 0..600 {
            let commands: Vec<String> = (0..1 + rng.below(4))
                .map(|k| format!("UPDATE host/port-id{k}.rrd {}:1:2", 1_700_000_000 + i))
                .collect();
            let n = commands.len();
            let script: Vec<Vec<u8>> = match i % 5 {
                // A valid BATCH start, then junk for its result.
                0 => vec![b"0 Go ahead.\n".to_vec(), random_answer(&mut rng, n)],
                _ => (0..2).map(|_| random_answer(&mut rng, n)).collect(),
            };
            let op = *rng.pick(&["ping", "stats", "last", "batch", "flush"]);
            let server = scripted_server(&listener, script.clone());
            let client = async {
                let mut c = RrdcachedClient::connect(&addr, Duration::from_secs(5)).await?;
                match op {
                    "ping" => c.ping().await.map(|_| None),
                    "stats" => c.stats().await.map(|s| Some(format!("{s:?}"))),
                    "last" => c.last("host/uptime.rrd").await.map(|t| Some(t.to_string())),
                    "flush" => c.flush("host/uptime.rrd").await.map(|_| None),
                    _ => c.batch(&commands).await.map(|b| {
                        assert_eq!(b.commands, n);
                        for e in &b.errors {
                            assert!((1..=n).contains(&e.line), "{e:?} of {n} from {script:?}");
                        }
                        Some(format!("{b:?}"))
                    }),
                }
            };
            let (_, result) = tokio::join!(server, client);
            let tally = outcomes.entry(op).or_default();
            match result {
                Ok(_) => tally.0 += 1,
                Err(RrdError::Timeout { .. }) => panic!("{op}: timed out on {script:?}"),
                Err(e) => {
                    // Errors name the address and never echo more than one line.
                    let text = e.to_string();
                    assert!(text.contains(&addr.to_string()), "{text}");
                    tally.1 += 1;
                }
            }
        }
        for (op, (ok, err)) in &outcomes {
            assert!(*ok > 0 && *err > 0, "{op}: {ok} accepted, {err} refused");
        }
    });
}

/// Exact answers of the client for well-formed replies (the sanity half of the fuzzing).
#[test]
fn rrdcached_client_reads_valid_answers_exactly() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = RrdcachedAddr::Tcp {
            host: "127.0.0.1".into(),
            port: listener.local_addr().expect("address").port(),
        };
        let stats =
            b"3 Statistics follow\nQueueLength: 0\nUpdatesReceived: 42\r\nJournalBytes: 7\n";
        let (_, got) = tokio::join!(scripted_server(&listener, vec![stats.to_vec()]), async {
            RrdcachedClient::connect(&addr, Duration::from_secs(5))
                .await?
                .stats()
                .await
        });
        let got = got.expect("stats");
        assert_eq!(got.len(), 3);
        assert_eq!(got["UpdatesReceived"], 42);

        let cmds: Vec<String> = (0..4).map(|i| format!("UPDATE h/f{i}.rrd N:1")).collect();
        let answer = b"2 errors\n2 illegal attempt to update\n4 No such file\n".to_vec();
        let (_, got) = tokio::join!(
            scripted_server(&listener, vec![b"0 Go ahead.\n".to_vec(), answer]),
            async {
                RrdcachedClient::connect(&addr, Duration::from_secs(5))
                    .await?
                    .batch(&cmds)
                    .await
            }
        );
        let got = got.expect("batch");
        let lines: Vec<usize> = got.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 4]);

        let (_, got) = tokio::join!(
            scripted_server(&listener, vec![b"0 1700000000\n".to_vec()]),
            async {
                RrdcachedClient::connect(&addr, Duration::from_secs(5))
                    .await?
                    .last("h/f.rrd")
                    .await
            }
        );
        assert_eq!(got.expect("last"), 1_700_000_000);
    });
}

/// `[rrd] rrdcached` addresses: junk never panics; what parses prints back to itself.
#[test]
fn rrdcached_addresses_parse_or_refuse() {
    let mut rng = Rng::new(0xadd7);
    let pieces = [
        "unix:",
        "/run/x.sock",
        "127.0.0.1",
        ":",
        "[",
        "]",
        "::1",
        "42217",
        "0",
        "65536",
        "host",
        " ",
        "/",
        "-1",
    ];
    for _ in 0..50_000 {
        let mut s = String::new();
        for _ in 0..rng.below(5) {
            if rng.chance(5) {
                s.push_str(&String::from_utf8_lossy(&rng.bytes(4)));
            } else {
                s.push_str(rng.pick::<&str>(&pieces));
            }
        }
        if let Ok(addr) = s.parse::<RrdcachedAddr>() {
            let again: RrdcachedAddr = addr
                .to_string()
                .parse()
                .unwrap_or_else(|e| panic!("{s:?} → {addr} does not parse back: {e}"));
            assert_eq!(again, addr, "{s:?}");
        }
    }
}

// ---------------------------------------------------------------- spool

const DS_NAMES: [&str; 5] = ["INOCTETS", "OUTOCTETS", "uptime", "a", "Z_9"];

fn random_update(rng: &mut Rng) -> RrdUpdate {
    let ds: Vec<DsDef> = (0..1 + rng.below(5))
        .map(|_| DsDef {
            name: rng.pick::<&str>(&DS_NAMES),
            kind: *rng.pick(&[DsType::Gauge, DsType::Derive, DsType::Counter]),
            min: rng.chance(2).then(|| rng.int() as f64),
            max: rng.chance(2).then(|| f64::from_bits(rng.next_u64())),
        })
        .collect();
    let values = ds
        .iter()
        .map(|_| match rng.below(3) {
            0 => RrdValue::Unknown,
            1 => RrdValue::Counter(rng.next_u64()),
            _ => RrdValue::Gauge(f64::from_bits(rng.next_u64())),
        })
        .collect();
    RrdUpdate {
        path: format!("host-{}/port-id{}.rrd", rng.below(5), rng.below(100)),
        def: Arc::new(RrdDef { ds }),
        timestamp: rng.next_u64() >> rng.below(64),
        millis: rng.below(1000) as u16,
        values,
    }
}

/// Spool payloads: random ones never decode into nonsense, encoded ones decode back, and any
/// mutation that still decodes re-encodes to exactly the same bytes (no two readings of one
/// record).
#[test]
fn spool_records_decode_exactly_or_not_at_all() {
    let mut rng = Rng::new(0x5b001);
    let mut defs = HashMap::new();
    let (mut mutated_ok, mut mutated_bad) = (0, 0);
    for i in 0..60_000u64 {
        let update = random_update(&mut rng);
        let payload = spool::encode(i, &update);
        let (seq, back) = spool::decode(&payload, &mut defs).expect("an encoded record decodes");
        assert_eq!(seq, i);
        assert_eq!(spool::encode(seq, &back), payload, "{update:?}");

        let junk = if i % 3 == 0 {
            rng.bytes(80)
        } else {
            mutate(&mut rng, &payload)
        };
        match spool::decode(&junk, &mut defs) {
            Some((seq, u)) => {
                mutated_ok += 1;
                // Bytes 16..18 hold the milliseconds, which decode clamps to 999.
                let mut canonical = junk.clone();
                canonical[16..18].copy_from_slice(&u.millis.to_le_bytes());
                assert!(u.millis <= 999);
                assert_eq!(spool::encode(seq, &u), canonical, "decoded as {u:?}");
                assert_eq!(u.values.len(), u.def.ds.len());
                assert!(
                    raftpoll::rrd::layout::is_valid_rrd_path(&u.path),
                    "{}",
                    u.path
                );
            }
            None => mutated_bad += 1,
        }
    }
    assert!(
        mutated_ok > 100 && mutated_bad > 10_000,
        "{mutated_ok} / {mutated_bad}"
    );
}

/// Spool files damaged at random (segments and cursor): opening never panics or fails, the
/// records read back are a subset of those written, in order, and unchanged.
#[test]
fn damaged_spool_files_open_and_read_back_a_clean_subset() {
    let mut rng = Rng::new(0xda7a);
    for round in 0..60 {
        let dir = tempfile::tempdir().expect("temp dir");
        let written: Vec<RrdUpdate> = {
            // Small segments so damage hits several files.
            let (mut sp, _) = Spool::open(dir.path(), 64 << 10).expect("open a new spool");
            let n = 20 + rng.below(200);
            let updates: Vec<RrdUpdate> = (0..n).map(|_| random_update(&mut rng)).collect();
            for u in &updates {
                sp.append(u).expect("append");
            }
            if rng.chance(2) {
                sp.ack(rng.below(n) as u64).expect("ack");
            }
            sp.flush().expect("flush");
            updates
        };
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read spool dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        for _ in 0..1 + rng.below(3) {
            let path = rng.pick(&files).clone();
            let bytes = std::fs::read(&path).expect("read spool file");
            std::fs::write(&path, mutate(&mut rng, &bytes)).expect("write damage");
        }
        let (mut sp, recovery) = Spool::open(dir.path(), 64 << 10)
            .unwrap_or_else(|e| panic!("round {round}: damaged spool does not open: {e}"));
        let mut last = None;
        let mut read = 0;
        while let Some(rec) = sp.read_next().expect("read_next") {
            read += 1;
            assert!(
                read <= written.len(),
                "round {round}: more records than written"
            );
            assert!(
                last.is_none_or(|l| rec.seq > l),
                "round {round}: seqs out of order"
            );
            last = Some(rec.seq);
            let original = written
                .get(rec.seq as usize)
                .unwrap_or_else(|| panic!("round {round}: seq {} never written", rec.seq));
            assert_eq!(
                spool::encode(rec.seq, &rec.update),
                spool::encode(rec.seq, original),
                "round {round}: record {} changed",
                rec.seq
            );
        }
        assert!(recovery.records as usize <= written.len());
        // Still usable: a new append reads back.
        let extra = random_update(&mut rng);
        let seq = sp.append(&extra).expect("append after damage");
        assert!(last.is_none_or(|l| seq > l));
        let rec = sp.read_next().expect("read").expect("the new record");
        assert_eq!(rec.seq, seq);
    }
}

// ---------------------------------------------------------------- config

const SECRET: &str = "fuzz-Secret-Q7wL";

fn valid_config() -> String {
    format!(
        "node_name = \"n1\"\ndata_dir = \"/tmp/fuzz\"\nlisten = \"127.0.0.1:7071\"\n\
         seeds = [\"127.0.0.1:7072\"]\nbootstrap = true\nsecret = \"{SECRET}\"\ngroups = [0, 1]\n\
         [poller]\nfrequency = 10\ntimeout_ms = 1000\nretries = 1\n\
         [rrd]\nrrdcached = \"127.0.0.1:42217\"\n\
         [cluster]\nheartbeat_ms = 100\nlease_ms = 1500\n"
    )
}

/// Config text: junk and mutated valid configs never panic (parse and validate); every
/// refusal names the file and never echoes the secret.
#[test]
fn config_parsing_survives_toml_junk() {
    let path = Path::new("/etc/raftpoll/fuzz.toml");
    let base = valid_config();
    let load = |text: &str| Config::parse(text, path).and_then(|c| c.validate(path).map(|_| c));
    load(&base).expect("the base config is valid");
    // Edges no random mutation reaches (keys already in the base are duplicates there).
    for (timeout, retries) in [("9223372036854775807", "2"), ("4611686018427387904", "10")] {
        let text = base
            .replace("timeout_ms = 1000", &format!("timeout_ms = {timeout}"))
            .replace("retries = 1", &format!("retries = {retries}"));
        assert!(
            load(&text).is_err(),
            "accepted {timeout} ms × {retries} retries"
        );
    }
    let keys = [
        "frequency",
        "timeout_ms",
        "retries",
        "down_retry",
        "heartbeat_ms",
        "lease_ms",
        "node_timeout_ms",
        "spool_max_mb",
        "queue_capacity",
        "max_in_flight",
        "groups",
        "listen",
        "advertise",
        "seeds",
        "rrdcached",
        "log_format",
        "election_timeout_min_ms",
        "report_interval_ms",
        "discovery_frequency",
        "per_device_in_flight",
    ];
    let values = [
        "0",
        "1",
        "2",
        "10",
        "-1",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551616",
        "4294967296",
        "1e400",
        "nan",
        "inf",
        "\"\"",
        "\"x\"",
        "[]",
        "[1, \"a\"]",
        "{}",
        "true",
        "\"unix:\"",
        "\"[::1]:0\"",
        "1979-05-27",
        "'''",
        "\"\\u0000\"",
        "\"é\"",
    ];
    let tables = [
        "[poller]",
        "[rrd]",
        "[cluster]",
        "[[poller]]",
        "[poller.x]",
        "[]",
    ];
    let mut rng = Rng::new(0xc0f1);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..20_000 {
        let text = match i % 4 {
            0 => String::from_utf8_lossy(&mutate(&mut rng, base.as_bytes())).into_owned(),
            1 => String::from_utf8_lossy(&rng.bytes(200)).into_owned(),
            _ => {
                let mut t = base.clone();
                for _ in 0..1 + rng.below(3) {
                    let line = match rng.below(3) {
                        0 => format!("{} = {}\n", rng.pick(&keys), rng.pick(&values)),
                        1 => format!("{}\n", rng.pick(&tables)),
                        _ => format!("{} = {}", rng.pick(&keys), rng.pick(&values)),
                    };
                    // Into the table matching the key or anywhere: both must be handled.
                    let at = if rng.chance(2) {
                        t.len()
                    } else {
                        t.match_indices('\n')
                            .map(|(i, _)| i + 1)
                            .nth(rng.below(10))
                            .unwrap_or(0)
                    };
                    t.insert_str(at, &line);
                }
                t
            }
        };
        match load(&text) {
            Ok(c) => {
                accepted += 1;
                let p = &c.poller;
                assert!(p.frequency >= 1 && p.timeout_ms > 0, "{text}");
                assert!(
                    u128::from(p.timeout_ms) * u128::from(p.retries + 1)
                        < u128::from(p.frequency) * 1000,
                    "accepted a poll that cannot finish in its interval:\n{text}"
                );
            }
            Err(e) => {
                refused += 1;
                let msg = e.to_string();
                assert!(
                    msg.contains("fuzz.toml"),
                    "error does not name the file: {msg}"
                );
                assert!(!msg.contains(SECRET), "error shows the secret: {msg}");
            }
        }
    }
    assert!(
        accepted > 100 && refused > 5_000,
        "{accepted} accepted, {refused} refused"
    );
}
