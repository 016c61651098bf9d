//! Placement: Cinder's filter-then-weigh scheduling as pure functions over pool candidates.
//! Filters drop pools that cannot take the volume; weighers rank the rest (each weigher's
//! weights are normalised to 0..1, multiplied by its multiplier and summed); the highest wins.

pub mod extra_specs;
pub mod filters;
pub mod weighers;

use std::collections::HashMap;

use basalt::{ErrorCode, ServiceError};

pub use weighers::Weigher;

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
    pub allocated_gib: f64,
    pub total_volumes: u64,
    pub thin_provisioning_support: bool,
    pub thick_provisioning_support: bool,
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: u32,
    /// Capabilities matched against volume-type extra specs.
    pub capabilities: HashMap<String, String>,
}

impl PoolCandidate {
    pub fn from_report(node_id: &str, availability_zone: &str, pool: &basalt::proto::PoolCapacity) -> Self {
        let mut candidate = Self {
            node_id: node_id.to_owned(),
            backend: pool.backend.clone(),
            pool: pool.name.clone(),
            availability_zone: availability_zone.to_owned(),
            total_gib: pool.total_bytes as f64 / GIB,
            free_gib: pool.free_bytes as f64 / GIB,
            provisioned_gib: pool.provisioned_bytes as f64 / GIB,
            allocated_gib: pool.allocated_bytes as f64 / GIB,
            total_volumes: pool.total_volumes,
            thin_provisioning_support: pool.thin_provisioning_support,
            thick_provisioning_support: pool.thick_provisioning_support,
            max_over_subscription_ratio: pool.max_over_subscription_ratio,
            reserved_percentage: pool.reserved_percentage,
            capabilities: pool.capabilities.clone(),
        };
        candidate.add_standard_capabilities(pool.multiattach);
        candidate
    }

    /// The report's fields as capabilities too, as Cinder's host state exposes them.
    fn add_standard_capabilities(&mut self, multiattach: bool) {
        let title = |value: bool| if value { "True" } else { "False" }.to_owned();
        let standard = [
            ("pool_name", self.pool.clone()),
            ("backend", self.backend.clone()),
            ("availability_zone", self.availability_zone.clone()),
            ("total_capacity_gb", format!("{}", self.total_gib.floor())),
            ("free_capacity_gb", format!("{}", self.free_gib.floor())),
            ("reserved_percentage", self.reserved_percentage.to_string()),
            ("max_over_subscription_ratio", self.max_over_subscription_ratio.to_string()),
            ("thin_provisioning_support", title(self.thin_provisioning_support)),
            ("thick_provisioning_support", title(self.thick_provisioning_support)),
            ("multiattach", title(multiattach)),
        ];
        for (key, value) in standard {
            self.capabilities.entry(key.to_owned()).or_insert(value);
        }
    }

