//! Random well-formed message values, version by version: test support for the oracle property
//! tests (`tests/protocol_oracle.rs`) and fuzzers. Not used by the broker.
//!
//! A sampled value only sets fields that exist in the requested version, only uses `None` where the
//! field is nullable in that version, and leaves tagged fields at their default half of the time.
//! Strings are ASCII; integers are biased towards small and boundary values.

use bytes::Bytes;

/// Small deterministic PRNG (SplitMix64) so a failing case is reproduced from its seed.
#[derive(Debug, Clone)]
pub struct Gen {
    state: u64,
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// An integer biased towards 0, -1, small values and the extremes.
    fn int(&mut self, min: i64, max: i64) -> i64 {
        match self.below(6) {
            0 => 0,
            1 => -1i64.max(min),
            2 => min,
            3 => max,
            4 => (self.below(100) as i64).min(max),
            _ => {
                let span = (max as i128 - min as i128 + 1) as u128;
                (min as i128 + (u128::from(self.next_u64()) % span) as i128) as i64
            }
        }
    }

    fn len(&mut self, max: u64) -> usize {
        self.below(max + 1) as usize
    }
}

pub trait Sample: Sized {
    /// A random value valid in `version`; `nullable` says whether `None` is allowed here.
    fn sample(g: &mut Gen, version: i16, nullable: bool) -> Self;
}

macro_rules! sample_int {
    ($($t:ty),*) => {$(
        impl Sample for $t {
            fn sample(g: &mut Gen, _: i16, _: bool) -> Self {
                g.int(<$t>::MIN as i64, <$t>::MAX as i64) as $t
            }
        }
    )*};
}
sample_int!(i8, i16, i32, i64);

impl Sample for u16 {
    fn sample(g: &mut Gen, _: i16, _: bool) -> Self {
        g.below(1 << 16) as u16
    }
}
impl Sample for u32 {
    fn sample(g: &mut Gen, _: i16, _: bool) -> Self {
        g.next_u64() as u32
    }
}
impl Sample for f64 {
    fn sample(g: &mut Gen, _: i16, _: bool) -> Self {
        g.int(-1000, 1000) as f64 / 8.0
    }
}
impl Sample for bool {
    fn sample(g: &mut Gen, _: i16, _: bool) -> Self {
        g.coin()
    }
}
impl Sample for [u8; 16] {
    fn sample(g: &mut Gen, _: i16, _: bool) -> Self {
        let mut a = [0u8; 16];
        if g.coin() {
            a[..8].copy_from_slice(&g.next_u64().to_be_bytes());
            a[8..].copy_from_slice(&g.next_u64().to_be_bytes());
        }
        a
    }
}
impl Sample for String {
    fn sample(g: &mut Gen, _: i16, _: bool) -> Self {
        let n = g.len(8);
        (0..n).map(|_| (b'a' + g.below(26) as u8) as char).collect()
    }
}
/// Bytes are sometimes large (past the shared-chunk threshold) to exercise chunked encoding.
impl Sample for Bytes {
    fn sample(g: &mut Gen, _: i16, _: bool) -> Self {
        let n = if g.below(8) == 0 {
            4096 + g.len(64)
        } else {
            g.len(16)
        };
        Bytes::from((0..n).map(|_| g.next_u64() as u8).collect::<Vec<u8>>())
    }
}
/// Record sets are sometimes split in two, so that encoding several chunks as one field is
/// exercised.
impl Sample for crate::protocol::RecordSet {
    fn sample(g: &mut Gen, version: i16, _: bool) -> Self {
        let b = Bytes::sample(g, version, false);
        let at = if b.is_empty() {
            0
        } else {
            g.below(b.len() as u64 + 1) as usize
        };
        crate::protocol::RecordSet::from_chunks(vec![b.slice(..at), b.slice(at..)])
    }
}
impl<T: Sample> Sample for Vec<T> {
    fn sample(g: &mut Gen, version: i16, _: bool) -> Self {
        let n = g.len(3);
        (0..n).map(|_| T::sample(g, version, false)).collect()
    }
}
impl<T: Sample> Sample for Option<T> {
    fn sample(g: &mut Gen, version: i16, nullable: bool) -> Self {
        if nullable && g.below(4) == 0 {
            None
        } else {
            Some(T::sample(g, version, false))
        }
    }
}
