//! Loads snmpsim `.snmprec` recordings into a sorted, pre-encoded OID table.
//!
//! Line format: `OID|TAG[:variation]|VALUE`. Static values are BER-encoded once at load
//! time; `numeric` variations become [`Moving`] values computed from elapsed time at
//! request time.

use std::path::Path;

use super::SimError;
use super::ber::{self, tag};

/// sysUpTime.0: ticks at 100/s even when the recording holds a static value.
const SYS_UPTIME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];

/// A value that moves linearly with time: `initial + rate × seconds since start`,
/// wrapped or clamped to `[min, max]` (snmpsim's `numeric` variation without jitter).
#[derive(Debug, Clone, PartialEq)]
pub struct Moving {
    pub tag: u8,
    pub initial: i128,
    /// Units per second.
    pub rate: f64,
    pub min: i128,
    pub max: i128,
    pub wrap: bool,
}

impl Moving {
    /// The value `secs` seconds after the simulator started.
    pub fn at(&self, secs: f64) -> i128 {
        let delta = (self.rate * secs).floor();
        // Clamp the float before converting: a huge rate must not overflow i128.
        let delta = delta.clamp(-1e30, 1e30) as i128;
        let v = self.initial.saturating_add(delta);
        if v > self.max {
            if self.wrap {
                let span = self.max - self.min + 1;
                self.min + (v - self.min).rem_euclid(span)
            } else {
                self.max
            }
        } else if v < self.min {
            self.min
        } else {
            v
        }
    }

    /// Appends the BER encoding of the value at `secs`.
    pub fn encode_at(&self, secs: f64, out: &mut Vec<u8>) {
        let v = self.at(secs);
        if self.tag == tag::INTEGER {
            ber::put_int(
                out,
                self.tag,
                v.clamp(i32::MIN as i128, i32::MAX as i128) as i64,
            );
        } else {
            ber::put_uint(out, self.tag, v.clamp(0, u64::MAX as i128) as u64);
        }
    }
}

/// The value of one recorded object.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Pre-encoded value TLV.
    Static(Box<[u8]>),
    Moving(Moving),
}

/// One recorded object.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub oid: Box<[u32]>,
    /// Pre-encoded OID TLV.
    pub oid_tlv: Box<[u8]>,
    pub value: Value,
    /// Counter64 objects are invisible to SNMPv1 requests.
    pub is_counter64: bool,
}

/// A recording: objects sorted by OID, duplicates removed (first wins).
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub entries: Vec<Entry>,
    /// Lines that could not be used (bad OID, unknown tag, unparsable value).
    pub skipped: usize,
}

/// Options applied while loading.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// When set, every Counter32/Counter64 object (static or `numeric`) moves at this rate.
    pub counter_rate: Option<f64>,
}

impl Recording {
    /// Reads a `.snmprec` file; `.gz` files are decompressed with the system `gzip`.
    pub fn load(path: &Path, opts: LoadOptions) -> Result<Self, SimError> {
        let io = |source| SimError::Recording {
            path: path.display().to_string(),
            source,
        };
        let bytes = if path.extension().is_some_and(|e| e == "gz") {
            let out = std::process::Command::new("gzip")
                .arg("-dc")
                .arg(path)
                .output()
                .map_err(io)?;
            if !out.status.success() {
                return Err(io(std::io::Error::other("gzip -dc failed")));
            }
            out.stdout
        } else {
            std::fs::read(path).map_err(io)?
        };
        Ok(Self::parse(&bytes, opts))
    }

    /// Parses recording text. Never fails: unusable lines are counted in `skipped`.
    pub fn parse(text: &[u8], opts: LoadOptions) -> Self {
        let mut entries = Vec::new();
        let mut skipped = 0;
        for line in text.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            match parse_line(line, opts) {
                Some(e) => entries.push(e),
                None => skipped += 1,
            }
        }
        entries.sort_by(|a: &Entry, b: &Entry| a.oid.cmp(&b.oid));
        entries.dedup_by(|later, first| later.oid == first.oid);
        Self { entries, skipped }
    }
}

