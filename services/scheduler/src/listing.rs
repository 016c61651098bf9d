//! Cinder-style listings, sorted, filtered and paged in the database: sort by any of a few keys
//! (then by id, so pages are stable), then a page of at most 1,000 after a marker (the last id
//! seen) and an offset, with the count of every match on request.

use basalt::{
    ServiceError,
    context::CallContext,
    proto::{PageInfo, PageRequest, SortKey},
};
use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, ModelTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Value,
    sea_query::{Expr, LikeExpr},
};

use crate::db::db_error;

const MAX_PAGE_SIZE: usize = 1000;

/// The rows a caller may list: its own project's, or every project's with `all_projects`, which
/// only admins may ask for; `what` names the rows in the refusal.
pub fn project_scope(
    context: &CallContext,
    all_projects: bool,
    project_column: impl ColumnTrait,
    what: &str,
) -> Result<Condition, ServiceError> {
    if all_projects {
        context.require_admin(&format!("listing the {what} of all projects"))?;
        return Ok(Condition::all());
    }
    Ok(Condition::all().add(project_column.eq(context.project_id.as_str())))
}

/// Rows whose `column` contains `text` as it is: LIKE's wildcards in it (`%`, `_`) match only
/// themselves (Cinder's `name~`).
pub fn contains(column: impl ColumnTrait, text: &str) -> Condition {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    Condition::all().add(column.like(LikeExpr::new(pattern).escape('\\')))
}

/// `condition`, and the rows of `table` whose JSON `metadata` holds every item of `wanted`: jsonb
/// containment on PostgreSQL, `json_each` on SQLite; keys and values are bound, never spliced into
/// the SQL.
pub fn metadata_holds(
    mut condition: Condition,
    backend: DbBackend,
    table: &str,
    wanted: &HashMap<String, String>,
) -> Condition {
    if wanted.is_empty() {
        return condition;
    }
    match backend {
        DbBackend::Postgres => {
            let object = serde_json::Value::Object(
                wanted.iter().map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone()))).collect(),
            );
            // PostgreSQL's placeholders are numbered (`?` is one of jsonb's operators).
            condition = condition.add(Expr::cust_with_values(format!("{table}.metadata @> $1"), [Value::from(object)]));
        }
        _ => {
            for (key, value) in wanted {
                let item = format!(
                    "EXISTS (SELECT 1 FROM json_each({table}.metadata) AS item WHERE item.key = ? AND item.value = ?)"
                );
                condition = condition.add(Expr::cust_with_values(item, [key.as_str(), value.as_str()]));
            }
        }
    }
    condition
}

/// The columns the sort keys of Cinder's volume, snapshot and backup listings name.
pub struct SortColumns<C> {
    pub created_at: C,
    /// Volumes, snapshots and backups sort by these too; groups and group snapshots do not.
    pub updated_at: Option<C>,
    pub name: C,
    pub size: Option<C>,
    pub status: C,
    pub id: C,
}

impl<C: Copy> SortColumns<C> {
    /// The columns `sort` names, each with whether it is descending; newest first when it names
    /// none, as Cinder lists. `what` names the listing in errors.
    pub fn order(&self, sort: &[SortKey], what: &str) -> Result<Vec<(C, bool)>, ServiceError> {
        if sort.is_empty() {
            return Ok(vec![(self.created_at, true)]);
        }
        sort.iter()
            .map(|key| {
                let column = match key.key.as_str() {
                    "created_at" => Some(self.created_at),
                    "updated_at" => self.updated_at,
                    "name" | "display_name" => Some(self.name),
                    "size" => self.size,
                    "status" => Some(self.status),
                    "id" => Some(self.id),
                    _ => None,
                };
                let column = column.ok_or_else(|| {
                    let keys = [
                        Some("created_at"),
                        self.updated_at.map(|_| "updated_at"),
                        Some("name"),
                        self.size.map(|_| "size"),
                        Some("status"),
                    ];
                    let keys: Vec<&str> = keys.into_iter().flatten().collect();
                    ServiceError::invalid(format!(
                        "cannot sort {what} by {:?}: use {} or id",
                        basalt::error::excerpt(&key.key),
                        keys.join(", ")
                    ))
                })?;
                Ok((column, key.descending))
            })
            .collect()
    }
}

