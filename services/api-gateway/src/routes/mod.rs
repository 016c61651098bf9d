//! The `/v3` resources, each a translation into `VolumeService` calls.

pub mod attachments;
pub mod backups;
pub mod misc;
pub mod qos;
pub mod snapshots;
pub mod types;
pub mod volumes;

use std::collections::HashMap;

use axum::{
    Router,
    routing::{get, post, put},
};
use basalt::proto::{PageRequest, SortKey};
use serde_json::{Value, json};

use crate::{GatewayState, Rest, fault::Fault};

pub fn resources() -> Router<GatewayState> {
    Router::new()
        .route("/volumes", get(volumes::list_summary).post(volumes::create))
        .route("/volumes/detail", get(volumes::list_detail))
        .route("/volumes/summary", get(volumes::summary))
        .route("/volumes/{volume_id}", get(volumes::show).put(volumes::update).delete(volumes::delete))
        .route("/volumes/{volume_id}/action", post(volumes::action))
        .route(
            "/volumes/{volume_id}/metadata",
            get(volumes::metadata_show).post(volumes::metadata_merge).put(volumes::metadata_replace),
        )
        .route(
            "/volumes/{volume_id}/metadata/{key}",
            get(volumes::metadata_item).put(volumes::metadata_item_set).delete(volumes::metadata_item_delete),
        )
        .route("/snapshots", get(snapshots::list).post(snapshots::create))
        .route("/snapshots/detail", get(snapshots::list))
        .route("/snapshots/{snapshot_id}", get(snapshots::show).put(snapshots::update).delete(snapshots::delete))
        .route("/snapshots/{snapshot_id}/action", post(snapshots::action))
        .route(
            "/snapshots/{snapshot_id}/metadata",
            get(snapshots::metadata_show).post(snapshots::metadata_merge).put(snapshots::metadata_replace),
        )
        .route(
            "/snapshots/{snapshot_id}/metadata/{key}",
            get(snapshots::metadata_item).put(snapshots::metadata_item_set).delete(snapshots::metadata_item_delete),
        )
        .route("/types", get(types::list).post(types::create))
        .route("/types/default", get(types::show_default))
        .route("/types/{type_id}", get(types::show).put(types::update).delete(types::delete))
        .route("/types/{type_id}/extra_specs", get(types::extra_specs).post(types::set_extra_specs))
        .route(
            "/types/{type_id}/extra_specs/{key}",
            get(types::extra_spec).put(types::set_extra_spec).delete(types::unset_extra_spec),
        )
        .route("/types/{type_id}/action", post(types::action))
        .route("/types/{type_id}/os-volume-type-access", get(types::access_list))
        .route("/qos-specs", get(qos::list).post(qos::create))
        .route("/qos-specs/{qos_id}", get(qos::show).put(qos::update).delete(qos::delete))
        .route("/qos-specs/{qos_id}/delete_keys", put(qos::delete_keys))
        .route("/qos-specs/{qos_id}/associate", get(qos::associate))
        .route("/qos-specs/{qos_id}/disassociate", get(qos::disassociate))
        .route("/qos-specs/{qos_id}/disassociate_all", get(qos::disassociate_all))
        .route("/qos-specs/{qos_id}/associations", get(qos::associations))
        .route("/attachments", get(attachments::list).post(attachments::create))
        .route("/attachments/detail", get(attachments::list_detail))
        .route(
            "/attachments/{attachment_id}",
            get(attachments::show).put(attachments::update).delete(attachments::delete),
        )
        .route("/attachments/{attachment_id}/action", post(attachments::action))
        .route("/backups", get(backups::list).post(backups::create))
        .route("/backups/detail", get(backups::list_detail))
        .route("/backups/import_record", post(backups::import_record))
        .route("/backups/{backup_id}", get(backups::show).put(backups::update).delete(backups::delete))
        .route("/backups/{backup_id}/restore", post(backups::restore))
        .route("/backups/{backup_id}/export_record", get(backups::export_record))
        .route("/backups/{backup_id}/action", post(backups::action))
        .route("/os-quota-sets/{target}", get(misc::quota_show).put(misc::quota_update).delete(misc::quota_reset))
        .route("/os-quota-sets/{target}/defaults", get(misc::quota_defaults))
        .route("/limits", get(misc::limits))
        .route("/os-availability-zone", get(misc::availability_zones))
        .route("/os-services", get(misc::services))
        .route("/scheduler-stats/get_pools", get(misc::pools))
        .route("/extensions", get(misc::extensions))
}

/// Query keys every listing understands.
const PAGING_KEYS: &[&str] =
    &["limit", "marker", "offset", "sort", "sort_key", "sort_dir", "with_count", "all_tenants"];

/// Cinder's paging and sorting from the query string.
pub fn paging(rest: &Rest) -> Result<(PageRequest, Vec<SortKey>), Fault> {
    let number = |name: &str| -> Result<u32, Fault> {
        match rest.query(name) {
            None => Ok(0),
            Some(text) => text
                .parse::<u32>()
                .map_err(|_| Fault::bad_request(format!("{name} must be a whole number, not {text:?}"))),
        }
    };
    let page = PageRequest {
        limit: number("limit")?,
        marker: rest.query("marker").unwrap_or_default().to_owned(),
        offset: number("offset")?,
    };
    let mut sort = Vec::new();
    if let Some(keys) = rest.query("sort") {
        for item in keys.split(',').filter(|item| !item.trim().is_empty()) {
            let (key, direction) = item.split_once(':').unwrap_or((item, "desc"));
            sort.push(SortKey { key: key.trim().to_owned(), descending: descending(direction)? });
        }
    } else if let Some(key) = rest.query("sort_key") {
        sort.push(SortKey { key: key.to_owned(), descending: descending(rest.query("sort_dir").unwrap_or("desc"))? });
    }
    Ok((page, sort))
}