fn parse_line(line: &[u8], opts: LoadOptions) -> Option<Entry> {
    let mut parts = line.splitn(3, |b| *b == b'|');
    let oid_text = std::str::from_utf8(parts.next()?).ok()?;
    let tag_text = std::str::from_utf8(parts.next()?).ok()?;
    let value = parts.next()?;

    let oid = parse_oid(oid_text.trim())?;
    let mut oid_tlv = Vec::new();
    ber::put_oid(&mut oid_tlv, &oid)?;

    let (tag_part, variation) = match tag_text.split_once(':') {
        Some((t, v)) => (t, Some(v)),
        None => (tag_text, None),
    };
    let (tag_num, hex) = match tag_part.strip_suffix('x') {
        Some(t) => (t, true),
        None => (tag_part, false),
    };
    let snmp_tag = map_tag(tag_num.trim().parse().ok()?)?;

    let value = match variation {
        Some("numeric") => {
            let params = parse_params(value)?;
            numeric(snmp_tag, &params)
                .map(Value::Moving)
                .or_else(|| static_from_params(snmp_tag, &params))?
        }
        // Other variation modules: serve their `value=`/`initial=` statically.
        Some(_) => static_from_params(snmp_tag, &parse_params(value)?)?,
        None => {
            let raw = if hex {
                decode_hex(value)?
            } else {
                value.to_vec()
            };
            Value::Static(encode_static(snmp_tag, &raw, hex)?.into())
        }
    };
    let value = adjust(&oid, snmp_tag, value, opts);
    Some(Entry {
        oid: oid.into(),
        oid_tlv: oid_tlv.into(),
        value,
        is_counter64: snmp_tag == tag::COUNTER64,
    })
}

/// Applies `--rate` to counters and makes a static sysUpTime tick.
fn adjust(oid: &[u32], snmp_tag: u8, value: Value, opts: LoadOptions) -> Value {
    let is_counter = matches!(snmp_tag, tag::COUNTER32 | tag::COUNTER64);
    let rate = match (opts.counter_rate, &value) {
        (Some(r), _) if is_counter => r,
        (_, Value::Static(_)) if oid == SYS_UPTIME && snmp_tag == tag::TIMETICKS => 100.0,
        _ => return value,
    };
    match value {
        Value::Moving(mut m) => {
            m.rate = rate;
            Value::Moving(m)
        }
        Value::Static(tlv) => {
            let Some(initial) = static_uint(&tlv) else {
                return Value::Static(tlv);
            };
            Value::Moving(Moving {
                tag: snmp_tag,
                initial: initial as i128,
                rate,
                min: 0,
                max: type_max(snmp_tag),
                wrap: is_counter,
            })
        }
    }
}

fn static_uint(tlv: &[u8]) -> Option<u64> {
    let content = ber::Reader::new(tlv).tlv()?.1;
    if content.len() > 9 {
        return None;
    }
    Some(content.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64))
}

fn type_max(snmp_tag: u8) -> i128 {
    match snmp_tag {
        tag::COUNTER64 => u64::MAX as i128,
        tag::INTEGER => i32::MAX as i128,
        _ => u32::MAX as i128,
    }
}

/// Builds a [`Moving`] from `numeric` parameters. Returns `None` for non-linear
/// `function=` settings (served statically instead).
fn numeric(snmp_tag: u8, params: &[(String, String)]) -> Option<Moving> {
    if !matches!(
        snmp_tag,
        tag::INTEGER | tag::COUNTER32 | tag::GAUGE32 | tag::TIMETICKS | tag::COUNTER64
    ) {
        return None;
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let num = |k: &str| get(k).and_then(|v| v.trim().parse::<f64>().ok());
    if get("function").is_some() {
        return None;
    }
    let int = |k: &str| num(k).map(|v| v.clamp(-1e30, 1e30) as i128);
    let default_min = if snmp_tag == tag::INTEGER {
        i32::MIN as i128
    } else {
        0
    };
    let min = int("min").unwrap_or(default_min);
    let max = int("max")
        .unwrap_or(type_max(snmp_tag))
        .min(type_max(snmp_tag));
    let initial = int("initial").unwrap_or(min.max(0)) + int("offset").unwrap_or(0);
    let rate = num("rate").unwrap_or(1.0) * num("scale").unwrap_or(1.0);
    // Counters always wrap (that is what a counter does); others only with `wrap=1`.
    let wrap = matches!(snmp_tag, tag::COUNTER32 | tag::COUNTER64)
        || num("wrap").is_some_and(|w| w != 0.0);
    (min <= max).then_some(Moving {
        tag: snmp_tag,
        initial,
        rate,
        min,
        max,
        wrap,
    })
}

fn static_from_params(snmp_tag: u8, params: &[(String, String)]) -> Option<Value> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let raw = get("value")
        .or_else(|| get("initial"))
        .or_else(|| get("min"))
        .unwrap_or(if snmp_tag == tag::OCTET_STRING {
            ""
        } else {
            "0"
        });
    // `initial=1.5` style numbers: keep the integer part.
    let raw = match snmp_tag {
        tag::OCTET_STRING | tag::OID | tag::IP_ADDRESS | tag::OPAQUE => raw.to_string(),
        _ => raw.split('.').next().unwrap_or("0").to_string(),
    };
    Some(Value::Static(
        encode_static(snmp_tag, raw.as_bytes(), false)?.into(),
    ))
}

