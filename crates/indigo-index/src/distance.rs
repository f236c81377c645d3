//! Distance functions with Chroma's definitions: `l2` is the squared Euclidean
//! distance, `cosine` is 1 − cosine similarity, `ip` is 1 − dot product.
//! Our AVX2 + FMA kernels where the CPU has them, simsimd's otherwise; builds
//! score 8-bit codes of the vectors ([`Code`]), searches the vectors.

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

/// A vector in 8 bits per value: `x[i] ≈ base + step · codes[i]`, the
/// offset and step its own (the row's minimum and range / 255). Builds walk
/// these instead of the f32 rows: a quarter of the bytes per node scored.
#[derive(Clone, Copy)]
pub struct Code<'a> {
    pub base: f32,
    pub step: f32,
    pub codes: &'a [u8],
}

/// Encodes `v` into `out` (same length); returns the offset and step. A
/// range too small for its reciprocal (subnormal) encodes as a constant row;
/// non-finite values give defined codes, not meaningful ones.
pub fn encode(v: &[f32], out: &mut [u8]) -> (f32, f32) {
    debug_assert_eq!(v.len(), out.len());
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &x in v {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if v.is_empty() || lo.is_nan() || hi.is_nan() {
        out.fill(0);
        return (0.0, 0.0);
    }
    // Divided first: `hi - lo` overflows for rows spanning most of f32.
    let step = hi / 255.0 - lo / 255.0;
    let inv = 1.0 / step;
    if step > 0.0 && inv.is_finite() {
        for (o, &x) in out.iter_mut().zip(v) {
            // Non-negative, so + 0.5 and truncation round to nearest (and
            // `as` saturates at 255).
            *o = ((x - lo) * inv + 0.5) as u8;
        }
    } else {
        out.fill(0);
        return (lo, 0.0);
    }
    (lo, step)
}

/// Decodes `c` into `out` (same length).
pub fn decode(c: Code<'_>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if fma::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked).
        return unsafe { fma::decode(c, out) };
    }
    for (o, &x) in out.iter_mut().zip(c.codes) {
        *o = c.base + c.step * x as f32;
    }
}

