//! Protobuf varints written straight into a `Vec<u8>`. prost's writer goes through the
//! generic `BufMut` one byte at a time, which showed in profiles of span building and
//! export encoding (tens of varints per span); here the common one-byte case is one push.

#[inline]
pub fn put_varint(mut v: u64, buf: &mut Vec<u8>) {
    if v < 0x80 {
        buf.push(v as u8);
        return;
    }
    let mut tmp = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 && n < 9 {
        tmp[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    tmp[n] = v as u8;
    buf.extend_from_slice(&tmp[..=n]);
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