    /// Debits placements the database holds but the node's last report does not show yet.
    pub fn with_booked(mut self, booked_gib: f64) -> Self {
        let unreported = (booked_gib - self.provisioned_gib).max(0.0);
        self.provisioned_gib += unreported;
        self.allocated_gib = self.allocated_gib.max(booked_gib);
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
    /// Zones the volume may go to; empty means any.
    pub availability_zones: Vec<String>,
    /// The volume type asks for thick provisioning (`provisioning:type=thick`).
    pub thick: bool,
    /// The volume type's extra specs.
    pub extra_specs: HashMap<String, String>,
}

/// Every pool that passes the filters, best first; or why none does.
pub fn rank(
    candidates: &[PoolCandidate],
    request: &PlacementRequest,
    weighers: &[(Weigher, f64)],
) -> Result<Vec<PoolCandidate>, ServiceError> {
    if candidates.is_empty() {
        return Err(ServiceError::new(
            ErrorCode::NoCapacity,
            "no valid node: no volume node is reporting capacity; start a volume node or check that it reaches the bus",
        ));
    }
    let in_zone: Vec<&PoolCandidate> =
        candidates.iter().filter(|pool| filters::availability_zone(pool, request)).collect();
    if in_zone.is_empty() {
        let mut zones: Vec<&str> = candidates.iter().map(|pool| pool.availability_zone.as_str()).collect();
        zones.sort_unstable();
        zones.dedup();
        return Err(ServiceError::new(
            ErrorCode::NoCapacity,
            format!(
                "no valid node in availability zone {}; zones with capacity: {}",
                request.availability_zones.join(" or "),
                zones.join(", ")
            ),
        ));
    }
    let capable: Vec<&PoolCandidate> =
        in_zone.into_iter().filter(|pool| filters::capabilities(pool, &request.extra_specs)).collect();
    if capable.is_empty() {
        let mut specs: Vec<String> = request
            .extra_specs
            .iter()
            .filter(|(key, _)| extra_specs::capability_key(key).is_some())
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        specs.sort();
        return Err(ServiceError::new(
            ErrorCode::NoCapacity,
            format!("no valid node: no pool has the capabilities the volume type asks for ({})", specs.join(", ")),
        ));
    }
    let fitting: Vec<&PoolCandidate> =
        capable.iter().copied().filter(|pool| filters::capacity(pool, request)).collect();
    if fitting.is_empty() {
        let largest = capable.iter().map(|pool| filters::largest_fit_gib(pool, request.thick)).fold(0.0_f64, f64::max);
        return Err(ServiceError::new(
            ErrorCode::NoCapacity,
            format!(
                "no valid node: no pool can fit a {} GiB volume; the most any pool can take now is {} GiB",
                request.size_gib,
                largest.floor()
            ),
        ));
    }
    let weights = weighers::weigh(&fitting, request.thick, weighers);
    // Each host name made once, not twice per comparison.
    let mut ranked: Vec<(&PoolCandidate, f64, String)> =
        fitting.into_iter().zip(weights).map(|(pool, weight)| (pool, weight, pool.host())).collect();
    // Highest weight first; ties go to the first host name, so placement is deterministic.
    ranked.sort_by(|(_, weight_a, host_a), (_, weight_b, host_b)| {
        weight_b.total_cmp(weight_a).then_with(|| host_a.cmp(host_b))
    });
    Ok(ranked.into_iter().map(|(pool, _, _)| pool.clone()).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pool(node: &str, total: f64, free: f64, provisioned: f64) -> PoolCandidate {
        let mut candidate = PoolCandidate {
            node_id: node.into(),
            backend: "file".into(),
            pool: "default".into(),
            availability_zone: "nova".into(),
            total_gib: total,
            free_gib: free,
            provisioned_gib: provisioned,
            allocated_gib: provisioned,
            total_volumes: 0,
            thin_provisioning_support: true,
            thick_provisioning_support: false,
            max_over_subscription_ratio: 1.0,
            reserved_percentage: 0,
            capabilities: HashMap::new(),
        };
        candidate.add_standard_capabilities(true);
        candidate
    }

    fn request(size: f64) -> PlacementRequest {
        PlacementRequest { size_gib: size, ..Default::default() }
    }

    fn best(pools: &[PoolCandidate], request: &PlacementRequest) -> Result<String, ServiceError> {
        rank(pools, request, &[(Weigher::Capacity, 1.0)]).map(|ranked| ranked[0].node_id.clone())
    }

    #[test]
    fn the_pool_with_most_virtual_free_space_wins() {
        let pools = [pool("a", 100.0, 100.0, 80.0), pool("b", 100.0, 100.0, 10.0), pool("c", 50.0, 50.0, 0.0)];
        assert_eq!(best(&pools, &request(5.0)).unwrap(), "b");
        let ranked = rank(&pools, &request(5.0), &[(Weigher::Capacity, 1.0)]).unwrap();
        let order: Vec<&str> = ranked.iter().map(|pool| pool.node_id.as_str()).collect();
        assert_eq!(order, ["b", "c", "a"]);
    }

    #[test]
    fn too_big_for_every_pool_is_resource_exhausted_with_the_largest_fit() {
        let pools = [pool("a", 100.0, 100.0, 80.0), pool("b", 100.0, 40.0, 10.0)];
        let error = best(&pools, &request(500.0)).unwrap_err();
        assert_eq!(error.code, ErrorCode::NoCapacity);
        assert!(error.message.contains("500 GiB"), "{}", error.message);
        assert!(error.message.contains("40 GiB"), "{}", error.message);
    }

    #[test]
    fn no_nodes_wrong_zone_and_missing_capabilities_are_explained() {
        assert!(best(&[], &request(1.0)).unwrap_err().message.contains("no volume node is reporting"));
        let zoned = PlacementRequest { size_gib: 1.0, availability_zones: vec!["az9".into()], ..Default::default() };
        let error = best(&[pool("a", 10.0, 10.0, 0.0)], &zoned).unwrap_err();
        assert!(error.message.contains("az9") && error.message.contains("nova"), "{}", error.message);
        let lvm_only = PlacementRequest {
            size_gib: 1.0,
            extra_specs: [("volume_backend_name".to_owned(), "lvm".to_owned())].into(),
            ..Default::default()
        };
        let error = best(&[pool("a", 10.0, 10.0, 0.0)], &lvm_only).unwrap_err();
        assert!(error.message.contains("volume_backend_name=lvm"), "{}", error.message);
    }

    #[test]
    fn booked_but_unreported_capacity_is_debited() {
        let reported = pool("a", 100.0, 100.0, 10.0).with_booked(95.0);
        assert_eq!(reported.provisioned_gib, 95.0);
        assert!(best(&[reported], &request(10.0)).is_err());
    }

    /// Cinder's behaviour on a table of pools: thin, thick, reserved, over-subscribed, zones and
    /// extra specs, each row checked against what Cinder's filters and CapacityWeigher choose.
    #[test]
    fn a_table_of_pools_places_like_cinder() {
        let mut thin_oversubscribed = pool("thin-20x", 100.0, 30.0, 1500.0);
        thin_oversubscribed.max_over_subscription_ratio = 20.0;
        let mut thick = pool("thick", 200.0, 150.0, 50.0);
        thick.thin_provisioning_support = false;
        thick.thick_provisioning_support = true;
        thick.capabilities.insert("thin_provisioning_support".into(), "False".into());
        thick.capabilities.insert("thick_provisioning_support".into(), "True".into());
        let mut reserved = pool("reserved", 100.0, 100.0, 0.0);
        reserved.reserved_percentage = 50;
        let mut az2 = pool("az2", 700.0, 700.0, 0.0);
        az2.availability_zone = "az2".into();
        let mut ssd = pool("ssd", 50.0, 50.0, 0.0);
        ssd.capabilities.insert("disk".into(), "ssd nvme".into());
        let pools = [thin_oversubscribed, thick, reserved, az2, ssd];

        let nova = |request: PlacementRequest| PlacementRequest { availability_zones: vec!["nova".into()], ..request };
        let spec = |key: &str, value: &str| -> HashMap<String, String> { [(key.to_owned(), value.to_owned())].into() };
        let rows: Vec<(&str, PlacementRequest, Result<&str, &str>)> = vec![
            // In nova: thin-20x has (100 * 20 - 1500) = 500 GiB virtual free, thick min(150, 200 - 50)
            // = 150, reserved (100 - 50) - 0 = 50, ssd 50.
            ("largest virtual free wins", nova(request(10.0)), Ok("thin-20x")),
            // (1500 + 600) / 100 = 21 > 20: thin-20x is out; az2 takes it.
            ("over-subscription ratio bounds thin pools", request(600.0), Ok("az2")),
            ("zones filter first", nova(request(601.0)), Err("no pool can fit")),
            (
                "a zone picks its pools",
                PlacementRequest { availability_zones: vec!["az2".into()], ..request(1.0) },
                Ok("az2"),
            ),
            ("thick requests use thick pools", PlacementRequest { thick: true, ..request(120.0) }, Ok("thick")),
            ("thick math uses free space", PlacementRequest { thick: true, ..request(151.0) }, Err("no pool can fit")),
            (
                "capabilities operators",
                PlacementRequest { extra_specs: spec("disk", "<in> nvme"), ..request(1.0) },
                Ok("ssd"),
            ),
            (
                "capabilities: scoped keys",
                PlacementRequest {
                    extra_specs: spec("capabilities:thick_provisioning_support", "<is> True"),
                    ..request(1.0)
                },
                Ok("thick"),
            ),
            (
                "unknown capability fails",
                PlacementRequest { extra_specs: spec("replication", "<is> True"), ..request(1.0) },
                Err("capabilities"),
            ),
            (
                "ignored scopes do not filter",
                nova(PlacementRequest { extra_specs: spec("provisioning:min_iops", "100"), ..request(10.0) }),
                Ok("thin-20x"),
            ),
            ("the biggest pool anywhere", request(10.0), Ok("az2")),
        ];
        for (name, request, expected) in rows {
            let outcome = best(&pools, &request);
            match (expected, outcome) {
                (Ok(node), Ok(chosen)) => assert_eq!(chosen, node, "{name}"),
                (Err(fragment), Err(error)) => assert!(error.message.contains(fragment), "{name}: {}", error.message),
                (expected, outcome) => panic!("{name}: expected {expected:?}, got {outcome:?}"),
            }
        }
    }

    #[test]
    fn reserved_pools_keep_their_reserve_in_placement() {
        let mut reserved = pool("reserved", 100.0, 100.0, 0.0);
        reserved.reserved_percentage = 50;
        assert!(best(std::slice::from_ref(&reserved), &request(50.0)).is_ok());
        assert!(best(&[reserved], &request(51.0)).is_err());
    }
}
