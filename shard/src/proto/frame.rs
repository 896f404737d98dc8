//! Framing: the fixed header and the attribute body (docs/protocol.md,
//! "Framing" and "Attributes").
//!
//! The decoder works on a byte slice the caller has read from a socket. It
//! never allocates more than a constant factor of the frame length, and the
//! frame length is checked against the limit before any body byte is looked
//! at, so a peer cannot make the server allocate beyond the frame limit.

use crate::value::{type_name, KvList, Value, TAG_BIN, TAG_INT, TAG_LIST, TAG_STR};
use bytemuck::{Pod, Zeroable};

/// Protocol version this codec speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes in the fixed header.
pub const HEADER_LEN: usize = 12;
/// Default largest frame (header included) a peer may send.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// Hard upper bound for any configured frame limit.
pub const ABSOLUTE_MAX_FRAME: usize = 16 << 20;
/// Lists may nest up to `MAX_LIST_DEPTH - 1` levels (an attribute's list
/// is level 1); a deeper list is a malformed body.
pub const MAX_LIST_DEPTH: usize = 8;
/// Longest key of a list entry (its length is a u16 on the wire).
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// The fixed header, as it lies on the wire (all fields little-endian).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq, Eq)]
pub struct Header {
    /// Whole frame length in bytes, header included.
    pub length: [u8; 4],
    /// Message type (see `msg`).
    pub msg_type: [u8; 2],
    /// Protocol version; 1.
    pub version: u8,
    /// Reserved for later use; 0.
    pub flags: u8,
    /// Request reference id, echoed in the answer; 0 on unsolicited events.
    pub ref_id: [u8; 4],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_LEN);

impl Header {
    pub fn new(length: u32, msg_type: u16, ref_id: u32) -> Self {
        Header {
            length: length.to_le_bytes(),
            msg_type: msg_type.to_le_bytes(),
            version: PROTOCOL_VERSION,
            flags: 0,
            ref_id: ref_id.to_le_bytes(),
        }
    }
    pub fn length(&self) -> u32 {
        u32::from_le_bytes(self.length)
    }
    pub fn msg_type(&self) -> u16 {
        u16::from_le_bytes(self.msg_type)
    }
    pub fn ref_id(&self) -> u32 {
        u32::from_le_bytes(self.ref_id)
    }
}

/// A frame problem after which the byte stream cannot be trusted: the
/// server answers with an EventError (reference id 0) and closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FatalFrameError {
    /// The length field is smaller than the header.
    LengthTooSmall(u32),
    /// The length field is larger than the frame limit.
    TooLarge { length: u32, max: usize },
    /// The version byte is not one this server speaks.
    UnsupportedVersion(u8),
}

impl std::fmt::Display for FatalFrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FatalFrameError::LengthTooSmall(n) => {
                write!(f, "frame length {n} is smaller than the {HEADER_LEN}-byte header")
            }
            FatalFrameError::TooLarge { length, max } => {
                write!(f, "frame length {length} exceeds the limit of {max} bytes")
            }
            FatalFrameError::UnsupportedVersion(v) => {
                write!(f, "protocol version {v} is not supported (this server speaks {PROTOCOL_VERSION})")
            }
        }
    }
}

/// A body that does not parse. The frame boundary is still known, so the
/// server answers this one frame with an EventError and goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyError(pub String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One attribute: an id and a typed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub id: u16,
    pub value: Value,
}

/// A whole message: type, reference id and attributes in wire order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub msg_type: u16,
    pub ref_id: u32,
    pub attrs: Vec<Attr>,
    /// Attributes already encoded (see [`encode_attr`]), sent after
    /// `attrs`. Only the server's own answers use it, to pass on what
    /// another shard encoded without rebuilding it; a decoded frame has
    /// every attribute in `attrs` and nothing here.
    pub raw: Vec<u8>,
}

impl Frame {
    pub fn new(msg_type: u16, ref_id: u32) -> Self {
        Frame { msg_type, ref_id, attrs: Vec::new(), raw: Vec::new() }
    }

