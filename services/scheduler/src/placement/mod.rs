//! Placement: Cinder's filter-then-weigh scheduling as pure functions over pool candidates.
//! Filters drop pools that cannot take the volume; weighers rank the rest (each weigher's
//! weights are normalised to 0..1, multiplied by its multiplier and summed); the highest wins.

pub mod extra_specs;
pub mod filters;
pub mod weighers;

use std::{collections::HashMap, sync::Arc};

use basalt::{ErrorCode, ServiceError};

pub use weighers::Weigher;

const GIB: f64 = (1u64 << 30) as f64;

/// What a node's report says of one of its pools that no decision changes: made once per report
/// and shared by every decision that reads it, so a decision copies numbers, not names and maps.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolIdentity {
    pub node_id: String,
    pub backend: String,
    pub pool: String,
    pub availability_zone: String,
    /// Cinder's `host@backend#pool`.
    pub host: String,
    /// Capabilities matched against volume-type extra specs.
    pub capabilities: HashMap<String, String>,
}

/// One pool as placement sees it, in GiB like Cinder's formulas.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolCandidate {
    pub identity: Arc<PoolIdentity>,
    pub total_gib: f64,
    pub free_gib: f64,
    pub provisioned_gib: f64,
    pub allocated_gib: f64,
    pub total_volumes: u64,
    pub thin_provisioning_support: bool,
    pub thick_provisioning_support: bool,
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: u32,
}

