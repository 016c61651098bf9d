//! Every pool placement can pick, in one table a decision walks from end to end, with what is
//! booked on each. A pool keeps its slot from report to report, so a decision over thousands of
//! pools reads one array and reads no database table.
//!
//! The bookings (GiB claimed per pool, and which volume services are disabled) are read from the
//! database in the background every [`BOOKINGS_REFRESH`] (a decision reads them itself only when
//! they are older than [`BOOKINGS_MAX_AGE`]), and each placement decision this scheduler makes
//! counts at once (as Cinder's host state consumes a placed volume), so decisions made together
//! spread. A decision whose volume is not made after all stays counted until the next read: the
//! error is on the safe side. The guarded increment in the claims table stays the authority, and
//! a refusal made from these figures is made again from the database's before it is given.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use basalt::{ErrorCode, ServiceError};

use crate::placement::PoolCandidate;

/// How often the bookings are read from the database in the background: what other schedulers
/// booked, what deletes gave back and which services an admin disabled elsewhere show within this.
pub const BOOKINGS_REFRESH: Duration = Duration::from_secs(1);
/// How old the bookings a decision uses may be; older ones (the background read is late, or they
/// were forgotten) the decision reads itself.
pub const BOOKINGS_MAX_AGE: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct PoolTable {
    slots: Vec<PoolSlot>,
    by_host: HashMap<String, usize>,
    /// GiB booked per pool host as the database last gave them, for pools that report later.
    booked: HashMap<String, i64>,
    /// Disabled volume services (`node@backend`) as the database last gave them.
    disabled: BTreeSet<String>,
    read_at: Option<Instant>,
}

#[derive(Debug)]
struct PoolSlot {
    /// With the bookings applied: what filters and weighers read.
    candidate: PoolCandidate,
    received_at: Instant,
    stale_window: Duration,
    /// Its node's latest report has it.
    reported: bool,
    disabled: bool,
    booked_gib: i64,
    /// As its node's latest report gave it.
    as_reported: PoolCandidate,
}

impl PoolSlot {
    fn is_fresh(&self, now: Instant) -> bool {
        self.reported && now.saturating_duration_since(self.received_at) <= self.stale_window
    }

    fn book(&mut self, booked_gib: i64) {
        self.booked_gib = booked_gib;
        self.candidate = self.as_reported.clone().with_booked(booked_gib as f64);
    }
}

impl PoolTable {
    /// A node's new report: its pools, received at `received_at`; those of `previous` it no
    /// longer has leave placement.
    pub fn report(
        &mut self,
        previous: &[PoolCandidate],
        pools: &[PoolCandidate],
        received_at: Instant,
        stale_window: Duration,
    ) {
        for pool in previous {
            if let Some(&index) = self.by_host.get(pool.host()) {
                self.slots[index].reported = false;
            }
        }
        for pool in pools {
            match self.by_host.get(pool.host()) {
                Some(&index) => {
                    let slot = &mut self.slots[index];
                    (slot.as_reported, slot.received_at, slot.stale_window, slot.reported) =
                        (pool.clone(), received_at, stale_window, true);
                    slot.book(slot.booked_gib);
                }
                None => {
                    let mut slot = PoolSlot {
                        candidate: pool.clone(),
                        received_at,
                        stale_window,
                        reported: true,
                        disabled: self.disabled.contains(pool.service()),
                        booked_gib: 0,
                        as_reported: pool.clone(),
                    };
                    slot.book(self.booked.get(pool.host()).copied().unwrap_or(0));
                    self.by_host.insert(pool.host().to_owned(), self.slots.len());
                    self.slots.push(slot);
                }
            }
        }
    }

    /// Whether the bookings were read from the database within `age`.
    pub fn read_within(&self, age: Duration) -> bool {
        self.read_at.is_some_and(|read_at| read_at.elapsed() <= age)
    }

    /// The bookings the database gave in a read that started at `read_at`.
    pub fn apply_bookings(&mut self, booked: HashMap<String, i64>, disabled: BTreeSet<String>, read_at: Instant) {
        for slot in &mut self.slots {
            slot.disabled = disabled.contains(slot.as_reported.service());
            slot.book(booked.get(slot.as_reported.host()).copied().unwrap_or(0));
        }
        (self.booked, self.disabled, self.read_at) = (booked, disabled, Some(read_at));
    }