    /// Adds an attribute (builder style).
    pub fn with(mut self, id: u16, value: impl Into<Value>) -> Self {
        self.attrs.push(Attr { id, value: value.into() });
        self
    }

    pub fn push(&mut self, id: u16, value: impl Into<Value>) {
        self.attrs.push(Attr { id, value: value.into() });
    }

    /// First attribute with this id.
    pub fn get(&self, id: u16) -> Option<&Value> {
        self.attrs.iter().find(|a| a.id == id).map(|a| &a.value)
    }

    pub fn get_str(&self, id: u16) -> Option<&str> {
        self.get(id).and_then(Value::as_str)
    }

    pub fn get_int(&self, id: u16) -> Option<i64> {
        self.get(id).and_then(Value::as_int)
    }

    pub fn get_list(&self, id: u16) -> Option<&KvList> {
        self.get(id).and_then(Value::as_list)
    }

    /// Every list-valued attribute `id`, in order, pre-encoded ones
    /// ([`Frame::raw`]) included: how a client would read the frame.
    pub fn lists(&self, id: u16) -> Vec<KvList> {
        let raw = decode_body(&self.raw).expect("pre-encoded attributes decode");
        self.attrs.iter().chain(raw.iter()).filter(|a| a.id == id).filter_map(|a| a.value.as_list().cloned()).collect()
    }

    /// Encodes the frame, appending to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        for a in &self.attrs {
            encode_attr(a.id, &a.value, out);
        }
        out.extend_from_slice(&self.raw);
        let length = (out.len() - start) as u32;
        let header = Header::new(length, self.msg_type, self.ref_id);
        out[start..start + HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&header));
    }

    /// Encodes the frame with one more attribute after its own (the
    /// connection stamps a session's frames with its SessionId this way,
    /// without copying the frame).
    pub fn encode_into_with(&self, out: &mut Vec<u8>, id: u16, extra: &Value) {
        let start = out.len();
        self.encode_into(out);
        encode_attr(id, extra, out);
        let length = (out.len() - start) as u32;
        let header = Header::new(length, self.msg_type, self.ref_id);
        out[start..start + HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&header));
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }
}

/// Encodes one attribute (id, type tag, length, payload), appending to `out`.
pub fn encode_attr(id: u16, v: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(&id.to_le_bytes());
    encode_value(v, out);
}

/// Encodes `type tag, u32 length, payload`.
fn encode_value(v: &Value, out: &mut Vec<u8>) {
    out.push(v.tag());
    let len_at = out.len();
    out.extend_from_slice(&[0u8; 4]);
    match v {
        Value::Int(i) => out.extend_from_slice(&i.to_le_bytes()),
        Value::Str(s) => out.extend_from_slice(s.as_bytes()),
        Value::Bin(b) => out.extend_from_slice(b),
        Value::List(l) => encode_list_entries(l, out),
    }
    let len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
}

fn encode_list_entries(l: &KvList, out: &mut Vec<u8>) {
    for (k, v) in l.iter() {
        // Keys decoded from the wire always fit; a longer key can only come
        // from a caller building a list by hand.
        assert!(k.len() <= MAX_KEY_LEN, "list key of {} bytes exceeds {MAX_KEY_LEN}", k.len());
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        encode_value(v, out);
    }
}

/// Bytes [`encode_list`] would write, computed without encoding.
pub fn encoded_list_len(l: &KvList) -> usize {
    l.iter().map(|(k, v)| 2 + k.len() + encoded_value_len(v)).sum()
}

/// Bytes a value takes: tag, u32 length, payload.
fn encoded_value_len(v: &Value) -> usize {
    5 + match v {
        Value::Int(_) => 8,
        Value::Str(s) => s.len(),
        Value::Bin(b) => b.len(),
        Value::List(l) => encoded_list_len(l),
    }
}

/// Encodes a list's entries alone (no tag or length): the storage form of
/// properties.
pub fn encode_list(l: &KvList) -> Vec<u8> {
    let mut out = Vec::new();
    encode_list_entries(l, &mut out);
    out
}

