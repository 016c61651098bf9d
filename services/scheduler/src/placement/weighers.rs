//! Weighers: rank the pools that passed the filters. Each weigher's raw weights are normalised to
//! 0..1 over the candidates (Cinder's `base_weight.normalize`), multiplied by the weigher's
//! multiplier, and summed.

use super::PoolCandidate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weigher {
    /// Virtual free capacity (Cinder's CapacityWeigher). Multiplier 1.0 spreads volumes; a
    /// negative one stacks them.
    Capacity,
    /// Allocated capacity (Cinder's AllocatedCapacityWeigher); use a negative multiplier (Cinder's
    /// default is -1.0) so the least allocated pool wins.
    AllocatedCapacity,
    /// Number of volumes (Cinder's VolumeNumberWeigher); negative to prefer fewer volumes.
    VolumeNumber,
}

impl std::str::FromStr for Weigher {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "capacity" => Ok(Self::Capacity),
            "allocated-capacity" => Ok(Self::AllocatedCapacity),
            "volume-number" => Ok(Self::VolumeNumber),
            other => Err(format!("unknown weigher {other:?}: use capacity, allocated-capacity or volume-number")),
        }
    }
}

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

/// What `weigher` says of `pool`, before normalisation.
fn raw(weigher: Weigher, pool: &PoolCandidate, thick: bool) -> f64 {
    match weigher {
        Weigher::Capacity => virtual_free_gib(pool, thick),
        Weigher::AllocatedCapacity => pool.allocated_gib,
        Weigher::VolumeNumber => pool.total_volumes as f64,
    }
}

/// Cinder's `base_weight.normalize` over a set of pools, seen one at a time: each weigher's
/// lowest and highest raw weight, then each pool's weight as the sum over the weighers of
/// `(w - min) / (max - min)` times the multiplier.
pub struct Normaliser<'a> {
    weighers: &'a [(Weigher, f64)],
    ranges: Vec<(f64, f64)>,
}

impl<'a> Normaliser<'a> {
    pub fn new(weighers: &'a [(Weigher, f64)]) -> Self {
        Self { weighers, ranges: vec![(f64::INFINITY, f64::NEG_INFINITY); weighers.len()] }
    }

    pub fn see(&mut self, pool: &PoolCandidate, thick: bool) {
        for ((weigher, _), (min, max)) in self.weighers.iter().zip(&mut self.ranges) {
            let weight = raw(*weigher, pool, thick);
            (*min, *max) = (min.min(weight), max.max(weight));
        }
    }

    pub fn weight(&self, pool: &PoolCandidate, thick: bool) -> f64 {
        self.weighers
            .iter()
            .zip(&self.ranges)
            .map(|((weigher, multiplier), (min, max))| normalised(raw(*weigher, pool, thick), *min, *max) * multiplier)
            .sum()
    }
}

fn normalised(weight: f64, min: f64, max: f64) -> f64 {
    // Also catches a range never seen (inf, -inf) and NaN weights.
    if max.partial_cmp(&min) != Some(std::cmp::Ordering::Greater) {
        return 0.0;
    }
    (weight - min) / (max - min)
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

    /// The summed, normalised weights of `pools`, in their order.
    fn weigh(pools: &[&PoolCandidate], thick: bool, weighers: &[(Weigher, f64)]) -> Vec<f64> {
        let mut normaliser = Normaliser::new(weighers);
        pools.iter().for_each(|pool| normaliser.see(pool, thick));
        pools.iter().map(|pool| normaliser.weight(pool, thick)).collect()
    }

    #[test]
    fn weights_are_normalised() {
        assert_eq!([10.0, 20.0, 30.0].map(|weight| normalised(weight, 10.0, 30.0)), [0.0, 0.5, 1.0]);
        assert_eq!(normalised(5.0, 5.0, 5.0), 0.0);
        assert_eq!(normalised(f64::NAN, f64::NAN, f64::NAN), 0.0);
    }

    #[test]
    fn allocated_capacity_weigher_prefers_the_least_allocated_pool() {
        // The big pool has the most free space, but the most allocated; Cinder's
        // AllocatedCapacityWeigher (multiplier -1) picks the empty one.
        let busy = pool("busy", 1000.0, 900.0, 100.0);
        let idle = pool("idle", 100.0, 100.0, 0.0);
        let pools = [&busy, &idle];
        let by_allocation = weigh(&pools, false, &[(Weigher::AllocatedCapacity, -1.0)]);
        assert!(by_allocation[1] > by_allocation[0]);
        let by_capacity = weigh(&pools, false, &[(Weigher::Capacity, 1.0)]);
        assert!(by_capacity[0] > by_capacity[1]);
        // Summed weighers: the stronger multiplier decides.
        let combined = weigh(&pools, false, &[(Weigher::Capacity, 1.0), (Weigher::AllocatedCapacity, -2.0)]);
        assert!(combined[1] > combined[0]);
    }
}
