//! Minimal BER reader/writer for the SNMP v1/v2c message subset the simulator speaks.
//!
//! Decoding never panics: every length is checked against the input and any
//! surprise returns `None`, which the caller turns into "drop the packet".

/// ASN.1 / SNMP tags used by the simulator.
pub mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    pub const IP_ADDRESS: u8 = 0x40;
    pub const COUNTER32: u8 = 0x41;
    pub const GAUGE32: u8 = 0x42;
    pub const TIMETICKS: u8 = 0x43;
    pub const OPAQUE: u8 = 0x44;
    pub const COUNTER64: u8 = 0x46;
    pub const NO_SUCH_OBJECT: u8 = 0x80;
    pub const NO_SUCH_INSTANCE: u8 = 0x81;
    pub const END_OF_MIB_VIEW: u8 = 0x82;
    pub const GET: u8 = 0xa0;
    pub const GET_NEXT: u8 = 0xa1;
    pub const RESPONSE: u8 = 0xa2;
    pub const SET: u8 = 0xa3;
    pub const GET_BULK: u8 = 0xa5;
}

/// Longest OID accepted in a request (RFC 2578 allows 128 sub-identifiers).
pub const MAX_OID_ARCS: usize = 128;

/// A cursor over BER input.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Offset of the cursor from the start of the input.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Reads one TLV; returns (tag, content, whole TLV bytes).
    pub fn tlv(&mut self) -> Option<(u8, &'a [u8], &'a [u8])> {
        let start = self.pos;
        let tag = *self.buf.get(self.pos)?;
        let first = *self.buf.get(self.pos + 1)?;
        let mut p = self.pos + 2;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            // Indefinite length (n = 0) is not allowed in SNMP; more than 4 bytes is absurd.
            if n == 0 || n > 4 {
                return None;
            }
            let bytes = self.buf.get(p..p + n)?;
            p += n;
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize)
        };
        let end = p.checked_add(len)?;
        let content = self.buf.get(p..end)?;
        self.pos = end;
        Some((tag, content, &self.buf[start..end]))
    }

    /// Reads one TLV and checks its tag; returns the content.
    pub fn expect(&mut self, want: u8) -> Option<&'a [u8]> {
        let (t, content, _) = self.tlv()?;
        (t == want).then_some(content)
    }
}

/// Decodes a signed INTEGER content (at most 8 bytes).
pub fn decode_int(content: &[u8]) -> Option<i64> {
    if content.is_empty() || content.len() > 8 {
        return None;
    }
    let neg = content[0] & 0x80 != 0;
    let init: i64 = if neg { -1 } else { 0 };
    Some(content.iter().fold(init, |acc, b| (acc << 8) | *b as i64))
}

/// Decodes OID content into `out` (cleared first). Rejects empty OIDs, sub-identifier
/// overflow beyond u32, truncated encodings and OIDs longer than [`MAX_OID_ARCS`].
pub fn decode_oid(content: &[u8], out: &mut Vec<u32>) -> Option<()> {
    out.clear();
    if content.is_empty() {
        return None;
    }
    let mut acc: u64 = 0;
    let mut first = true;
    for (i, b) in content.iter().enumerate() {
        // A leading 0x80 byte would be a non-minimal encoding.
        if acc == 0 && *b == 0x80 && (i == 0 || content[i - 1] & 0x80 == 0) {
            return None;
        }
        acc = (acc << 7) | (*b & 0x7f) as u64;
        if acc > u32::MAX as u64 + 80 {
            return None;
        }
        if b & 0x80 == 0 {
            if first {
                let (a, b) = match acc {
                    0..=39 => (0, acc),
                    40..=79 => (1, acc - 40),
                    _ => (2, acc - 80),
                };
                out.push(a);
                out.push(u32::try_from(b).ok()?);
                first = false;
            } else {
                out.push(u32::try_from(acc).ok()?);
            }
            if out.len() > MAX_OID_ARCS {
                return None;
            }
            acc = 0;
        }
    }
    // The last byte must terminate a sub-identifier.
    (content[content.len() - 1] & 0x80 == 0).then_some(())
}

/// Appends a BER length.
pub fn put_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=0xffff => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        _ => out.extend_from_slice(&[
            0x84,
            (len >> 24) as u8,
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
        ]),
    }
}

