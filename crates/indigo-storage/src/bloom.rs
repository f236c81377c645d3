//! A bloom filter over 64-bit key hashes (Kirsch–Mitzenmacher double hashing).
//! 10 bits per key and 7 probes give about 0.8% false positives.

pub(crate) const BITS_PER_KEY: u64 = 10;
pub(crate) const PROBES: u32 = 7;

pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

#[derive(Debug, Clone)]
pub(crate) struct Bloom {
    probes: u32,
    words: Vec<u64>,
}

impl Bloom {
    pub fn build(hashes: &[u64]) -> Bloom {
        let nbits = (hashes.len() as u64 * BITS_PER_KEY).max(64);
        let mut b = Bloom {
            probes: PROBES,
            words: vec![0; nbits.div_ceil(64) as usize],
        };
        for &h in hashes {
            b.insert(h);
        }
        b
    }

    fn nbits(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    fn positions(&self, h: u64) -> impl Iterator<Item = u64> + '_ {
        let h1 = h;
        let h2 = h.rotate_left(32) | 1;
        let n = self.nbits();
        (0..u64::from(self.probes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % n)
    }

    fn insert(&mut self, h: u64) {
        let pos: Vec<u64> = self.positions(h).collect();
        for p in pos {
            self.words[(p / 64) as usize] |= 1 << (p % 64);
        }
    }

    pub fn may_contain(&self, h: u64) -> bool {
        self.positions(h)
            .all(|p| self.words[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.probes.to_le_bytes());
        out.extend_from_slice(&(self.words.len() as u64).to_le_bytes());
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    pub fn decode(buf: &[u8]) -> Option<Bloom> {
        let mut r = crate::codec::Reader::new(buf);
        let probes = r.u32()?;
        let n = usize::try_from(r.u64()?).ok()?;
        if probes == 0 || probes > 32 || n == 0 || r.buf.len() - r.pos != n.checked_mul(8)? {
            return None;
        }
        let words = (0..n).map(|_| r.u64()).collect::<Option<Vec<_>>>()?;
        Some(Bloom { probes, words })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn no_false_negatives_and_about_one_percent_false_positives() {
        let keys: Vec<u64> = (0..20_000u64).map(|i| key_hash(&i.to_be_bytes())).collect();
        let b = Bloom::build(&keys);
        assert!(keys.iter().all(|&h| b.may_contain(h)));
        let fp = (100_000..200_000u64)
            .filter(|i| b.may_contain(key_hash(&i.to_be_bytes())))
            .count();
        assert!(fp < 1_200, "false positive rate {}", fp as f64 / 100_000.0);
        let mut enc = Vec::new();
        b.encode(&mut enc);
        let d = Bloom::decode(&enc).unwrap();
        assert!(keys.iter().all(|&h| d.may_contain(h)));
        assert!(Bloom::decode(&enc[..enc.len() - 1]).is_none());
    }
}
