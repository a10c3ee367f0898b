//! HPACK decoding for one direction, robust to a capture that starts mid-connection.
//!
//! The decoding itself (tables, Huffman) is `httlib-hpack`'s. This module only walks the
//! representation boundaries of a block (integer and string length prefixes, no Huffman, no
//! table) so that each representation is handed to the decoder on its own, checked to be
//! complete and in bounds first, and a reference to a dynamic-table entry this decoder never
//! saw does not abort the block.
//!
//! Why this never yields a wrong name: a decoder that starts empty (capture started late) or is
//! restarted empty (a header block was missed) holds the newest entries of the real table, a
//! prefix of it in HPACK's newest-first index order. References into that prefix resolve to the
//! right entry; references beyond it are out of bounds and are reported as unknown. An insertion
//! whose name is such an unknown reference is replayed with an empty name (its value is known):
//! the entry keeps its place in the index order, it is never larger than the real one (so
//! evictions can only happen later than the sender's, keeping entries the sender no longer
//! refers to), and a later reference to it decodes to the empty name, again reported as unknown.
//! Anything that breaks this (a corrupt block, a block too large to decode, bytes lost) restarts
//! the decoder empty.
//!
//! Crate choice: `httlib-hpack` decodes Huffman strings with flattened lookup tables;
//! `loona-hpack` / `fluke-hpack` / `hpack` 0.3 (one lineage) build a hash map of the Huffman code
//! for every string and walk it bit by bit, ~45x slower on real curl/nginx header blocks (95 us
//! vs 2 us per request/response pair), which matters on the agent's hot path. `h2` keeps its
//! HPACK module private. `httlib-hpack` slices its input without bounds checks in places; every
//! representation reaches it only after [`next_repr`] has checked it is complete, so those
//! paths see well-formed lengths only (and the fuzz target exercises them).

use httlib_hpack::{Decoder, DecoderError};

use super::types::*;

/// One header field representation's kind (RFC 7541 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repr {
    Indexed,
    /// Literal with incremental indexing; `name_index` 0 means a literal name.
    Insert {
        name_index: usize,
    },
    /// Literal without indexing / never indexed.
    Literal {
        name_index: usize,
    },
    SizeUpdate,
}

/// HPACK integer with an N-bit prefix: (value, bytes used). At most 5 continuation bytes.
fn integer(buf: &[u8], prefix: u8) -> Option<(usize, usize)> {
    let mask = u8::MAX >> (8 - prefix);
    let first = buf.first()? & mask;
    if first < mask {
        return Some((usize::from(first), 1));
    }
    let mut value = usize::from(mask);
    for (i, b) in buf.iter().skip(1).take(5).enumerate() {
        value = value.checked_add(usize::from(b & 0x7f) << (7 * i))?;
        if b & 0x80 == 0 {
            return Some((value, i + 2));
        }
    }
    None
}

/// Length of an encoded string literal (length prefix + octets).
fn string_len(buf: &[u8]) -> Option<usize> {
    let (len, used) = integer(buf, 7)?;
    let total = used.checked_add(len)?;
    (total <= buf.len()).then_some(total)
}

/// The kind and encoded length of the representation at the start of `buf`, plus the offset
/// of its value string (for insertions).
fn next_repr(buf: &[u8]) -> Option<(Repr, usize, usize)> {
    let b = *buf.first()?;
    if b & 0x80 != 0 {
        let (_, n) = integer(buf, 7)?;
        return Some((Repr::Indexed, n, n));
    }
    if b & 0xe0 == 0x20 {
        let (_, n) = integer(buf, 5)?;
        return Some((Repr::SizeUpdate, n, n));
    }
    let prefix = if b & 0x40 != 0 { 6 } else { 4 };
    let (name_index, mut n) = integer(buf, prefix)?;
    if name_index == 0 {
        n = n.checked_add(string_len(buf.get(n..)?)?)?;
    }
    let value_at = n;
    n = n.checked_add(string_len(buf.get(n..)?)?)?;
    let repr = if prefix == 6 {
        Repr::Insert { name_index }
    } else {
        Repr::Literal { name_index }
    };
    Some((repr, n, value_at))
}

/// Why a whole block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// Malformed HPACK (or a table size over the allowed maximum).
    Corrupt,
}

/// A decoded field: name, value, flags.
type Field = (Vec<u8>, Vec<u8>, u8);

pub struct HpackDir {
    decoder: Decoder<'static>,
    /// The table size the decoder may be told to use (the peer's SETTINGS_HEADER_TABLE_SIZE,
    /// capped by [`MAX_HPACK_TABLE`]).
    allowed: usize,
    /// Header blocks missed or corrupt: restarts of the decoder.
    pub restarts: u64,
    /// Reused per representation.
    scratch: Vec<u8>,
    fields: Vec<Field>,
}

impl Default for HpackDir {
    fn default() -> Self {
        let allowed = MAX_HPACK_TABLE;
        Self {
            decoder: fresh_decoder(allowed),
            allowed,
            restarts: 0,
            scratch: Vec::new(),
            fields: Vec::new(),
        }
    }
}

