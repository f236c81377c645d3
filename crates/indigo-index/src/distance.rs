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
    f32::dot(a, b).unwrap_or(0.0) as f32
}

#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    f32::sqeuclidean(a, b).unwrap_or(0.0) as f32
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