/// Sorts and pages `items` of a listing that comes from a node rather than the database (what a
/// pool holds): by Cinder's `reference` (the name; the default) and `size`, then by name; the
/// marker is a name. `key` gives each item's name and size.
pub fn page_by_name<T: Clone>(
    items: &mut [T],
    sort: &[SortKey],
    page: Option<&PageRequest>,
    key: impl Fn(&T) -> (&str, u64),
) -> Result<(Vec<T>, PageInfo), ServiceError> {
    let mut order = Vec::new();
    for sort_key in sort {
        match sort_key.key.as_str() {
            "reference" | "source-name" => order.push((false, sort_key.descending)),
            "size" => order.push((true, sort_key.descending)),
            other => {
                return Err(ServiceError::invalid(format!(
                    "cannot sort by {:?}: use reference or size",
                    basalt::error::excerpt(other)
                )));
            }
        }
    }
    items.sort_by(|a, b| {
        let ((a_name, a_size), (b_name, b_size)) = (key(a), key(b));
        order
            .iter()
            .map(|(by_size, descending)| {
                let ordering = if *by_size { a_size.cmp(&b_size) } else { a_name.cmp(b_name) };
                if *descending { ordering.reverse() } else { ordering }
            })
            .find(|ordering| ordering.is_ne())
            .unwrap_or_else(|| a_name.cmp(b_name))
    });
    let page = page.cloned().unwrap_or_default();
    let start = match page.marker.as_str() {
        "" => 0,
        marker => items.iter().position(|item| key(item).0 == marker).map(|index| index + 1).ok_or_else(|| {
            ServiceError::invalid(format!("marker {:?} is not an item of this listing", basalt::error::excerpt(marker)))
        })?,
    } + page.offset as usize;
    let limit = if page.limit == 0 { MAX_PAGE_SIZE } else { (page.limit as usize).min(MAX_PAGE_SIZE) };
    let rows: Vec<T> = items.iter().skip(start).take(limit).cloned().collect();
    let next_marker = match items.len() > start + rows.len() {
        true => rows.last().map(|item| key(item).0.to_owned()).unwrap_or_default(),
        false => String::new(),
    };
    Ok((rows, PageInfo { next_marker, total_count: None }))
}

/// A listing the database sorts and pages: ordered by `order`, then by id ascending so pages are
/// stable; a marker is the last row of the previous page, and the next page starts strictly after
/// it in that order (keyset pagination, so a page costs the same at any depth).
pub struct Keyset<E: EntityTrait> {
    /// Columns and whether each is descending.
    pub order: Vec<(E::Column, bool)>,
    pub id: E::Column,
    pub id_of: fn(&E::Model) -> String,
}

impl<E> Keyset<E>
where
    E: EntityTrait,
    E::Model: ModelTrait<Entity = E> + Sync,
{
    /// The page of rows matching `filter`; `what` names the rows in errors.
    pub async fn page(
        &self,
        db: &impl ConnectionTrait,
        filter: Condition,
        page: Option<&PageRequest>,
        with_count: bool,
        what: &str,
    ) -> Result<(Vec<E::Model>, PageInfo), ServiceError> {
        let page = page.cloned().unwrap_or_default();
        let limit = if page.limit == 0 { MAX_PAGE_SIZE } else { (page.limit as usize).min(MAX_PAGE_SIZE) };
        let total_count = match with_count {
            true => Some(E::find().filter(filter.clone()).count(db).await.map_err(db_error)?),
            false => None,
        };
        let mut keys = self.order.clone();
        keys.push((self.id, false));
        let mut query = E::find().filter(filter.clone());
        if !page.marker.is_empty() {
            let marker = E::find()
                .filter(filter)
                .filter(self.id.eq(page.marker.as_str()))
                .one(db)
                .await
                .map_err(db_error)?
                .ok_or_else(|| {
                    ServiceError::invalid(format!(
                        "marker {} is not a {what} of this listing; start again without a marker",
                        basalt::error::excerpt(&page.marker)
                    ))
                })?;
            query = query.filter(after(&marker, &keys));
        }
        for (column, descending) in &keys {
            query = match descending {
                true => query.order_by_desc(*column),
                false => query.order_by_asc(*column),
            };
        }
        let mut rows = query.offset(page.offset as u64).limit(limit as u64 + 1).all(db).await.map_err(db_error)?;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next_marker = match has_more {
            true => rows.last().map(self.id_of).unwrap_or_default(),
            false => String::new(),
        };
        Ok((rows, PageInfo { next_marker, total_count }))
    }
}

/// The rows after `marker` in the order of `keys`: greater (or, descending, smaller) in the first
/// key, or equal in it and after in the rest. The first key's bound is also stated alone (it
/// follows from the rest), so the database walks that key's index from the marker on instead of
/// reading every row to test the alternatives.
fn after<M: ModelTrait>(marker: &M, keys: &[(<M::Entity as EntityTrait>::Column, bool)]) -> Condition {
    let mut bounded = Condition::all();
    if let Some((first, descending)) = keys.first() {
        let value = marker.get(*first);
        bounded = bounded.add(if *descending { first.lte(value) } else { first.gte(value) });
    }
    let mut any = Condition::any();
    for (index, (column, descending)) in keys.iter().enumerate() {
        let mut step = Condition::all();
        for (earlier, _) in &keys[..index] {
            step = step.add(earlier.eq(marker.get(*earlier)));
        }
        let value = marker.get(*column);
        step = step.add(if *descending { column.lt(value) } else { column.gt(value) });
        any = any.add(step);
    }
    bounded.add(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_sort_keys_are_accepted_and_newest_first_is_the_default() {
        let columns = SortColumns { created_at: 1, updated_at: Some(2), name: 3, size: Some(4), status: 5, id: 6 };
        let key = |key: &str, descending| SortKey { key: key.into(), descending };
        assert_eq!(columns.order(&[], "volumes").unwrap(), [(1, true)]);
        assert_eq!(
            columns.order(&[key("display_name", false), key("size", true)], "volumes").unwrap(),
            [(3, false), (4, true)]
        );
        let error = columns.order(&[key("password", false)], "volumes").unwrap_err();
        assert!(error.message.contains("created_at"), "{}", error.message);
    }
}