/// Decodes what [`encode_list`] wrote.
pub fn decode_list(bytes: &[u8]) -> Result<KvList, BodyError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    read_list_entries(&mut r, 0)
}

/// The encoded value of `key` in a list's entries as [`encode_list`] wrote
/// them: its type tag and payload, without decoding anything else (keys
/// are compared as bytes). `None` when the key is absent or the bytes end
/// early.
pub fn find_in_list<'a>(bytes: &'a [u8], key: &str) -> Option<(u8, &'a [u8])> {
    let mut r = Reader { buf: bytes, pos: 0 };
    while !r.at_end() {
        let klen = r.u16().ok()? as usize;
        let k = r.take(klen).ok()?;
        let tag = r.u8().ok()?;
        let len = r.u32().ok()? as usize;
        let payload = r.take(len).ok()?;
        if k == key.as_bytes() {
            return Some((tag, payload));
        }
    }
    None
}

/// Decodes one value of a list's entries from its tag and payload (as
/// [`find_in_list`] gives them), with the checks of [`decode_list`].
pub fn decode_list_value(tag: u8, payload: &[u8]) -> Result<Value, BodyError> {
    value_of(tag, payload, 0)
}

/// A whole frame at the start of a buffer: its header, its body, and its
/// total length in bytes.
pub type SplitFrame<'a> = (Header, &'a [u8], usize);

/// Looks at the start of `buf`. `Ok(None)`: not a whole frame yet.
/// `Ok(Some((header, body, total)))`: a whole frame of `total` bytes.
/// `Err`: the stream is broken (the caller closes the connection).
pub fn split_frame(buf: &[u8], max_frame: usize) -> Result<Option<SplitFrame<'_>>, FatalFrameError> {
    if buf.len() < HEADER_LEN {
        // Check the length prefix as soon as it is readable, so an oversized
        // length is refused before the peer sends the rest.
        if buf.len() >= 4 {
            check_length(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]), max_frame)?;
        }
        return Ok(None);
    }
    let header: Header = bytemuck::pod_read_unaligned(&buf[..HEADER_LEN]);
    let length = header.length();
    check_length(length, max_frame)?;
    if header.version != PROTOCOL_VERSION {
        return Err(FatalFrameError::UnsupportedVersion(header.version));
    }
    let total = length as usize;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((header, &buf[HEADER_LEN..total], total)))
}

fn check_length(length: u32, max_frame: usize) -> Result<(), FatalFrameError> {
    if (length as usize) < HEADER_LEN {
        return Err(FatalFrameError::LengthTooSmall(length));
    }
    if length as usize > max_frame.min(ABSOLUTE_MAX_FRAME) {
        return Err(FatalFrameError::TooLarge { length, max: max_frame.min(ABSOLUTE_MAX_FRAME) });
    }
    Ok(())
}

/// Decodes a body into attributes.
pub fn decode_body(body: &[u8]) -> Result<Vec<Attr>, BodyError> {
    let mut r = Reader { buf: body, pos: 0 };
    let mut attrs = Vec::new();
    while !r.at_end() {
        let id = r.u16()?;
        let value = read_value(&mut r, 0)?;
        attrs.push(Attr { id, value });
    }
    Ok(attrs)
}