impl Space {
    /// Distance between a prepared vector and an encoded one.
    #[inline]
    pub fn distance_code(self, a: &[f32], c: Code<'_>) -> f32 {
        debug_assert_eq!(a.len(), c.codes.len());
        #[cfg(target_arch = "x86_64")]
        if a.len() >= 16 && fma::available() {
            // SAFETY: the CPU has AVX2 and FMA (checked).
            return unsafe {
                match self {
                    Space::L2 => fma::l2_code(a, c),
                    Space::Cosine | Space::Ip => 1.0 - fma::dot_code(a, c),
                }
            };
        }
        let it = a
            .iter()
            .zip(c.codes)
            .map(|(&q, &x)| (q, c.base + c.step * x as f32));
        match self {
            Space::L2 => it.map(|(q, x)| (q - x) * (q - x)).sum(),
            Space::Cosine | Space::Ip => 1.0 - it.map(|(q, x)| q * x).sum::<f32>(),
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
/// latency, set the pace (searches spend most of their time here).
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

    /// Eight codes from `p` as floats.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn widen(p: *const u8) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)))
    }

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn decode(c: super::Code<'_>, out: &mut [f32]) {
        let n = out.len().min(c.codes.len());
        let (po, pc) = (out.as_mut_ptr(), c.codes.as_ptr());
        let (base, step) = (_mm256_set1_ps(c.base), _mm256_set1_ps(c.step));
        let mut i = 0;
        // SAFETY: i + 8 <= n, within both slices.
        while i + 8 <= n {
            _mm256_storeu_ps(po.add(i), _mm256_fmadd_ps(widen(pc.add(i)), step, base));
            i += 8;
        }
        while i < n {
            *po.add(i) = c.base + c.step * *pc.add(i) as f32;
            i += 1;
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2_code(a: &[f32], c: super::Code<'_>) -> f32 {
        let n = a.len().min(c.codes.len());
        let (pa, pc) = (a.as_ptr(), c.codes.as_ptr());
        let (base, step) = (_mm256_set1_ps(c.base), _mm256_set1_ps(c.step));
        // Four chains, as in `l2_squared`: two left the kernel waiting on FMA
        // latency.
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): i + 32 <= n or i + 8 <= n, within both slices.
        while i + 32 <= n {
            for (k, s) in acc.iter_mut().enumerate() {
                let x = _mm256_fmadd_ps(widen(pc.add(i + 8 * k)), step, base);
                let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i + 8 * k)), x);
                *s = _mm256_fmadd_ps(d, d, *s);
            }
            i += 32;
        }
        while i + 8 <= n {
            let x = _mm256_fmadd_ps(widen(pc.add(i)), step, base);
            let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), x);
            acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
            i += 8;
        }
        let mut r = hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        while i < n {
            let d = *pa.add(i) - (c.base + c.step * *pc.add(i) as f32);
            r += d * d;
            i += 1;
        }
        r
    }

    /// Σ a·x = base·Σa + step·Σ a·code.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_code(a: &[f32], c: super::Code<'_>) -> f32 {
        let n = a.len().min(c.codes.len());
        let (pa, pc) = (a.as_ptr(), c.codes.as_ptr());
        let (mut sa, mut sc) = ([_mm256_setzero_ps(); 2], [_mm256_setzero_ps(); 4]);
        let mut i = 0;
        while i + 32 <= n {
            for k in 0..4 {
                let q = _mm256_loadu_ps(pa.add(i + 8 * k));
                sa[k & 1] = _mm256_add_ps(q, sa[k & 1]);
                sc[k] = _mm256_fmadd_ps(q, widen(pc.add(i + 8 * k)), sc[k]);
            }
            i += 32;
        }
        while i + 8 <= n {
            let q = _mm256_loadu_ps(pa.add(i));
            sa[0] = _mm256_add_ps(q, sa[0]);
            sc[0] = _mm256_fmadd_ps(q, widen(pc.add(i)), sc[0]);
            i += 8;
        }
        let (mut ta, mut tc) = (
            hsum(_mm256_add_ps(sa[0], sa[1])),
            hsum(_mm256_add_ps(
                _mm256_add_ps(sc[0], sc[1]),
                _mm256_add_ps(sc[2], sc[3]),
            )),
        );
        while i < n {
            ta += *pa.add(i);
            tc += *pa.add(i) * *pc.add(i) as f32;
            i += 1;
        }
        c.base * ta + c.step * tc
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

    /// Codes decode to within half a step of each value, and the kernels
    /// against codes equal the exact distance to the decoded vector.
    #[test]
    fn code_distances_match_the_decoded_vectors() {
        for n in (1..=80).chain([383, 384, 784, 1536]) {
            let a: Vec<f32> = (0..n).map(|i| ((i * 31) % 17) as f32 / 7.0 - 1.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13) % 11) as f32 / 5.0 - 1.3).collect();
            for space in [Space::L2, Space::Ip, Space::Cosine] {
                let (a, b) = (space.prepare(&a), space.prepare(&b));
                let mut codes = vec![0u8; n];
                let (base, step) = encode(&b, &mut codes);
                let c = Code {
                    base,
                    step,
                    codes: &codes,
                };
                let mut back = vec![0.0; n];
                decode(c, &mut back);
                for (x, y) in b.iter().zip(&back) {
                    assert!(
                        (x - y).abs() <= step * 0.501 + 1e-6,
                        "{space:?} at {n}: {x} vs {y}"
                    );
                }
                let got = space.distance_code(&a, c) as f64;
                let want = space.distance(&a, &back) as f64;
                assert!(
                    (got - want).abs() < 1e-4 * want.abs().max(1.0),
                    "{space:?} at {n}: {got} vs {want}"
                );
            }
        }
    }

    /// A constant row decodes exactly; a row spanning all of f32 and one
    /// with infinities still encode to defined codes.
    #[test]
    fn extreme_rows_encode() {
        let mut codes = vec![7u8; 40];
        let (base, step) = encode(&[2.5; 40], &mut codes);
        let mut back = vec![0.0; 40];
        decode(
            Code {
                base,
                step,
                codes: &codes,
            },
            &mut back,
        );
        assert_eq!(back, vec![2.5; 40]);
        let mut wide = vec![0.0f32; 40];
        wide[0] = f32::MAX;
        wide[1] = -f32::MAX;
        let (base, step) = encode(&wide, &mut codes);
        assert!(base.is_finite() && step.is_finite() && step > 0.0);
        assert_eq!((codes[0], codes[1]), (255, 0));
        decode(
            Code {
                base,
                step,
                codes: &codes,
            },
            &mut back,
        );
        // The ends decode to the ends (the step did not overflow), the zeros
        // to within half a step.
        assert!(back[0] >= f32::MAX / 2.0, "{}", back[0]);
        assert_eq!(back[1], -f32::MAX);
        assert!(back[2..].iter().all(|x| x.abs() <= step * 0.501));
        // A subnormal range encodes as a constant row.
        let tiny: Vec<f32> = (0..40).map(|i| i as f32 * 1e-45).collect();
        let (base, step) = encode(&tiny, &mut codes);
        assert_eq!((base, step), (0.0, 0.0));
        wide[2] = f32::INFINITY;
        let (base, step) = encode(&wide, &mut codes);
        assert!(!base.is_nan() && !step.is_nan());
    }
}
