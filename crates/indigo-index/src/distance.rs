//! Distance functions with Chroma's definitions: `l2` is the squared Euclidean
//! distance, `cosine` is 1 − cosine similarity, `ip` is 1 − dot product.
//! Kernels come from simsimd (AVX2/AVX-512/NEON picked at run time).

use simsimd::SpatialSimilarity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Space {
    L2 = 0,
    Cosine = 1,
    Ip = 2,
}

impl Space {
    pub fn from_u8(v: u8) -> Option<Space> {
        match v {
            0 => Some(Space::L2),
            1 => Some(Space::Cosine),
            2 => Some(Space::Ip),
            _ => None,
        }
    }

    /// Parses Chroma's names (`l2`, `cosine`, `ip`).
    pub fn parse(s: &str) -> Option<Space> {
        match s {
            "l2" => Some(Space::L2),
            "cosine" => Some(Space::Cosine),
            "ip" => Some(Space::Ip),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Space::L2 => "l2",
            Space::Cosine => "cosine",
            Space::Ip => "ip",
        }
    }

    /// What the index stores for `v`: cosine vectors are normalised once so that a
    /// query costs one dot product per candidate.
    pub fn prepare(self, v: &[f32]) -> Vec<f32> {
        self.prepare_cow(v).into_owned()
    }

    /// [`Space::prepare`] without copying when nothing changes (l2, ip).
    pub fn prepare_cow(self, v: &[f32]) -> std::borrow::Cow<'_, [f32]> {
        if self == Space::Cosine {
            let mut out = v.to_vec();
            normalize(&mut out);
            std::borrow::Cow::Owned(out)
        } else {
            std::borrow::Cow::Borrowed(v)
        }
    }

    /// Distance between two prepared vectors.
    #[inline]
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Space::L2 => l2_squared(a, b),
            Space::Cosine | Space::Ip => 1.0 - dot(a, b),
        }
    }
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if a.len() >= 32 && fma::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked), and the lengths are equal.
        return unsafe { fma::dot(a, b) };
    }
    f32::dot(a, b).unwrap_or(0.0) as f32
}

#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if a.len() >= 32 && fma::available() {
        // SAFETY: as in `dot`.
        return unsafe { fma::l2_squared(a, b) };
    }
    f32::sqeuclidean(a, b).unwrap_or(0.0) as f32
}

/// AVX2 + FMA kernels with four independent accumulators. simsimd's AVX2
/// kernels chain every FMA into one register, so a 784-d distance waits on
/// about a hundred FMA latencies back to back; four chains let the loads, not the
/// latency, set the pace (the HNSW build spends most of its time here).
#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    static STATE: AtomicU8 = AtomicU8::new(0);

    #[inline]
    pub fn available() -> bool {
        match STATE.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let yes = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
                STATE.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
                yes
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// AVX2 and FMA must be available; `a` and `b` have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): i + 32 <= n or i + 8 <= n, within both slices.
        while i + 32 <= n {
            for (k, s) in acc.iter_mut().enumerate() {
                let d = _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * k)),
                    _mm256_loadu_ps(pb.add(i + 8 * k)),
                );
                *s = _mm256_fmadd_ps(d, d, *s);
            }
            i += 32;
        }
        while i + 8 <= n {
            let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut r = hsum(s);
        while i < n {
            let d = *pa.add(i) - *pb.add(i);
            r += d * d;
            i += 1;
        }
        r
    }

    /// # Safety
    /// As for [`l2_squared`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, s) in acc.iter_mut().enumerate() {
                *s = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * k)),
                    _mm256_loadu_ps(pb.add(i + 8 * k)),
                    *s,
                );
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut r = hsum(s);
        while i < n {
            r += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        r
    }
}

/// Scales `v` to unit length; a zero vector stays zero (its cosine distance to
/// anything is then 1, as Chroma's is).
pub fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        for x in v.iter_mut() {
            *x /= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(space: Space, a: &[f32], b: &[f32]) -> f64 {
        let d: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        match space {
            Space::L2 => a
                .iter()
                .zip(b)
                .map(|(x, y)| ((*x - *y) as f64).powi(2))
                .sum(),
            Space::Ip => 1.0 - d,
            Space::Cosine => {
                let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                1.0 - d / (na * nb)
            }
        }
    }

    #[test]
    fn kernels_match_the_definitions_at_every_tail_length() {
        for n in (1..=80).chain([383, 384, 784, 1536]) {
            let a: Vec<f32> = (0..n).map(|i| ((i * 31) % 17) as f32 / 7.0 - 1.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13) % 11) as f32 / 5.0 - 1.0).collect();
            for space in [Space::L2, Space::Ip] {
                let got = space.distance(&a, &b) as f64;
                let want = naive(space, &a, &b);
                assert!(
                    (got - want).abs() < 1e-4 * want.abs().max(1.0),
                    "{space:?} at {n}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn kernels_match_the_definitions() {
        let a: Vec<f32> = (0..384)
            .map(|i| ((i * 7919) % 97) as f32 / 50.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..384)
            .map(|i| ((i * 104729) % 89) as f32 / 40.0 - 1.0)
            .collect();
        for space in [Space::L2, Space::Cosine, Space::Ip] {
            let got = space.distance(&space.prepare(&a), &space.prepare(&b)) as f64;
            let want = naive(space, &a, &b);
            assert!(
                (got - want).abs() < 1e-3 * want.abs().max(1.0),
                "{space:?}: {got} vs {want}"
            );
        }
        assert!(
            Space::Cosine
                .distance(&Space::Cosine.prepare(&a), &Space::Cosine.prepare(&a))
                .abs()
                < 1e-5
        );
    }
}