fn descending(direction: &str) -> Result<bool, Fault> {
    match direction.trim().to_ascii_lowercase().as_str() {
        "desc" => Ok(true),
        "asc" => Ok(false),
        other => Err(Fault::bad_request(format!("sort direction {other:?} is invalid: use asc or desc"))),
    }
}

/// `all_tenants` lists every project for admins; Cinder ignores it for everyone else.
pub fn all_tenants(rest: &Rest) -> bool {
    rest.context.is_admin
        && rest
            .query("all_tenants")
            .is_some_and(|value| !matches!(value.to_ascii_lowercase().as_str(), "0" | "false" | "no" | "f"))
}

pub fn with_count(rest: &Rest) -> bool {
    rest.version.at_least(45)
        && rest
            .query("with_count")
            .is_some_and(|value| matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// From 3.31 a filter the resource does not support is an error for non-admins.
pub fn check_filters(rest: &Rest, supported: &[&str]) -> Result<(), Fault> {
    if !rest.version.at_least(31) || rest.context.is_admin {
        return Ok(());
    }
    let unknown: Vec<&str> = rest
        .query
        .iter()
        .map(|(key, _)| key.as_str())
        .filter(|key| !PAGING_KEYS.contains(key) && !supported.contains(key))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Fault::bad_request(format!(
        "invalid filters {} are found in query options; supported: {}",
        unknown.join(", "),
        supported.join(", ")
    )))
}

/// The `metadata` filter, as Cinder clients send it: a JSON object of strings, or Python's repr of
/// a dict (`{'k': 'v'}`, python-cinderclient's form), whose strings may hold any quote.
pub fn metadata_filter(rest: &Rest) -> Result<HashMap<String, String>, Fault> {
    let Some(text) = rest.query("metadata") else { return Ok(HashMap::new()) };
    serde_json::from_str(text).ok().or_else(|| python_dict(text)).ok_or_else(|| {
        Fault::bad_request(format!(
            "the metadata filter {} is not an object of strings: send {{\"key\": \"value\"}}",
            basalt::error::excerpt(text)
        ))
    })
}

/// A Python dict literal of string keys and values, as `repr` writes it.
fn python_dict(text: &str) -> Option<HashMap<String, String>> {
    let mut chars = text.trim().chars().peekable();
    let skip_spaces = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
    };
    let string = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<String> {
        let quote = chars.next().filter(|c| matches!(c, '\'' | '"'))?;
        let mut value = String::new();
        loop {
            match chars.next()? {
                c if c == quote => return Some(value),
                '\\' => value.push(match chars.next()? {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    'x' => char::from_u32(u32::from_str_radix(&chars.by_ref().take(2).collect::<String>(), 16).ok()?)?,
                    'u' => char::from_u32(u32::from_str_radix(&chars.by_ref().take(4).collect::<String>(), 16).ok()?)?,
                    other => other,
                }),
                c => value.push(c),
            }
        }
    };
    let mut map = HashMap::new();
    (chars.next()? == '{').then_some(())?;
    skip_spaces(&mut chars);
    if chars.next_if_eq(&'}').is_some() {
        return chars.next().is_none().then_some(map);
    }
    loop {
        skip_spaces(&mut chars);
        let key = string(&mut chars)?;
        skip_spaces(&mut chars);
        (chars.next()? == ':').then_some(())?;
        skip_spaces(&mut chars);
        let value = string(&mut chars)?;
        map.insert(key, value);
        skip_spaces(&mut chars);
        match chars.next()? {
            ',' => continue,
            '}' => return chars.next().is_none().then_some(map),
            _ => return None,
        }
    }
}

/// `<collection>_links` with the next page, when there is one.
pub fn next_link(rest: &Rest, path: &str, next_marker: &str) -> Option<Value> {
    if next_marker.is_empty() {
        return None;
    }
    let mut query: Vec<String> =
        rest.query.iter().filter(|(key, _)| key != "marker").map(|(key, value)| format!("{key}={value}")).collect();
    query.push(format!("marker={next_marker}"));
    Some(json!([{"rel": "next", "href": format!("{}/{path}?{}", rest.base, query.join("&"))}]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_dicts_parse_with_any_quote() {
        let parsed = python_dict(r#"{'k': "it's", 'a\'b': 'x\\y', "u": '\u00e9\x41'}"#).unwrap();
        assert_eq!(parsed["k"], "it's");
        assert_eq!(parsed["a'b"], "x\\y");
        assert_eq!(parsed["u"], "éA");
        assert_eq!(python_dict("{}").unwrap().len(), 0);
        for bad in ["", "{", "{'a'}", "{'a': 1}", "{'a': 'b'} trailing", "['a']", "{'a': 'b',}"] {
            assert!(python_dict(bad).is_none(), "{bad:?}");
        }
    }
}
