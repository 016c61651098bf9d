//! Filters: a pool passes or is dropped. Formulas follow Cinder's AvailabilityZoneFilter and
//! CapacityFilter (`cinder/scheduler/filters/capacity_filter.py`).

use std::collections::HashMap;

use super::{PlacementRequest, PoolCandidate, extra_specs};

pub fn availability_zone(pool: &PoolCandidate, request: &PlacementRequest) -> bool {
    request.availability_zones.is_empty()
        || request.availability_zones.iter().any(|zone| zone == pool.availability_zone())
}

/// Cinder's CapabilitiesFilter: every checked extra spec must match the pool's capability.
pub fn capabilities(pool: &PoolCandidate, specs: &HashMap<String, String>) -> bool {
    specs.iter().all(|(key, requirement)| match extra_specs::capability_key(key) {
        None => true,
        Some(capability) => {
            pool.identity.capabilities.get(capability).is_some_and(|have| extra_specs::matches(have, requirement))
        }
    })
}

/// Whether `pool` can hold volumes of the request's type, space aside: its zone, the type's
/// capabilities, and thick provisioning when the type wants it.
pub fn satisfies(pool: &PoolCandidate, request: &PlacementRequest) -> bool {
    availability_zone(pool, request)
        && capabilities(pool, &request.extra_specs)
        && (pool.thick_provisioning_support || !request.thick)
}

/// The largest request [`capacity`] would let through, for error messages.
pub fn largest_fit_gib(pool: &PoolCandidate, thick: bool) -> f64 {
    if pool.total_gib <= 0.0 {
        return 0.0;
    }
    let reserved = (pool.total_gib * f64::from(pool.reserved_percentage) / 100.0).floor();
    let free = pool.free_gib - reserved;
    let largest = if !thick && pool.thin_provisioning_support && pool.max_over_subscription_ratio >= 1.0 {
        let ratio = pool.max_over_subscription_ratio;
        (free * ratio).min(pool.total_gib * ratio - pool.provisioned_gib)
    } else if thick && !pool.thick_provisioning_support && pool.thin_provisioning_support {
        0.0
    } else {
        free
    };
    largest.max(0.0)
}

/// Cinder's CapacityFilter: the reserved share of the pool is never handed out; thin pools may
/// promise up to `max_over_subscription_ratio` times their free space, and never more than that
/// ratio of their total in all.
pub fn capacity(pool: &PoolCandidate, request: &PlacementRequest) -> bool {
    let requested = request.size_gib;
    if requested <= 0.0 {
        return true;
    }
    if pool.total_gib <= 0.0 {
        return false;
    }
    let reserved = (pool.total_gib * f64::from(pool.reserved_percentage) / 100.0).floor();
    let free = pool.free_gib - reserved;
    let thin = !request.thick && pool.thin_provisioning_support;
    if thin && pool.max_over_subscription_ratio >= 1.0 {
        let provisioned_ratio = (pool.provisioned_gib + requested) / pool.total_gib;
        if provisioned_ratio > pool.max_over_subscription_ratio {
            return false;
        }
        return free * pool.max_over_subscription_ratio >= requested;
    }
    if request.thick && !pool.thick_provisioning_support && pool.thin_provisioning_support {
        // A thin-only pool cannot honour a thick request.
        return false;
    }
    free >= requested
}

#[cfg(test)]
mod tests {
    use super::{super::tests::pool, *};

    fn request(size: f64) -> PlacementRequest {
        PlacementRequest { size_gib: size, ..Default::default() }
    }

    #[test]
    fn reserved_space_is_never_handed_out() {
        let mut reserved = pool("a", 100.0, 100.0, 0.0);
        reserved.reserved_percentage = 10;
        reserved.thin_provisioning_support = false;
        reserved.thick_provisioning_support = true;
        assert!(capacity(&reserved, &request(90.0)));
        assert!(!capacity(&reserved, &request(91.0)));
    }

    #[test]
    fn thin_pools_over_subscribe_up_to_their_ratio() {
        let mut thin = pool("a", 100.0, 50.0, 150.0);
        thin.max_over_subscription_ratio = 2.0;
        // (150 + 50) / 100 = 2.0: allowed; one more GiB is not.
        assert!(capacity(&thin, &request(50.0)));
        assert!(!capacity(&thin, &request(51.0)));
        // Free space times the ratio bounds a single request too.
        let mut nearly_full = pool("b", 100.0, 10.0, 0.0);
        nearly_full.max_over_subscription_ratio = 2.0;
        assert!(capacity(&nearly_full, &request(20.0)));
        assert!(!capacity(&nearly_full, &request(21.0)));
    }

    #[test]
    fn zero_sizes_pass_and_empty_pools_fail() {
        assert!(capacity(&pool("a", 0.0, 0.0, 0.0), &request(0.0)));
        assert!(!capacity(&pool("a", 0.0, 0.0, 0.0), &request(1.0)));
    }

    #[test]
    fn thick_requests_skip_thin_only_pools() {
        let thick = PlacementRequest { size_gib: 1.0, thick: true, ..Default::default() };
        assert!(!capacity(&pool("a", 100.0, 100.0, 0.0), &thick));
    }
}