/// Decodes a whole frame held in `buf` (exactly one frame). Used by clients
/// and tests; the server uses [`split_frame`] and [`decode_body`].
pub fn decode_frame(buf: &[u8], max_frame: usize) -> Result<Frame, String> {
    match split_frame(buf, max_frame) {
        Err(e) => Err(e.to_string()),
        Ok(None) => Err("incomplete frame".into()),
        Ok(Some((h, body, total))) => {
            if total != buf.len() {
                return Err("trailing bytes after frame".into());
            }
            let attrs = decode_body(body).map_err(|e| e.0)?;
            Ok(Frame { msg_type: h.msg_type(), ref_id: h.ref_id(), attrs, raw: Vec::new() })
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], BodyError> {
        if self.buf.len() - self.pos < n {
            return Err(BodyError(format!(
                "truncated body: need {n} bytes at offset {}, {} left",
                self.pos,
                self.buf.len() - self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, BodyError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, BodyError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, BodyError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, BodyError> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| BodyError(format!("{what} is not valid UTF-8")))
}

fn read_value(r: &mut Reader<'_>, depth: usize) -> Result<Value, BodyError> {
    let tag = r.u8()?;
    let len = r.u32()? as usize;
    let payload = r.take(len)?;
    value_of(tag, payload, depth)
}

/// The value a type tag and its payload encode (`depth`: of the list the
/// value is in).
#[inline]
fn value_of(tag: u8, payload: &[u8], depth: usize) -> Result<Value, BodyError> {
    let len = payload.len();
    match tag {
        TAG_INT => {
            let b: [u8; 8] =
                payload.try_into().map_err(|_| BodyError(format!("int value has {len} bytes, expected 8")))?;
            Ok(Value::Int(i64::from_le_bytes(b)))
        }
        TAG_STR => Ok(Value::Str(utf8(payload, "string value")?)),
        TAG_BIN => Ok(Value::Bin(payload.to_vec())),
        TAG_LIST => {
            if depth + 1 >= MAX_LIST_DEPTH {
                return Err(BodyError(format!("lists nested more than {} levels deep", MAX_LIST_DEPTH - 1)));
            }
            let mut inner = Reader { buf: payload, pos: 0 };
            Ok(Value::List(read_list_entries(&mut inner, depth + 1)?))
        }
        other => Err(BodyError(format!("unknown value type tag {other} ({})", type_name(other)))),
    }
}

fn read_list_entries(r: &mut Reader<'_>, depth: usize) -> Result<KvList, BodyError> {
    let mut entries = Vec::new();
    while !r.at_end() {
        let klen = r.u16()? as usize;
        let key = utf8(r.take(klen)?, "list key")?;
        let value = read_value(r, depth)?;
        entries.push((key, value));
    }
    Ok(KvList::from_entries(entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv;

    #[test]
    fn frame_round_trips() {
        let f = Frame::new(16, 7)
            .with(17, "default")
            .with(22, 5i64)
            .with(23, kv![("lang", "en"), ("n", 3), ("nested", kv![("x", vec![1u8, 2])])]);
        let bytes = f.encode();
        assert_eq!(decode_frame(&bytes, DEFAULT_MAX_FRAME).unwrap(), f);
    }

    #[test]
    fn encoded_list_len_matches_the_encoder() {
        let l = kv![("lang", "en"), ("n", 3), ("nested", kv![("x", vec![1u8, 2]), ("y", kv![])])];
        assert_eq!(encoded_list_len(&l), encode_list(&l).len());
        assert_eq!(encoded_list_len(&KvList::new()), 0);
    }

    #[test]
    fn oversized_length_is_refused_from_the_first_four_bytes() {
        let bytes = (DEFAULT_MAX_FRAME as u32 + 1).to_le_bytes();
        assert!(matches!(split_frame(&bytes, DEFAULT_MAX_FRAME), Err(FatalFrameError::TooLarge { .. })));
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let bytes = Frame::new(2, 1).with(2, "abc").encode();
        for cut in 0..bytes.len() {
            assert_eq!(split_frame(&bytes[..cut], DEFAULT_MAX_FRAME).unwrap(), None, "cut {cut}");
        }
    }

    #[test]
    fn bad_bodies_are_body_errors() {
        // attribute id, tag int, length 3 (should be 8)
        let body = [1, 0, TAG_INT, 3, 0, 0, 0, 1, 2, 3];
        assert!(decode_body(&body).is_err());
        // unknown tag
        assert!(decode_body(&[1, 0, 9, 0, 0, 0, 0]).is_err());
        // invalid utf-8 string
        assert!(decode_body(&[1, 0, TAG_STR, 1, 0, 0, 0, 0xff]).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut v = kv![("leaf", 1)];
        for _ in 0..MAX_LIST_DEPTH + 1 {
            v = kv![("l", v)];
        }
        let bytes = Frame::new(1, 1).with(23, v).encode();
        assert!(decode_frame(&bytes, DEFAULT_MAX_FRAME).is_err());
    }
}