/// Size of a TLV whose content is `len` bytes long (one-byte tag).
pub fn tlv_size(len: usize) -> usize {
    1 + match len {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    } + len
}

/// Appends tag + length.
pub fn put_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    put_len(out, len);
}

/// Appends a signed integer TLV with minimal two's-complement content.
pub fn put_int(out: &mut Vec<u8>, tag: u8, v: i64) {
    let bytes = v.to_be_bytes();
    let mut i = 0;
    while i < 7 {
        let (b, next) = (bytes[i], bytes[i + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            i += 1;
        } else {
            break;
        }
    }
    put_header(out, tag, 8 - i);
    out.extend_from_slice(&bytes[i..]);
}

/// Appends an unsigned integer TLV (Counter32/Gauge32/TimeTicks/Counter64): minimal content,
/// with a leading zero byte when the top bit is set so it does not read as negative.
pub fn put_uint(out: &mut Vec<u8>, tag: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let mut i = 0;
    while i < 7 && bytes[i] == 0 {
        i += 1;
    }
    if bytes[i] & 0x80 != 0 {
        put_header(out, tag, 9 - i);
        out.push(0);
    } else {
        put_header(out, tag, 8 - i);
    }
    out.extend_from_slice(&bytes[i..]);
}

/// Appends an OID TLV. Returns `None` if the OID cannot be encoded (fewer than two arcs,
/// first arc > 2, or second arc out of range).
pub fn put_oid(out: &mut Vec<u8>, arcs: &[u32]) -> Option<()> {
    let (a, b) = (*arcs.first()?, *arcs.get(1)?);
    if a > 2 || (a < 2 && b >= 40) {
        return None;
    }
    let mut content = Vec::with_capacity(arcs.len() + 4);
    put_subid(&mut content, a as u64 * 40 + b as u64);
    for arc in &arcs[2..] {
        put_subid(&mut content, *arc as u64);
    }
    put_header(out, tag::OID, content.len());
    out.extend_from_slice(&content);
    Some(())
}

fn put_subid(out: &mut Vec<u8>, v: u64) {
    // 63 is the largest multiple of 7 below 64.
    let mut shift = 63;
    while shift > 0 && (v >> shift) == 0 {
        shift -= 7;
    }
    while shift > 0 {
        out.push(0x80 | ((v >> shift) & 0x7f) as u8);
        shift -= 7;
    }
    out.push((v & 0x7f) as u8);
}

/// Builds an SNMP v1/v2c request (GET, GETNEXT or GETBULK) with NULL values. `a` and `b`
/// are error-status/error-index, or non-repeaters/max-repetitions for GETBULK. Used by
/// tests and load generators; returns `None` if an OID cannot be encoded.
pub fn encode_request(
    version: i64,
    community: &[u8],
    pdu_tag: u8,
    request_id: i32,
    a: i64,
    b: i64,
    oids: &[&[u32]],
) -> Option<Vec<u8>> {
    let mut vbs = Vec::new();
    for oid in oids {
        let mut vb = Vec::new();
        put_oid(&mut vb, oid)?;
        vb.extend_from_slice(&[tag::NULL, 0]);
        put_header(&mut vbs, tag::SEQUENCE, vb.len());
        vbs.extend_from_slice(&vb);
    }
    let mut pdu = Vec::new();
    put_int(&mut pdu, tag::INTEGER, request_id as i64);
    put_int(&mut pdu, tag::INTEGER, a);
    put_int(&mut pdu, tag::INTEGER, b);
    put_header(&mut pdu, tag::SEQUENCE, vbs.len());
    pdu.extend_from_slice(&vbs);
    let mut msg = Vec::new();
    put_int(&mut msg, tag::INTEGER, version);
    put_header(&mut msg, tag::OCTET_STRING, community.len());
    msg.extend_from_slice(community);
    put_header(&mut msg, pdu_tag, pdu.len());
    msg.extend_from_slice(&pdu);
    let mut out = Vec::with_capacity(msg.len() + 4);
    put_header(&mut out, tag::SEQUENCE, msg.len());
    out.extend_from_slice(&msg);
    Some(out)
}

/// One decoded variable binding of a response: OID arcs, value tag, value content.
pub type DecodedVarBind = (Vec<u32>, u8, Vec<u8>);

/// A decoded response: (request-id, error-status, error-index, varbinds).
pub type DecodedResponse = (i64, i64, i64, Vec<DecodedVarBind>);

/// Decodes an SNMP v1/v2c Response message (for tests and load generators).
pub fn decode_response(msg: &[u8]) -> Option<DecodedResponse> {
    let mut top = Reader::new(msg);
    let mut m = Reader::new(top.expect(tag::SEQUENCE)?);
    decode_int(m.expect(tag::INTEGER)?)?;
    m.expect(tag::OCTET_STRING)?;
    let mut pdu = Reader::new(m.expect(tag::RESPONSE)?);
    let rid = decode_int(pdu.expect(tag::INTEGER)?)?;
    let status = decode_int(pdu.expect(tag::INTEGER)?)?;
    let index = decode_int(pdu.expect(tag::INTEGER)?)?;
    let mut list = Reader::new(pdu.expect(tag::SEQUENCE)?);
    let mut vbs = Vec::new();
    while !list.is_empty() {
        let mut vb = Reader::new(list.expect(tag::SEQUENCE)?);
        let mut arcs = Vec::new();
        decode_oid(vb.expect(tag::OID)?, &mut arcs)?;
        let (t, content, _) = vb.tlv()?;
        vbs.push((arcs, t, content.to_vec()));
    }
    Some((rid, status, index, vbs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_roundtrip() {
        for arcs in [
            vec![1u32, 3, 6, 1, 2, 1, 1, 1, 0],
            vec![1, 3, 6, 1, 4, 1, 9, 127, 128, 16383, 16384, u32::MAX],
            vec![2, 999, 3],
            vec![0, 0],
        ] {
            let mut out = Vec::new();
            put_oid(&mut out, &arcs).unwrap();
            let mut r = Reader::new(&out);
            let content = r.expect(tag::OID).unwrap();
            let mut back = Vec::new();
            decode_oid(content, &mut back).unwrap();
            assert_eq!(back, arcs);
        }
    }

    #[test]
    fn integers_are_minimal() {
        let cases: [(i64, &[u8]); 6] = [
            (0, &[2, 1, 0]),
            (127, &[2, 1, 0x7f]),
            (128, &[2, 2, 0, 0x80]),
            (-1, &[2, 1, 0xff]),
            (-129, &[2, 2, 0xff, 0x7f]),
            (i32::MAX as i64, &[2, 4, 0x7f, 0xff, 0xff, 0xff]),
        ];
        for (v, want) in cases {
            let mut out = Vec::new();
            put_int(&mut out, tag::INTEGER, v);
            assert_eq!(out, want, "{v}");
            assert_eq!(decode_int(&out[2..]), Some(v));
        }
        let mut out = Vec::new();
        put_uint(&mut out, tag::COUNTER32, u32::MAX as u64);
        assert_eq!(out, [0x41, 5, 0, 0xff, 0xff, 0xff, 0xff]);
        out.clear();
        put_uint(&mut out, tag::COUNTER64, u64::MAX);
        assert_eq!(out.len(), 11);
        out.clear();
        put_uint(&mut out, tag::GAUGE32, 0);
        assert_eq!(out, [0x42, 1, 0]);
    }

    #[test]
    fn long_lengths() {
        for len in [0usize, 127, 128, 255, 256, 65535, 70000] {
            let mut out = Vec::new();
            put_header(&mut out, tag::OCTET_STRING, len);
            assert_eq!(out.len() + len, tlv_size(len));
            out.resize(out.len() + len, 7);
            let mut r = Reader::new(&out);
            assert_eq!(r.expect(tag::OCTET_STRING).map(|c| c.len()), Some(len));
        }
    }

    #[test]
    fn bad_input_is_rejected() {
        let mut v = Vec::new();
        assert!(Reader::new(&[0x30, 0x80, 0, 0]).tlv().is_none());
        assert!(Reader::new(&[0x30, 0x05, 1]).tlv().is_none());
        assert!(Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1]).tlv().is_none());
        assert!(decode_oid(&[], &mut v).is_none());
        assert!(decode_oid(&[0x2b, 0x86], &mut v).is_none());
        assert!(decode_oid(&[0x2b, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut v).is_none());
        assert!(decode_int(&[]).is_none());
    }
}