fn parse_params(value: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(value).ok()?;
    Some(
        text.split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.trim().to_string(), v.to_string()))
            })
            .collect(),
    )
}

/// Maps snmprec tag numbers to BER tags.
fn map_tag(n: u32) -> Option<u8> {
    Some(match n {
        2 => tag::INTEGER,
        4 => tag::OCTET_STRING,
        5 => tag::NULL,
        6 => tag::OID,
        64 => tag::IP_ADDRESS,
        65 => tag::COUNTER32,
        66 => tag::GAUGE32,
        67 => tag::TIMETICKS,
        68 => tag::OPAQUE,
        70 => tag::COUNTER64,
        _ => return None,
    })
}

/// Parses a dotted OID (leading dot allowed).
pub fn parse_oid(text: &str) -> Option<Vec<u32>> {
    let text = text.strip_prefix('.').unwrap_or(text);
    let arcs: Option<Vec<u32>> = text.split('.').map(|a| a.parse().ok()).collect();
    arcs.filter(|a| a.len() >= 2 && a.len() <= ber::MAX_OID_ARCS)
}

fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    let text: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

/// Encodes a static value TLV from its snmprec text (or decoded hex bytes).
fn encode_static(snmp_tag: u8, raw: &[u8], hex: bool) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let text = || std::str::from_utf8(raw).ok().map(str::trim);
    match snmp_tag {
        tag::OCTET_STRING | tag::OPAQUE => {
            ber::put_header(&mut out, snmp_tag, raw.len());
            out.extend_from_slice(raw);
        }
        tag::NULL => out.extend_from_slice(&[tag::NULL, 0]),
        tag::INTEGER => {
            let v: i64 = text()?.parse().ok()?;
            ber::put_int(
                &mut out,
                snmp_tag,
                v.clamp(i32::MIN as i64, i32::MAX as i64),
            );
        }
        tag::COUNTER32 | tag::GAUGE32 | tag::TIMETICKS => {
            let v: u64 = text()?.parse().ok()?;
            ber::put_uint(&mut out, snmp_tag, v.min(u32::MAX as u64));
        }
        tag::COUNTER64 => ber::put_uint(&mut out, snmp_tag, text()?.parse().ok()?),
        tag::OID => ber::put_oid(&mut out, &parse_oid(text()?)?)?,
        tag::IP_ADDRESS => {
            // Dotted quad text, or the four raw octets (hex or, as some recordings do, bytes).
            let octets = match text().and_then(|t| t.parse::<std::net::Ipv4Addr>().ok()) {
                Some(ip) if !hex => ip.octets().to_vec(),
                _ if raw.len() == 4 => raw.to_vec(),
                _ => return None,
            };
            ber::put_header(&mut out, snmp_tag, 4);
            out.extend_from_slice(&octets);
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Entry {
        let r = Recording::parse(line.as_bytes(), LoadOptions::default());
        assert_eq!(r.skipped, 0, "{line}");
        r.entries.into_iter().next().unwrap()
    }

    fn tlv(e: &Entry) -> Vec<u8> {
        match &e.value {
            Value::Static(t) => t.to_vec(),
            Value::Moving(m) => panic!("moving {m:?}"),
        }
    }

    #[test]
    fn static_values() {
        assert_eq!(tlv(&one("1.3.6.1.2.1.1.5.0|4|abc")), b"\x04\x03abc");
        assert_eq!(tlv(&one("1.3.6.1.2.1.1.5.0|4|")), b"\x04\x00");
        assert_eq!(tlv(&one("1.3.6.1.2.1.1.5.0|4x|00ff")), b"\x04\x02\x00\xff");
        assert_eq!(tlv(&one("1.3.6.1|2|-1")), [2, 1, 0xff]);
        assert_eq!(tlv(&one("1.3.6.1|5|")), [5, 0]);
        assert_eq!(tlv(&one("1.3.6.1|6|1.3.6.1")), [6, 3, 0x2b, 6, 1]);
        assert_eq!(tlv(&one("1.3.6.1|64|10.0.0.1")), [0x40, 4, 10, 0, 0, 1]);
        assert_eq!(tlv(&one("1.3.6.1|64x|0a000001")), [0x40, 4, 10, 0, 0, 1]);
        assert_eq!(tlv(&one("1.3.6.1|64|J}M}")), [0x40, 4, 74, 125, 77, 125]);
        assert_eq!(
            tlv(&one("1.3.6.1|66|4294967295")),
            [0x42, 5, 0, 255, 255, 255, 255]
        );
        assert_eq!(tlv(&one("1.3.6.1|68x|0102")), [0x44, 2, 1, 2]);
        assert!(one("1.3.6.1|70|5").is_counter64);
        assert_eq!(
            tlv(&one("1.3.6.1.2.1.1.5.0|4:writecache|value=zeus")),
            b"\x04\x04zeus"
        );
        // The value keeps any further '|' characters.
        assert_eq!(tlv(&one("1.3.6.1|4|a|b")), b"\x04\x03a|b");
    }

    #[test]
    fn bad_lines_are_skipped_and_order_is_fixed() {
        let text = "1.3.6.1.2|2|1\nbad\n1.3.6.1.10|99|1\n1.3.6.1.1|2|x\n1.3.6.1.1|2|2\n\
                    1.3.6.1.2|2|9\n# comment\n";
        let r = Recording::parse(text.as_bytes(), LoadOptions::default());
        assert_eq!(r.skipped, 3);
        let oids: Vec<_> = r.entries.iter().map(|e| e.oid.to_vec()).collect();
        assert_eq!(oids, vec![vec![1, 3, 6, 1, 1], vec![1, 3, 6, 1, 2]]);
        assert_eq!(tlv(&r.entries[1]), [2, 1, 1]);
    }

    #[test]
    fn numeric_counters_move_and_wrap() {
        let e = one("1.3.6.1|65:numeric|rate=1000,initial=4294967000,wrap=1");
        let Value::Moving(m) = e.value else { panic!() };
        assert_eq!(m.at(0.0), 4294967000);
        assert_eq!(m.at(0.2), 4294967200);
        assert_eq!(m.at(1.0), 4294968000 - 4294967296);
        let e = one("1.3.6.1|70:numeric|rate=10,initial=4295967296");
        let Value::Moving(m) = e.value else { panic!() };
        assert_eq!(m.at(3.0), 4295967326);
        let mut out = Vec::new();
        m.encode_at(3.0, &mut out);
        assert_eq!(out, [0x46, 5, 1, 0, 0x0f, 0x42, 0x5e]);
        // Gauge clamps at max unless wrap is asked for.
        let e = one("1.3.6.1|66:numeric|rate=10,initial=5,max=20");
        let Value::Moving(m) = e.value else { panic!() };
        assert_eq!(m.at(100.0), 20);
        // Non-linear functions are served statically.
        let e = one("1.3.6.1|65:numeric|scale=0.4,offset=1,function=cos,cumulative=1");
        assert!(matches!(e.value, Value::Static(_)));
    }

    #[test]
    fn rate_override_and_uptime() {
        let opts = LoadOptions {
            counter_rate: Some(500.0),
        };
        let text = "1.3.6.1.2.1.1.3.0|67|1000\n1.3.6.1.2.1.2.2.1.10.1|65|7\n\
                    1.3.6.1.2.1.2.2.1.11.1|65:numeric|rate=3,initial=1\n1.3.6.1.2.1.2.2.1.5.1|66|9\n";
        let r = Recording::parse(text.as_bytes(), opts);
        let rates: Vec<_> = r
            .entries
            .iter()
            .map(|e| match &e.value {
                Value::Moving(m) => Some((m.initial, m.rate)),
                Value::Static(_) => None,
            })
            .collect();
        assert_eq!(
            rates,
            vec![
                Some((1000, 100.0)),
                None,
                Some((7, 500.0)),
                Some((1, 500.0))
            ]
        );
    }
}
