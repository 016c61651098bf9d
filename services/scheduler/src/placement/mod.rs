//! Placement: Cinder's filter-then-weigh scheduling as pure functions over pool candidates.
//! Filters drop pools that cannot take the volume; weighers rank the rest (each weigher's
//! weights are normalised to 0..1, multiplied by its multiplier and summed); the highest wins.

pub mod filters;
pub mod weighers;

use basalt::{ErrorCode, ServiceError};

const GIB: f64 = (1u64 << 30) as f64;

/// One pool as placement sees it, in GiB like Cinder's formulas.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolCandidate {
    pub node_id: String,
    pub backend: String,
    pub pool: String,
    pub availability_zone: String,
    pub total_gib: f64,
    pub free_gib: f64,
    pub provisioned_gib: f64,
    pub thin_provisioning_support: bool,
    pub thick_provisioning_support: bool,
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: u32,
}

impl PoolCandidate {
    pub fn from_report(
        node_id: &str,
        availability_zone: &str,
        pool: &basalt::proto::PoolCapacity,
    ) -> Self {
        Self {
            node_id: node_id.to_owned(),
            backend: pool.backend.clone(),
            pool: pool.name.clone(),
            availability_zone: availability_zone.to_owned(),
            total_gib: pool.total_bytes as f64 / GIB,
            free_gib: pool.free_bytes as f64 / GIB,
            provisioned_gib: pool.provisioned_bytes as f64 / GIB,
            thin_provisioning_support: pool.thin_provisioning_support,
            thick_provisioning_support: pool.thick_provisioning_support,
            max_over_subscription_ratio: pool.max_over_subscription_ratio,
            reserved_percentage: pool.reserved_percentage,
        }
    }

    /// Debits placements the database holds but the node's last report does not show yet.
    pub fn with_booked(mut self, booked_gib: f64) -> Self {
        let unreported = (booked_gib - self.provisioned_gib).max(0.0);
        self.provisioned_gib += unreported;
        if !self.thin_provisioning_support {
            self.free_gib = (self.free_gib - unreported).max(0.0);
        }
        self
    }

    /// Cinder's `host@backend#pool`.
    pub fn host(&self) -> String {
        format!("{}@{}#{}", self.node_id, self.backend, self.pool)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlacementRequest {
    pub size_gib: f64,
    /// Empty means any zone.
    pub availability_zone: String,
    /// The volume type asks for thick provisioning (`provisioning:type=thick`).
    pub thick: bool,
}

/// Picks the best pool for `request`, or says why none fits.
pub fn place(
    candidates: &[PoolCandidate],
    request: &PlacementRequest,
) -> Result<PoolCandidate, ServiceError> {
    if candidates.is_empty() {
        return Err(ServiceError::new(
            ErrorCode::NoCapacity,
            "no valid node: no volume node is reporting capacity; start a volume node or check that it reaches the bus",
        ));
    }
    let in_zone: Vec<&PoolCandidate> = candidates
        .iter()
        .filter(|pool| filters::availability_zone(pool, request))
        .collect();
    if in_zone.is_empty() {
        let mut zones: Vec<&str> = candidates
            .iter()
            .map(|pool| pool.availability_zone.as_str())
            .collect();
        zones.sort_unstable();
        zones.dedup();
        return Err(ServiceError::new(
            ErrorCode::NoCapacity,
            format!(
                "no valid node in availability zone {:?}; zones with capacity: {}",
                request.availability_zone,
                zones.join(", ")
            ),
        ));
    }
    let fitting: Vec<&PoolCandidate> = in_zone
        .iter()
        .copied()
        .filter(|pool| filters::capacity(pool, request))
        .collect();
    if fitting.is_empty() {
        let largest = in_zone
            .iter()
            .map(|pool| filters::largest_fit_gib(pool, request.thick))
            .fold(0.0_f64, f64::max);
        return Err(ServiceError::new(
            ErrorCode::NoCapacity,
            format!(
                "no valid node: no pool can fit a {} GiB volume; the most any pool can take now is {} GiB",
                request.size_gib,
                largest.floor()
            ),
        ));
    }
    let weights = weighers::capacity(&fitting, request.thick);
    let best = fitting
        .iter()
        .zip(weights)
        .max_by(|(a, weight_a), (b, weight_b)| {
            // Ties go to the first pool by host name, so placement is deterministic.
            weight_a
                .total_cmp(weight_b)
                .then_with(|| b.host().cmp(&a.host()))
        })
        .map(|(pool, _)| (*pool).clone());
    best.ok_or_else(|| ServiceError::internal("placement found fitting pools but ranked none"))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pool(node: &str, total: f64, free: f64, provisioned: f64) -> PoolCandidate {
        PoolCandidate {
            node_id: node.into(),
            backend: "file".into(),
            pool: "default".into(),
            availability_zone: "nova".into(),
            total_gib: total,
            free_gib: free,
            provisioned_gib: provisioned,
            thin_provisioning_support: true,
            thick_provisioning_support: false,
            max_over_subscription_ratio: 1.0,
            reserved_percentage: 0,
        }
    }

    fn request(size: f64) -> PlacementRequest {
        PlacementRequest {
            size_gib: size,
            ..Default::default()
        }
    }

    #[test]
    fn the_pool_with_most_virtual_free_space_wins() {
        let pools = [
            pool("a", 100.0, 100.0, 80.0),
            pool("b", 100.0, 100.0, 10.0),
            pool("c", 50.0, 50.0, 0.0),
        ];
        assert_eq!(place(&pools, &request(5.0)).unwrap().node_id, "b");
    }

    #[test]
    fn too_big_for_every_pool_is_resource_exhausted_with_the_largest_fit() {
        let pools = [pool("a", 100.0, 100.0, 80.0), pool("b", 100.0, 40.0, 10.0)];
        let error = place(&pools, &request(500.0)).unwrap_err();
        assert_eq!(error.code, ErrorCode::NoCapacity);
        assert!(error.message.contains("500 GiB"), "{}", error.message);
        assert!(error.message.contains("40 GiB"), "{}", error.message);
    }

    #[test]
    fn no_nodes_and_wrong_zone_are_explained() {
        assert!(
            place(&[], &request(1.0))
                .unwrap_err()
                .message
                .contains("no volume node is reporting")
        );
        let zoned = PlacementRequest {
            size_gib: 1.0,
            availability_zone: "az9".into(),
            thick: false,
        };
        let error = place(&[pool("a", 10.0, 10.0, 0.0)], &zoned).unwrap_err();
        assert!(
            error.message.contains("az9") && error.message.contains("nova"),
            "{}",
            error.message
        );
    }

    #[test]
    fn booked_but_unreported_capacity_is_debited() {
        let reported = pool("a", 100.0, 100.0, 10.0).with_booked(95.0);
        assert_eq!(reported.provisioned_gib, 95.0);
        assert!(place(&[reported], &request(10.0)).is_err());
    }
}
