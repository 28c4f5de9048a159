//! Weighted choice among a phase's URLs, deterministic for a seed: the same seed gives the same
//! URL for each request number, so two runs of a profile send the same sequence.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast and good enough to draw URLs; no dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws indexes into a list of weights, each with probability weight / total.
#[derive(Debug, Clone)]
pub struct Picker {
    cumulative: Vec<f64>,
    rng: SplitMix64,
}

impl Picker {
    /// `weights` must be non-empty and positive (the plan checks this).
    pub fn new(weights: &[f64], seed: u64) -> Self {
        let mut sum = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                sum += w;
                sum
            })
            .collect();
        Self { cumulative, rng: SplitMix64::new(seed) }
    }

    pub fn pick(&mut self) -> usize {
        let n = self.cumulative.len();
        if n <= 1 {
            return 0;
        }
        let x = self.rng.next_f64() * self.cumulative[n - 1];
        self.cumulative.partition_point(|&c| c <= x).min(n - 1)
    }
}

/// The seed of phase `phase` for a run seeded with `seed`: phases draw independent sequences.
pub fn phase_seed(seed: u64, phase: usize) -> u64 {
    SplitMix64::new(seed ^ (phase as u64).wrapping_mul(0xA076_1D64_78BD_642F)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let draw = |seed| {
            let mut p = Picker::new(&[3.0, 1.0, 1.0], seed);
            (0..200).map(|_| p.pick()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn proportions_follow_weights() {
        let mut p = Picker::new(&[3.0, 1.0, 0.5, 0.5], 1);
        let mut counts = [0u32; 4];
        for _ in 0..100_000 {
            counts[p.pick()] += 1;
        }
        // Expected 60%, 20%, 10%, 10%; the binomial standard deviation is under 0.16%.
        for (c, want) in counts.iter().zip([0.6, 0.2, 0.1, 0.1]) {
            let got = f64::from(*c) / 100_000.0;
            assert!((got - want).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn single_entry_always_wins() {
        let mut p = Picker::new(&[2.0], 0);
        assert!((0..10).all(|_| p.pick() == 0));
    }

    #[test]
    fn phases_get_distinct_seeds() {
        assert_ne!(phase_seed(1, 0), phase_seed(1, 1));
        assert_eq!(phase_seed(1, 2), phase_seed(1, 2));
    }
}