fn fresh_decoder(allowed: usize) -> Decoder<'static> {
    // The table starts at HPACK's default size; size updates may take it up to `allowed`.
    let mut d = Decoder::with_dynamic_size(DEFAULT_HPACK_TABLE);
    d.set_max_dynamic_size(u32::try_from(allowed).unwrap_or(u32::MAX));
    d
}

impl std::fmt::Debug for HpackDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HpackDir")
            .field("allowed", &self.allowed)
            .field("restarts", &self.restarts)
            .finish()
    }
}

impl HpackDir {
    /// A header block was missed (or could not be decoded): forget the table.
    pub fn restart(&mut self) {
        self.decoder = fresh_decoder(self.allowed);
        self.restarts += 1;
    }

    /// The peer that decodes this direction announced SETTINGS_HEADER_TABLE_SIZE.
    pub fn set_allowed(&mut self, size: usize) {
        self.allowed = size.min(MAX_HPACK_TABLE);
        self.decoder
            .set_max_dynamic_size(u32::try_from(self.allowed).unwrap_or(u32::MAX));
    }

    /// Decodes one complete header block, keeping the fields a record needs.
    pub fn decode(&mut self, block: &[u8]) -> Result<HeaderFields, BlockError> {
        let r = self.decode_inner(block);
        if r.is_err() {
            self.restart();
        }
        r
    }

    /// Runs the decoder on `bytes` (whole representations only).
    fn run(&mut self, bytes: &[u8]) -> Result<(), DecoderError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(bytes);
        self.fields.clear();
        self.decoder
            .decode(&mut self.scratch, &mut self.fields)
            .map(|_| ())
    }

    fn decode_inner(&mut self, block: &[u8]) -> Result<HeaderFields, BlockError> {
        let mut fields = HeaderFields::default();
        let mut list_size = 0usize;
        let mut at = 0;
        // Size updates are decoded together with the representation that follows them.
        let mut group_start = 0;
        while at < block.len() {
            let rest = block.get(at..).ok_or(BlockError::Corrupt)?;
            let (repr, len, value_at) = next_repr(rest).ok_or(BlockError::Corrupt)?;
            let end = at.checked_add(len).ok_or(BlockError::Corrupt)?;
            let repr_start = at;
            at = end;
            if repr == Repr::SizeUpdate {
                continue;
            }
            let group = block.get(group_start..end).ok_or(BlockError::Corrupt)?;
            group_start = end;
            match self.run(group) {
                Ok(()) => {
                    for (name, value, _) in &self.fields {
                        list_size = list_size.saturating_add(name.len() + value.len() + 32);
                        if name.is_empty() {
                            fields.unknown = true;
                        } else if list_size <= MAX_HEADER_LIST {
                            keep_field(&mut fields, name, value);
                        }
                    }
                }
                Err(DecoderError::InvalidIndex) => {
                    fields.unknown = true;
                    // Size updates before it were applied; only an insertion changes the table.
                    if let Repr::Insert { name_index } = repr
                        && name_index != 0
                    {
                        let value = block
                            .get(repr_start + value_at..end)
                            .ok_or(BlockError::Corrupt)?;
                        let mut synth = Vec::with_capacity(2 + value.len());
                        synth.extend_from_slice(&[0x40, 0x00]);
                        synth.extend_from_slice(value);
                        self.run(&synth).map_err(|_| BlockError::Corrupt)?;
                    }
                }
                Err(_) => return Err(BlockError::Corrupt),
            }
        }
        if group_start != block.len() {
            // Trailing size update: invalid HPACK.
            return Err(BlockError::Corrupt);
        }
        Ok(fields)
    }
}

