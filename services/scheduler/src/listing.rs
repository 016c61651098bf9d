//! Cinder-style listings shared by volumes and snapshots: sort by any of a few keys (then by id, so
//! pages are stable), then a page of at most 1,000 after a marker (the last id seen) and an offset.

use basalt::{
    ServiceError,
    context::CallContext,
    proto::{PageInfo, PageRequest, SortKey},
};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, Condition, sea_query::LikeExpr};

use crate::db::{backup, json::StringMap, snapshot, volume};

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

/// Keeps the rows whose metadata holds every item of `wanted`. Matching the decoded map makes it
/// work the same on every database.
pub fn retain_metadata<T>(rows: &mut Vec<T>, wanted: &HashMap<String, String>, metadata: impl Fn(&T) -> &StringMap) {
    if wanted.is_empty() {
        return;
    }
    rows.retain(|row| {
        let items = metadata(row);
        wanted.iter().all(|(key, value)| items.get(key) == Some(value.as_str()))
    });
}

/// What a listed row exposes to sorting and paging.
pub trait Listed: Clone {
    fn id(&self) -> String;
    fn created_at(&self) -> DateTime<Utc>;
    fn updated_at(&self) -> DateTime<Utc>;
    fn name(&self) -> &str;
    fn size_gib(&self) -> i64;
    fn status(&self) -> &'static str;
}

macro_rules! listed {
    ($model:ty) => {
        impl Listed for $model {
            fn id(&self) -> String {
                self.id.to_string()
            }
            fn created_at(&self) -> DateTime<Utc> {
                self.created_at
            }
            fn updated_at(&self) -> DateTime<Utc> {
                self.updated_at
            }
            fn name(&self) -> &str {
                &self.name
            }
            fn size_gib(&self) -> i64 {
                self.size_gib
            }
            fn status(&self) -> &'static str {
                self.status.cinder_name()
            }
        }
    };
}

listed!(volume::Model);
listed!(snapshot::Model);
listed!(backup::Model);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortField {
    CreatedAt,
    UpdatedAt,
    Name,
    Size,
    Status,
    Id,
}

fn sort_fields(sort: &[SortKey]) -> Result<Vec<(SortField, bool)>, ServiceError> {
    if sort.is_empty() {
        return Ok(vec![(SortField::CreatedAt, true)]);
    }
    sort.iter()
        .map(|key| {
            let field = match key.key.as_str() {
                "created_at" => SortField::CreatedAt,
                "updated_at" => SortField::UpdatedAt,
                "name" | "display_name" => SortField::Name,
                "size" => SortField::Size,
                "status" => SortField::Status,
                "id" => SortField::Id,
                other => {
                    return Err(ServiceError::invalid(format!(
                        "cannot sort by {other:?}: use created_at, updated_at, name, size, status or id"
                    )));
                }
            };
            Ok((field, key.descending))
        })
        .collect()
}

fn compare<T: Listed>(a: &T, b: &T, fields: &[(SortField, bool)]) -> std::cmp::Ordering {
    for (field, descending) in fields {
        let ordering = match field {
            SortField::CreatedAt => a.created_at().cmp(&b.created_at()),
            SortField::UpdatedAt => a.updated_at().cmp(&b.updated_at()),
            SortField::Name => a.name().cmp(b.name()),
            SortField::Size => a.size_gib().cmp(&b.size_gib()),
            SortField::Status => a.status().cmp(b.status()),
            SortField::Id => a.id().cmp(&b.id()),
        };
        let ordering = if *descending { ordering.reverse() } else { ordering };
        if ordering.is_ne() {
            return ordering;
        }
    }
    a.id().cmp(&b.id())
}

/// Sorts `rows` and cuts the requested page; `what` names the resource in errors.
pub fn page<T: Listed>(
    mut rows: Vec<T>,
    sort: &[SortKey],
    page: Option<&PageRequest>,
    with_count: bool,
    what: &str,
) -> Result<(Vec<T>, PageInfo), ServiceError> {
    let fields = sort_fields(sort)?;
    rows.sort_by(|a, b| compare(a, b, &fields));
    let total_count = with_count.then_some(rows.len() as u64);
    let page = page.cloned().unwrap_or_default();
    let limit = if page.limit == 0 { MAX_PAGE_SIZE } else { (page.limit as usize).min(MAX_PAGE_SIZE) };
    let after_marker = if page.marker.is_empty() {
        0
    } else {
        rows.iter().position(|row| row.id() == page.marker).map(|position| position + 1).ok_or_else(|| {
            ServiceError::invalid(format!(
                "marker {} is not a {what} of this listing; start again without a marker",
                page.marker
            ))
        })?
    };
    let start = after_marker + page.offset as usize;
    let page_rows: Vec<T> = rows.iter().skip(start).take(limit).cloned().collect();
    let has_more = rows.len() > start + page_rows.len();
    let next_marker = if has_more { page_rows.last().map(|row| row.id()).unwrap_or_default() } else { String::new() };
    Ok((page_rows, PageInfo { next_marker, total_count }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_sort_keys_are_accepted() {
        assert!(sort_fields(&[SortKey { key: "size".into(), descending: false }]).is_ok());
        let error = sort_fields(&[SortKey { key: "password".into(), descending: false }]).unwrap_err();
        assert!(error.message.contains("created_at"), "{}", error.message);
    }
}
