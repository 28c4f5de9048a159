//! Matching records of the same TCP connections from two sources (the server's log, the tracer,
//! the packet capture) by 4-tuple. Linux reuses client ports, so one 4-tuple can name several
//! connections over a run: among the candidates with a target's key, the unused one of least cost
//! (nearest in time) is taken, and each candidate is taken once.

use std::{collections::HashMap, hash::Hash};

/// For each target in order, the index of its candidate, if any.
pub fn match_by_key<T, C, K: Hash + Eq, O: Ord>(
    targets: &[T],
    candidates: &[C],
    target_key: impl Fn(&T) -> Option<K>,
    candidate_key: impl Fn(&C) -> Option<K>,
    cost: impl Fn(&T, &C) -> O,
) -> Vec<Option<usize>> {
    let mut by_key: HashMap<K, Vec<usize>> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        if let Some(k) = candidate_key(c) {
            by_key.entry(k).or_default().push(i);
        }
    }
    let mut used = vec![false; candidates.len()];
    targets
        .iter()
        .map(|t| {
            let i = by_key
                .get(&target_key(t)?)?
                .iter()
                .copied()
                .filter(|&i| !used[i])
                .min_by_key(|&i| cost(t, &candidates[i]))?;
            used[i] = true;
            Some(i)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_candidate_goes_once_to_the_nearest_target_first_served() {
        // (key, time) pairs.
        let targets: [(u8, u64); 4] = [(1, 100), (1, 200), (2, 50), (3, 0)];
        let candidates: [(u8, u64); 4] = [(1, 190), (1, 90), (2, 500), (1, 1000)];
        let m = match_by_key(&targets, &candidates, |t| Some(t.0), |c| Some(c.0), |t, c| t.1.abs_diff(c.1));
        assert_eq!(m, vec![Some(1), Some(0), Some(2), None]);
    }
}