fn text(value: &[u8]) -> String {
    let s = String::from_utf8_lossy(value);
    let mut end = s.len().min(MAX_VALUE_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

/// Percent-decoding of `grpc-message` (gRPC HTTP/2 protocol spec).
fn percent_decode(value: &[u8]) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        if b == b'%'
            && let (Some(h), Some(l)) = (
                value.get(i + 1).copied().and_then(hex),
                value.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    text(&out)
}

fn keep_field(f: &mut HeaderFields, name: &[u8], value: &[u8]) {
    match name {
        b":method" => f.method = Some(text(value)),
        b":path" => f.path = Some(text(value)),
        b":authority" => f.authority = Some(text(value)),
        b"host" if f.authority.is_none() => f.authority = Some(text(value)),
        b":status" => f.status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()),
        b"content-type" => f.content_type = Some(text(value)),
        b"grpc-status" => {
            f.grpc_status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok())
        }
        b"grpc-message" => f.grpc_message = Some(percent_decode(value)),
        b"traceparent" => f.traceparent = Some(text(value)),
        b"tracestate" => f.tracestate = Some(text(value)),
        b"te" => f.te_trailers = value.eq_ignore_ascii_case(b"trailers"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use httlib_hpack::Encoder;

    /// Encodes like common HTTP/2 stacks do: Huffman strings, indexing, best representation.
    fn encode(enc: &mut Encoder, fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        let flags = Encoder::BEST_FORMAT
            | Encoder::WITH_INDEXING
            | Encoder::HUFFMAN_NAME
            | Encoder::HUFFMAN_VALUE;
        let mut dst = Vec::new();
        for (n, v) in fields {
            enc.encode((n.to_vec(), v.to_vec(), flags), &mut dst)
                .unwrap();
        }
        dst
    }

    #[test]
    fn integers() {
        assert_eq!(integer(&[10], 5), Some((10, 1)));
        assert_eq!(integer(&[31, 154, 10], 5), Some((1337, 3)));
        assert_eq!(integer(&[31], 5), None);
        assert_eq!(
            integer(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 8),
            None
        );
    }

    #[test]
    fn decodes_encoder_output_and_keeps_fields() {
        let mut enc = Encoder::default();
        let block = encode(
            &mut enc,
            &[
                (&b":method"[..], &b"POST"[..]),
                (b":path", b"/helloworld.Greeter/SayHello"),
                (b":authority", b"localhost:50051"),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (
                    b"traceparent",
                    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                (b"tracestate", b"k=v"),
            ],
        );
        let mut d = HpackDir::default();
        let f = d.decode(&block).unwrap();
        assert_eq!(f.method.as_deref(), Some("POST"));
        // The same fields again: now all dynamic-table references.
        let again = encode(
            &mut enc,
            &[(&b":path"[..], &b"/helloworld.Greeter/SayHello"[..])],
        );
        assert_eq!(again.len(), 1);
        let f2 = d.decode(&again).unwrap();
        assert_eq!(f2.path.as_deref(), Some("/helloworld.Greeter/SayHello"));
        assert_eq!(f.path.as_deref(), Some("/helloworld.Greeter/SayHello"));
        assert_eq!(f.authority.as_deref(), Some("localhost:50051"));
        assert_eq!(f.content_type.as_deref(), Some("application/grpc"));
        assert!(f.te_trailers);
        assert_eq!(
            f.traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(f.tracestate.as_deref(), Some("k=v"));
        assert!(!f.unknown);
        assert_eq!(f.status, None);
        assert_eq!(f.grpc_status, None);
    }

    #[test]
    fn percent_decoded_grpc_message() {
        let mut enc = Encoder::default();
        let block = encode(
            &mut enc,
            &[
                (&b"grpc-status"[..], &b"5"[..]),
                (b"grpc-message", b"no such user: b%C3%B6b 100%25"),
            ],
        );
        let f = HpackDir::default().decode(&block).unwrap();
        assert_eq!(f.grpc_status, Some(5));
        assert_eq!(f.grpc_message.as_deref(), Some("no such user: böb 100%"));
    }

    /// The sender's table holds entries this decoder never saw: they come out as unknown, the
    /// rest decodes right, and insertions keep later indices aligned.
    #[test]
    fn mid_connection_unknown_entries_never_wrong() {
        // The sender inserted entries before the capture started. Hand-built block: an indexed
        // reference to one of them (62), an insertion naming another (63) with value "v",
        // then a literal with a static name.
        let mut block = vec![0x80 | 62, 0x40 | 63, 0x00, 1, b'v'];
        block.extend_from_slice(&[0x04, 5]); // :path (static 4), literal without indexing
        block.extend_from_slice(b"/a/bc");
        let mut d = HpackDir::default();
        let f = d.decode(&block).unwrap();
        assert!(f.unknown);
        assert_eq!(f.path.as_deref(), Some("/a/bc"));
        // The placeholder entry is index 62 now: a reference to it is unknown, not wrong.
        let f2 = d.decode(&[0x80 | 62, 0x82]).unwrap();
        assert!(f2.unknown);
        assert_eq!(f2.method.as_deref(), Some("GET"));
        assert_eq!(d.restarts, 0);
    }

    #[test]
    fn corrupt_block_restarts_decoder() {
        let mut d = HpackDir::default();
        // Literal name with a length running past the block.
        assert_eq!(d.decode(&[0x40, 0x7f, 0x10]), Err(BlockError::Corrupt));
        assert_eq!(d.restarts, 1);
        // Trailing size update.
        assert_eq!(d.decode(&[0x82, 0x20]), Err(BlockError::Corrupt));
        // A size update over the allowed maximum.
        d.set_allowed(100);
        assert_eq!(
            d.decode(&[0x3f, 0xe1, 0x1f, 0x82]),
            Err(BlockError::Corrupt)
        );
        assert_eq!(d.restarts, 3);
    }

    #[test]
    fn size_update_then_field() {
        let mut d = HpackDir::default();
        let f = d.decode(&[0x20, 0x82, 0x84]).unwrap();
        assert_eq!(f.method.as_deref(), Some("GET"));
        assert_eq!(f.path.as_deref(), Some("/"));
    }

    #[test]
    fn long_values_are_cut() {
        let long = vec![b'a'; MAX_VALUE_LEN + 100];
        let mut enc = Encoder::default();
        let block = encode(&mut enc, &[(&b":path"[..], &long[..])]);
        let f = HpackDir::default().decode(&block).unwrap();
        assert_eq!(f.path.map(|p| p.len()), Some(MAX_VALUE_LEN));
    }
}
