//! Order-preserving encodings: byte-wise comparison of the encoded keys equals the
//! numeric order of the values, so `$gt`/`$lt` filters become range scans.

/// Big-endian with the sign bit flipped.
pub fn encode_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn decode_i64(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// IEEE 754 total order: flip all bits of negatives, only the sign bit of positives.
/// `-0.0` is normalised to `0.0` so the two compare equal, as numbers do. NaN is not
/// a valid metadata value and is rejected before it reaches the store.
pub fn encode_f64(v: f64) -> [u8; 8] {
    let v = if v == 0.0 { 0.0 } else { v };
    let bits = v.to_bits();
    let mapped = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    mapped.to_be_bytes()
}

pub fn decode_f64(b: [u8; 8]) -> f64 {
    let mapped = u64::from_be_bytes(b);
    let bits = if mapped >> 63 == 1 {
        mapped & !(1 << 63)
    } else {
        !mapped
    };
    f64::from_bits(bits)
}

/// The smallest key greater than every key starting with `prefix`, or `None` when
/// no such key exists (the prefix is all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn i64_order_is_preserved(a: i64, b: i64) {
            prop_assert_eq!(a.cmp(&b), encode_i64(a).cmp(&encode_i64(b)));
            prop_assert_eq!(decode_i64(encode_i64(a)), a);
        }

        #[test]
        fn f64_order_is_preserved(a in proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL | proptest::num::f64::INFINITE,
                                  b in proptest::num::f64::NORMAL | proptest::num::f64::ZERO) {
            prop_assert_eq!(a.partial_cmp(&b).unwrap(), encode_f64(a).cmp(&encode_f64(b)));
            prop_assert_eq!(decode_f64(encode_f64(a)), a);
        }
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
