//! Weighers: rank the pools that passed the filters. Cinder's CapacityWeigher weighs by virtual
//! free capacity (`sched_utils.calculate_capacity_factors`), normalised over the candidates.

use super::PoolCandidate;

/// Cinder's virtual free capacity in GiB: thin pools count the over-subscription they may still
/// promise, thick pools the smaller of free space and unprovisioned space.
pub fn virtual_free_gib(pool: &PoolCandidate, thick: bool) -> f64 {
    let reserved = (pool.total_gib * f64::from(pool.reserved_percentage) / 100.0).floor();
    let available = pool.total_gib - reserved;
    if !thick && pool.thin_provisioning_support {
        let total_available = available * pool.max_over_subscription_ratio;
        return total_available - pool.provisioned_gib;
    }
    pool.free_gib.min(available - pool.provisioned_gib)
}

/// CapacityWeigher with multiplier 1.0: weights normalised to 0..1 (all equal gives all 0).
pub fn capacity(pools: &[&PoolCandidate], thick: bool) -> Vec<f64> {
    normalise(
        pools
            .iter()
            .map(|pool| virtual_free_gib(pool, thick))
            .collect(),
    )
}

/// Cinder's `base_weight.normalize`: (w - min) / (max - min).
fn normalise(weights: Vec<f64>) -> Vec<f64> {
    let min = weights.iter().copied().fold(f64::INFINITY, f64::min);
    let max = weights.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Also catches an empty list (inf, -inf) and NaN weights.
    if max.partial_cmp(&min) != Some(std::cmp::Ordering::Greater) {
        return vec![0.0; weights.len()];
    }
    weights
        .into_iter()
        .map(|weight| (weight - min) / (max - min))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{super::tests::pool, *};

    #[test]
    fn virtual_free_follows_cinder_for_thin_and_thick() {
        let mut thin = pool("a", 100.0, 60.0, 150.0);
        thin.max_over_subscription_ratio = 2.0;
        thin.reserved_percentage = 10;
        // (100 - 10) * 2 - 150 = 30
        assert_eq!(virtual_free_gib(&thin, false), 30.0);
        // thick: min(60, 90 - 150) = -60
        assert_eq!(virtual_free_gib(&thin, true), -60.0);
    }

    #[test]
    fn weights_are_normalised() {
        assert_eq!(normalise(vec![10.0, 20.0, 30.0]), vec![0.0, 0.5, 1.0]);
        assert_eq!(normalise(vec![5.0, 5.0]), vec![0.0, 0.0]);
    }
}