impl PoolCandidate {
    pub fn from_report(node_id: &str, availability_zone: &str, pool: &basalt::proto::PoolCapacity) -> Self {
        let total_gib = pool.total_bytes as f64 / GIB;
        let free_gib = pool.free_bytes as f64 / GIB;
        // The report's fields as capabilities too, as Cinder's host state exposes them.
        let title = |value: bool| if value { "True" } else { "False" }.to_owned();
        let standard = [
            ("pool_name", pool.name.clone()),
            ("backend", pool.backend.clone()),
            ("availability_zone", availability_zone.to_owned()),
            ("total_capacity_gb", format!("{}", total_gib.floor())),
            ("free_capacity_gb", format!("{}", free_gib.floor())),
            ("reserved_percentage", pool.reserved_percentage.to_string()),
            ("max_over_subscription_ratio", pool.max_over_subscription_ratio.to_string()),
            ("thin_provisioning_support", title(pool.thin_provisioning_support)),
            ("thick_provisioning_support", title(pool.thick_provisioning_support)),
            ("multiattach", title(pool.multiattach)),
        ];
        let mut capabilities = pool.capabilities.clone();
        for (key, value) in standard {
            capabilities.entry(key.to_owned()).or_insert(value);
        }
        Self {
            identity: Arc::new(PoolIdentity {
                node_id: node_id.to_owned(),
                backend: pool.backend.clone(),
                pool: pool.name.clone(),
                availability_zone: availability_zone.to_owned(),
                host: format!("{node_id}@{}#{}", pool.backend, pool.name),
                capabilities,
            }),
            total_gib,
            free_gib,
            provisioned_gib: pool.provisioned_bytes as f64 / GIB,
            allocated_gib: pool.allocated_bytes as f64 / GIB,
            total_volumes: pool.total_volumes,
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
        self.allocated_gib = self.allocated_gib.max(booked_gib);
        if !self.thin_provisioning_support {
            self.free_gib = (self.free_gib - unreported).max(0.0);
        }
        self
    }

    pub fn node_id(&self) -> &str {
        &self.identity.node_id
    }

    pub fn availability_zone(&self) -> &str {
        &self.identity.availability_zone
    }

    /// Cinder's `host@backend#pool`.
    pub fn host(&self) -> &str {
        &self.identity.host
    }

    /// The volume service the pool belongs to, as `os-services` names it: `host@backend`.
    pub fn service(&self) -> &str {
        // The host is made as `{node_id}@{backend}#{pool}`.
        &self.host()[..self.identity.node_id.len() + 1 + self.identity.backend.len()]
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

/// How many pools a ranking returns: the ones a create tries to claim, in order.
pub const RANKED: usize = 16;

/// The best [`RANKED`] pools that pass the filters, best first; or why none does. Two passes over
/// `candidates` and no copy of them: the first filters and finds each weigher's range, the second
/// weighs and keeps the best.
pub fn rank<'a>(
    candidates: impl Iterator<Item = &'a PoolCandidate> + Clone,
    request: &PlacementRequest,
    weighers: &[(Weigher, f64)],
) -> Result<Vec<PoolCandidate>, ServiceError> {
    let (mut any, mut in_zone, mut capable, mut fitting) = (false, false, false, false);
    let mut largest = 0.0_f64;
    let mut normaliser = weighers::Normaliser::new(weighers);
    for pool in candidates.clone() {
        any = true;
        if !filters::availability_zone(pool, request) {
            continue;
        }
        in_zone = true;
        if !filters::capabilities(pool, &request.extra_specs) {
            continue;
        }
        capable = true;
        if !filters::capacity(pool, request) {
            largest = largest.max(filters::largest_fit_gib(pool, request.thick));
            continue;
        }
        fitting = true;
        normaliser.see(pool, request.thick);
    }
    if !any {
        return Err(ServiceError::new(
            ErrorCode::NoCapacity,
            "no valid node: no volume node is reporting capacity; start a volume node or check that it reaches the bus",
        ));
    }
    if !in_zone {
        let mut zones: Vec<&str> = candidates.map(PoolCandidate::availability_zone).collect();
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
    if !capable {
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
    if !fitting {
        return Err(ServiceError::new(
            ErrorCode::NoCapacity,
            format!(
                "no valid node: no pool can fit a {} GiB volume; the most any pool can take now is {} GiB",
                request.size_gib,
                largest.floor()
            ),
        ));
    }
    // Highest weight first; ties go to the first host name, so placement is deterministic.
    let mut best: Vec<(f64, &PoolCandidate)> = Vec::with_capacity(RANKED + 1);
    let fits = |pool: &&PoolCandidate| {
        filters::availability_zone(pool, request)
            && filters::capabilities(pool, &request.extra_specs)
            && filters::capacity(pool, request)
    };
    for pool in candidates.filter(fits) {
        let weight = normaliser.weight(pool, request.thick);
        let ahead = best.partition_point(|(other_weight, other)| match other_weight.total_cmp(&weight) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => other.host() < pool.host(),
        });
        if ahead < RANKED {
            best.insert(ahead, (weight, pool));
            best.truncate(RANKED);
        }
    }
    Ok(best.into_iter().map(|(_, pool)| pool.clone()).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A thin pool of node `node` in zone `nova`, its sizes in GiB, as its report would give it.
    pub(crate) fn pool(node: &str, total: f64, free: f64, provisioned: f64) -> PoolCandidate {
        let bytes = |gib: f64| (gib * GIB) as u64;
        let report = basalt::proto::PoolCapacity {
            name: "default".into(),
            backend: "file".into(),
            total_bytes: bytes(total),
            free_bytes: bytes(free),
            provisioned_bytes: bytes(provisioned),
            allocated_bytes: bytes(provisioned),
            thin_provisioning_support: true,
            max_over_subscription_ratio: 1.0,
            multiattach: true,
            ..Default::default()
        };
        PoolCandidate::from_report(node, "nova", &report)
    }

    /// `pool` with its identity changed by `change` (its zone, its capabilities).
    pub(crate) fn with_identity(mut pool: PoolCandidate, change: impl FnOnce(&mut PoolIdentity)) -> PoolCandidate {
        change(Arc::make_mut(&mut pool.identity));
        pool
    }

    fn request(size: f64) -> PlacementRequest {
        PlacementRequest { size_gib: size, ..Default::default() }
    }

    fn best(pools: &[PoolCandidate], request: &PlacementRequest) -> Result<String, ServiceError> {
        rank(pools.iter(), request, &[(Weigher::Capacity, 1.0)]).map(|ranked| ranked[0].node_id().to_owned())
    }

    #[test]
    fn the_pool_with_most_virtual_free_space_wins() {
        let pools = [pool("a", 100.0, 100.0, 80.0), pool("b", 100.0, 100.0, 10.0), pool("c", 50.0, 50.0, 0.0)];
        assert_eq!(best(&pools, &request(5.0)).unwrap(), "b");
        let ranked = rank(pools.iter(), &request(5.0), &[(Weigher::Capacity, 1.0)]).unwrap();
        let order: Vec<&str> = ranked.iter().map(PoolCandidate::node_id).collect();
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
        let thick = with_identity(thick, |identity| {
            identity.capabilities.insert("thin_provisioning_support".into(), "False".into());
            identity.capabilities.insert("thick_provisioning_support".into(), "True".into());
        });
        let mut reserved = pool("reserved", 100.0, 100.0, 0.0);
        reserved.reserved_percentage = 50;
        let az2 = with_identity(pool("az2", 700.0, 700.0, 0.0), |identity| identity.availability_zone = "az2".into());
        let ssd = with_identity(pool("ssd", 50.0, 50.0, 0.0), |identity| {
            identity.capabilities.insert("disk".into(), "ssd nvme".into());
        });
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
    fn a_ranking_keeps_the_best_few_best_first_and_ties_by_host_name() {
        // Forty pools, two of each size: the ranking is the largest first, and of two equal
        // pools the one whose host name sorts first.
        let pools: Vec<PoolCandidate> =
            (0..40).map(|index| pool(&format!("n{index:02}"), 100.0 + (index / 2) as f64, 200.0, 0.0)).collect();
        let ranked = rank(pools.iter(), &request(1.0), &[(Weigher::Capacity, 1.0)]).unwrap();
        let order: Vec<&str> = ranked.iter().map(PoolCandidate::node_id).collect();
        let expected: Vec<String> = (0..RANKED / 2)
            .flat_map(|pair| [38 - 2 * pair, 39 - 2 * pair])
            .map(|index| format!("n{index:02}"))
            .collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn reserved_pools_keep_their_reserve_in_placement() {
        let mut reserved = pool("reserved", 100.0, 100.0, 0.0);
        reserved.reserved_percentage = 50;
        assert!(best(std::slice::from_ref(&reserved), &request(50.0)).is_ok());
        assert!(best(&[reserved], &request(51.0)).is_err());
    }
}
