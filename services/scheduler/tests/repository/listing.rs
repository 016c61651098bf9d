//! Keyset pagination in the database against the plain in-memory definition of a listing: sort
//! every row by the keys (then by id), cut pages. Random rows with many ties, random orders and
//! page sizes, on SQLite and PostgreSQL: walking the pages by marker must give exactly the sorted
//! rows, once each.

use std::cmp::Ordering;

use std::{collections::HashMap, sync::Arc};

use basalt::{
    bus::Bus,
    context::{ADMIN_ROLES, CallContext},
    ids::{MessageId, NodeId, VolumeId},
    proto::{AttachStatus, ListVolumesRequest, PageRequest, SortKey, VolumeStatus},
    tls::{CertificateAuthority, Role},
};
use basalt_scheduler::{
    Core,
    capacity::CapacityView,
    db::{json::StringMap, message, volume},
    listing::Keyset,
    nodes::NodeClients,
    volumes::Volumes,
};
use chrono::{TimeDelta, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, Set};

use crate::{common::TestDatabase, project};

/// A small deterministic generator (xorshift), so a failure can be replayed from its seed.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

type Key = (&'static str, message::Column, fn(&message::Model, &message::Model) -> Ordering);

const KEYS: [Key; 5] = [
    ("created_at", message::Column::CreatedAt, |a, b| a.created_at.cmp(&b.created_at)),
    ("expires_at", message::Column::ExpiresAt, |a, b| a.expires_at.cmp(&b.expires_at)),
    ("event_id", message::Column::EventId, |a, b| a.event_id.cmp(&b.event_id)),
    ("resource_type", message::Column::ResourceType, |a, b| a.resource_type.cmp(&b.resource_type)),
    ("request_id", message::Column::RequestId, |a, b| a.request_id.cmp(&b.request_id)),
];

async fn insert_rows(db: &DatabaseConnection, random: &mut Random, count: usize) -> Vec<message::Model> {
    let owner = project();
    let base = Utc::now();
    let mut rows = Vec::new();
    for _ in 0..count {
        // Few distinct values per column, so most comparisons tie and the later keys decide.
        let created = base - TimeDelta::seconds(random.below(4) as i64);
        let model = message::ActiveModel {
            id: Set(MessageId::new_random()),
            project_id: Set(owner.clone()),
            request_id: Set(random.pick(&["req-a", "req-b", "req-c"]).to_owned()),
            resource_type: Set(random.pick(&["VOLUME", "VOLUME_SNAPSHOT", "VOLUME_BACKUP"]).to_owned()),
            resource_uuid: Set(String::new()),
            event_id: Set(random.pick(&["E1", "E2"]).to_owned()),
            action_id: Set("009".into()),
            detail_id: Set("013".into()),
            message_level: Set("ERROR".into()),
            created_at: Set(created),
            expires_at: Set(created + TimeDelta::days(random.below(2) as i64 + 1)),
        }
        .insert(db)
        .await
        .unwrap();
        rows.push(model);
    }
    rows
}

#[tokio::test]
async fn keyset_pages_walk_the_rows_in_the_in_memory_order() {
    for database in TestDatabase::both().await {
        let db = database.open().await;
        let mut random = Random(0x5eed_0001);
        let rows = insert_rows(&db, &mut random, 60).await;
        let scope = Condition::all().add(message::Column::ProjectId.eq(rows[0].project_id.as_str()));
        for round in 0..40 {
            let mut order: Vec<(usize, bool)> = Vec::new();
            for _ in 0..=random.below(3) {
                let key = random.below(KEYS.len() as u64) as usize;
                if !order.iter().any(|(chosen, _)| *chosen == key) {
                    order.push((key, random.below(2) == 1));
                }
            }
            let mut expected = rows.clone();
            expected.sort_by(|a, b| {
                order
                    .iter()
                    .map(|(key, descending)| {
                        let ordering = (KEYS[*key].2)(a, b);
                        if *descending { ordering.reverse() } else { ordering }
                    })
                    .find(|ordering| ordering.is_ne())
                    .unwrap_or_else(|| a.id.to_string().cmp(&b.id.to_string()))
            });
            let keyset = Keyset::<message::Entity> {
                order: order.iter().map(|(key, descending)| (KEYS[*key].1, *descending)).collect(),
                id: message::Column::Id,
                id_of: |row| row.id.to_string(),
            };
            let limit = random.below(9) as u32 + 1;
            let names: Vec<_> = order.iter().map(|(key, descending)| (KEYS[*key].0, descending)).collect();
            let what = format!("{}: round {round}, order {names:?}, limit {limit}", database.label);

            let mut walked = Vec::new();
            let mut marker = String::new();
            loop {
                let page = PageRequest { limit, marker: marker.clone(), offset: 0 };
                let (rows, info) = keyset.page(&db, scope.clone(), Some(&page), true, "message").await.unwrap();
                assert_eq!(info.total_count, Some(expected.len() as u64), "{what}");
                assert!(rows.len() <= limit as usize, "{what}");
                walked.extend(rows.iter().map(|row| row.id));
                if info.next_marker.is_empty() {
                    break;
                }
                marker = info.next_marker;
                assert!(walked.len() < expected.len() + 1, "{what}: the pages never end");
            }
            let wanted: Vec<_> = expected.iter().map(|row| row.id).collect();
            assert_eq!(walked, wanted, "{what}");

            // An offset without a marker is the same cut of the same order.
            let offset = random.below(expected.len() as u64) as u32;
            let page = PageRequest { limit, marker: String::new(), offset };
            let (rows, _) = keyset.page(&db, scope.clone(), Some(&page), false, "message").await.unwrap();
            let cut: Vec<_> = wanted.iter().skip(offset as usize).take(limit as usize).copied().collect();
            assert_eq!(rows.iter().map(|row| row.id).collect::<Vec<_>>(), cut, "{what}, offset {offset}");
        }
        // A marker outside the listing is refused, not taken as the start.
        let page = PageRequest { limit: 5, marker: MessageId::new_random().to_string(), offset: 0 };
        let keyset =
            Keyset::<message::Entity> { order: vec![], id: message::Column::Id, id_of: |row| row.id.to_string() };
        let refused = keyset.page(&db, scope, Some(&page), false, "message").await.unwrap_err();
        assert!(refused.message.contains("not a message of this listing"), "{}", refused.message);
        database.drop_database().await;
    }
}

/// A volume listing's rows as the in-memory definition has them: filtered by each of `request`'s
/// filters, sorted by its keys (newest first when none) then by id, every page walked.
fn expected_listing(rows: &[volume::Model], request: &ListVolumesRequest) -> Vec<VolumeId> {
    let status = VolumeStatus::try_from(request.status).unwrap_or_default();
    let mut kept: Vec<&volume::Model> = rows
        .iter()
        .filter(|row| request.name.is_empty() || row.name == request.name)
        .filter(|row| request.name_contains.is_empty() || row.name.contains(&request.name_contains))
        .filter(|row| status == VolumeStatus::Unspecified || row.status == status)
        .filter(|row| request.bootable.is_none_or(|bootable| row.bootable == bootable))
        .filter(|row| request.size_gib.is_none_or(|size| row.size_gib == size as i64))
        .filter(|row| request.metadata.iter().all(|(key, value)| row.metadata.get(key) == Some(value.as_str())))
        .collect();
    let sort = if request.sort.is_empty() {
        vec![SortKey { key: "created_at".into(), descending: true }]
    } else {
        request.sort.clone()
    };
    kept.sort_by(|a, b| {
        sort.iter()
            .map(|key| {
                let ordering = match key.key.as_str() {
                    "created_at" => a.created_at.cmp(&b.created_at),
                    "name" => a.name.cmp(&b.name),
                    "size" => a.size_gib.cmp(&b.size_gib),
                    "status" => a.status.cinder_name().cmp(b.status.cinder_name()),
                    other => panic!("no reference order for {other}"),
                };
                if key.descending { ordering.reverse() } else { ordering }
            })
            .find(|ordering| ordering.is_ne())
            .unwrap_or_else(|| a.id.to_string().cmp(&b.id.to_string()))
    });
    kept.iter().map(|row| row.id).collect()
}

#[tokio::test]
async fn volume_listings_in_sql_match_the_in_memory_definition() {
    const NAMES: [&str; 6] = ["alpha", "Beta", "alpha beta", "_under", "z-9", "\u{e9}t\u{e9}"];
    const STATUSES: [VolumeStatus; 4] =
        [VolumeStatus::Available, VolumeStatus::InUse, VolumeStatus::Error, VolumeStatus::ErrorDeleting];
    const ITEMS: [(&str, &str); 4] = [("k1", "v1"), ("k1", "v2"), ("k2", "v1"), ("odd'key", "a\"b")];
    for database in TestDatabase::both().await {
        let db = database.open().await;
        let mut random = Random(0x5eed_0002);
        let owner = project();
        let base = Utc::now();
        let mut rows = Vec::new();
        for _ in 0..50 {
            let created = base - TimeDelta::seconds(random.below(5) as i64);
            let mut metadata = HashMap::new();
            for (key, value) in ITEMS {
                if random.below(3) == 0 {
                    metadata.insert(key.to_owned(), value.to_owned());
                }
            }
            let row = volume::ActiveModel {
                id: Set(VolumeId::new_random()),
                project_id: Set(owner.clone()),
                user_id: Set("tester".into()),
                name: Set(NAMES[random.below(NAMES.len() as u64) as usize].to_owned()),
                description: Set(String::new()),
                size_gib: Set(random.below(3) as i64 + 1),
                status: Set(STATUSES[random.below(STATUSES.len() as u64) as usize]),
                attach_status: Set(AttachStatus::Detached),
                availability_zone: Set("nova".into()),
                volume_type_id: Set(None),
                node_id: Set(Some(NodeId::parse("node-1").unwrap())),
                backend: Set(Some("file".into())),
                pool: Set(Some("default".into())),
                snapshot_id: Set(None),
                source_volume_id: Set(None),
                metadata: Set(StringMap::from(metadata)),
                bootable: Set(random.below(2) == 1),
                readonly: Set(false),
                multiattach: Set(false),
                error_reason: Set(String::new()),
                idempotency_key: Set(None),
                group_id: Set(None),
                migration_status: Set(None),
                created_at: Set(created),
                updated_at: Set(created),
            }
            .insert(&db)
            .await
            .unwrap();
            rows.push(row);
        }
        let capacity = Arc::new(CapacityView::default());
        let authority = CertificateAuthority::create().unwrap();
        let nodes = NodeClients::new(authority.mesh_tls(Role::Scheduler).unwrap());
        let core = Arc::new(Core::new(db.clone(), capacity, nodes, Bus::local(), "test".into(), Default::default()));
        let volumes = Volumes::new(core);
        let context = CallContext::new(owner.clone(), "tester", ADMIN_ROLES);

        for round in 0..60 {
            let mut request = ListVolumesRequest::default();
            match random.below(6) {
                0 => request.name = NAMES[random.below(NAMES.len() as u64) as usize].to_owned(),
                // Probes without a letter whose other case is in a name: SQLite's LIKE ignores ASCII case.
                1 => request.name_contains = random.pick(&["a", "_", "%", "lph", "t"]).to_owned(),
                2 => request.status = STATUSES[random.below(STATUSES.len() as u64) as usize] as i32,
                3 => request.bootable = Some(random.below(2) == 1),
                4 => request.size_gib = Some(random.below(3) + 1),
                _ => {}
            }
            for (key, value) in ITEMS {
                if random.below(5) == 0 {
                    request.metadata.insert(key.to_owned(), value.to_owned());
                }
            }
            for _ in 0..random.below(3) {
                let key = random.pick(&["created_at", "name", "size", "status"]).to_owned();
                if !request.sort.iter().any(|sort| sort.key == key) {
                    request.sort.push(SortKey { key, descending: random.below(2) == 1 });
                }
            }
            let expected = expected_listing(&rows, &request);
            let limit = random.below(7) as u32 + 1;
            let what = format!("{}: round {round}: {request:?}, limit {limit}", database.label);
            let mut walked = Vec::new();
            let mut marker = String::new();
            loop {
                request.page = Some(PageRequest { limit, marker: marker.clone(), offset: 0 });
                request.with_count = true;
                let (page, info) = volumes.list(&context, &request).await.unwrap();
                assert_eq!(info.total_count, Some(expected.len() as u64), "{what}");
                walked.extend(page.iter().map(|row| row.id));
                if info.next_marker.is_empty() {
                    break;
                }
                marker = info.next_marker;
                assert!(walked.len() <= expected.len(), "{what}: the pages never end");
            }
            assert_eq!(walked, expected, "{what}");
        }
        database.drop_database().await;
    }
}
