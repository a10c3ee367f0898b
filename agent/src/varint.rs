//! Protobuf varints written straight into a `Vec<u8>`. prost's writer goes through the
//! generic `BufMut` one byte at a time, which showed in profiles of span building and
//! export encoding (tens of varints per span); here each byte is an inlined `Vec` push.

#[inline]
pub fn put_varint(mut v: u64, buf: &mut Vec<u8>) {
    // Byte pushes, not a copy from a stack array: `extend_from_slice` of a 2-3 byte slice
    // of variable length is a libc memcpy call, which showed in profiles of span building.
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_as_prost() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            (-3i64) as u64,
            u64::MAX,
        ] {
            let mut ours = Vec::new();
            put_varint(v, &mut ours);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
        }
    }
}