    /// Makes the next decision read the bookings from the database: after a change this
    /// scheduler made that they do not show (a service disabled), or a refusal they led to.
    pub fn forget_bookings(&mut self) {
        self.read_at = None;
    }

    /// Counts `gib` more on pool `host`, for the decisions that follow.
    pub fn count(&mut self, host: &str, gib: i64) {
        if let Some(&index) = self.by_host.get(host) {
            let slot = &mut self.slots[index];
            slot.book(slot.booked_gib + gib);
        }
    }

    /// Every pool of a fresh report whose volume service is enabled, with its bookings applied;
    /// or why there is none when every such pool's service is disabled.
    pub fn usable(&self, now: Instant) -> Result<impl Iterator<Item = &PoolCandidate> + Clone, ServiceError> {
        let usable =
            self.slots.iter().filter(move |slot| slot.is_fresh(now) && !slot.disabled).map(|slot| &slot.candidate);
        if usable.clone().next().is_none() {
            let left_out: BTreeSet<&str> = self
                .slots
                .iter()
                .filter(|slot| slot.is_fresh(now) && slot.disabled)
                .map(|slot| slot.as_reported.service())
                .collect();
            if !left_out.is_empty() {
                return Err(ServiceError::new(
                    ErrorCode::NoCapacity,
                    format!(
                        "no valid node: every volume service that reports is disabled ({}); an admin enables one \
                         with os-services enable",
                        left_out.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        Ok(usable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::tests::pool;

    const WINDOW: Duration = Duration::from_secs(30);

    fn hosts(table: &PoolTable) -> Vec<String> {
        table.usable(Instant::now()).unwrap().map(|pool| pool.host().to_owned()).collect()
    }

    #[test]
    fn pools_keep_their_slot_and_leave_with_their_report() {
        let mut table = PoolTable::default();
        let (a, b) = (pool("a", 10.0, 10.0, 0.0), pool("b", 10.0, 10.0, 0.0));
        table.report(&[], std::slice::from_ref(&a), Instant::now(), WINDOW);
        table.report(&[], std::slice::from_ref(&b), Instant::now(), WINDOW);
        assert_eq!(hosts(&table), ["a@file#default", "b@file#default"]);
        // a's node reports again with nothing: its pool leaves; b's stays where it was.
        table.report(std::slice::from_ref(&a), &[], Instant::now(), WINDOW);
        assert_eq!(hosts(&table), ["b@file#default"]);
        // A report older than its window is stale.
        table.report(std::slice::from_ref(&b), std::slice::from_ref(&b), Instant::now() - WINDOW * 2, WINDOW);
        assert!(hosts(&table).is_empty());
    }

    #[test]
    fn bookings_apply_to_pools_reported_before_and_after_the_read() {
        let mut table = PoolTable::default();
        table.report(&[], &[pool("a", 10.0, 10.0, 0.0)], Instant::now(), WINDOW);
        assert!(!table.read_within(BOOKINGS_MAX_AGE), "nothing read yet");
        let booked = [("a@file#default".to_owned(), 4), ("b@file#default".to_owned(), 6)].into();
        table.apply_bookings(booked, ["c@file".to_owned()].into(), Instant::now());
        assert!(table.read_within(BOOKINGS_MAX_AGE));
        table.report(&[], &[pool("b", 10.0, 10.0, 0.0), pool("c", 10.0, 10.0, 0.0)], Instant::now(), WINDOW);
        table.count("a@file#default", 1);
        let provisioned: Vec<(String, f64)> =
            table.usable(Instant::now()).unwrap().map(|pool| (pool.host().to_owned(), pool.provisioned_gib)).collect();
        assert_eq!(provisioned, [("a@file#default".to_owned(), 5.0), ("b@file#default".to_owned(), 6.0)]);
        table.forget_bookings();
        assert!(!table.read_within(BOOKINGS_MAX_AGE));
        // Only disabled services report: the refusal names them.
        let every = ["a@file".to_owned(), "b@file".to_owned(), "c@file".to_owned()].into();
        table.apply_bookings(HashMap::new(), every, Instant::now());
        let refused = table.usable(Instant::now()).map(|pools| pools.count()).unwrap_err();
        assert!(refused.message.contains("a@file, b@file, c@file"), "{}", refused.message);
    }
}
