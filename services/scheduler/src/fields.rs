//! Checks of the free-form fields callers send (names, descriptions, metadata), the same for every
//! resource and as strict as Cinder's JSON schemas: at most 255 characters, and no control
//! characters where a name is shown in a table or a log line (NUL cannot even be stored in
//! PostgreSQL). Errors quote only a short excerpt of what was sent.

use std::collections::HashMap;

use basalt::{ErrorCode, ServiceError, error::excerpt};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Value};

use crate::db::db_error;

/// The longest name, description, key or value, as Cinder's schemas allow.
pub const MAX_LEN: usize = 255;
/// Metadata items on one resource, at most.
pub const MAX_METADATA_ITEMS: usize = 128;

/// A name or identifier-like field (may be empty): at most 255 characters, none of them a control
/// character.
pub fn check_name(field: &str, value: &str) -> Result<(), ServiceError> {
    check_length(field, value)?;
    if let Some(bad) = value.chars().find(|c| c.is_control()) {
        return Err(ServiceError::invalid(format!(
            "{field} {} holds the control character {bad:?}: use printable characters",
            excerpt(value)
        )));
    }
    Ok(())
}

/// A name that must be given: 1 to 255 characters, no control characters, not only spaces.
pub fn check_required_name(field: &str, value: &str) -> Result<(), ServiceError> {
    if value.trim().is_empty() {
        return Err(ServiceError::invalid(format!("{field} is required: 1 to {MAX_LEN} printable characters")));
    }
    check_name(field, value)
}

/// Free text (a description, a metadata value): at most 255 characters; tabs and line breaks are
/// allowed, other control characters are not.
pub fn check_text(field: &str, value: &str) -> Result<(), ServiceError> {
    check_length(field, value)?;
    if let Some(bad) = value.chars().find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(ServiceError::invalid(format!(
            "{field} {} holds the control character {bad:?}: use text, tabs and line breaks",
            excerpt(value)
        )));
    }
    Ok(())
}

fn check_length(field: &str, value: &str) -> Result<(), ServiceError> {
    let length = value.chars().count();
    if length > MAX_LEN {
        return Err(ServiceError::invalid(format!("{field} is too long ({length} characters): at most {MAX_LEN}")));
    }
    Ok(())
}

/// A string map (metadata, extra specs, QoS specs): keys as Cinder's schemas take them, 1 to 255
/// of letters, digits and `-_:. /`; values free text. `what` names an entry in the error
/// ("metadata item", "extra spec", ...).
pub fn check_map(map: &HashMap<String, String>, what: &str) -> Result<(), ServiceError> {
    if map.len() > MAX_METADATA_ITEMS {
        return Err(ServiceError::invalid(format!("too many {what}s ({}): at most {MAX_METADATA_ITEMS}", map.len())));
    }
    for (key, value) in map {
        let key_allowed = !key.is_empty()
            && key.chars().count() <= MAX_LEN
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | ' ' | '/'));
        if !key_allowed {
            return Err(ServiceError::invalid(format!(
                "invalid {what} key {}: keys have 1 to {MAX_LEN} letters, digits or -_:. /",
                excerpt(key)
            )));
        }
        check_text(&format!("the value of {what} {key:?}"), value)?;
    }
    Ok(())
}

/// The fields volumes, snapshots and backups share.
pub fn check_common(name: &str, description: &str, metadata: &HashMap<String, String>) -> Result<(), ServiceError> {
    check_name("name", name)?;
    check_text("description", description)?;
    check_map(metadata, "metadata item")
}

/// Refuses `name` when another row of `E` has it in `name_column`; `except` is the row being
/// renamed (its id column and id). `what` names the kind in the refusal: "a volume type".
pub async fn check_unique_name<E: EntityTrait>(
    db: &impl ConnectionTrait,
    name_column: E::Column,
    except: Option<(E::Column, Value)>,
    name: &str,
    what: &str,
) -> Result<(), ServiceError>
where
    E::Model: Sync,
{
    let mut query = E::find().filter(name_column.eq(name));
    if let Some((id_column, id)) = except {
        query = query.filter(id_column.ne(id));
    }
    if query.count(db).await.map_err(db_error)? > 0 {
        return Err(ServiceError::new(
            ErrorCode::AlreadyExists,
            format!("{what} named {} already exists", excerpt(name)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn names_refuse_control_characters_and_length() {
        assert!(check_name("name", "ok name é").is_ok());
        assert!(check_name("name", "").is_ok());
        for bad in ["a\0b", "tab\there", "bell\u{7}", "esc\u{1b}[2J"] {
            let error = check_name("name", bad).unwrap_err();
            assert!(error.message.contains("control character"), "{}", error.message);
        }
        let long = "n".repeat(10_000);
        let error = check_name("name", &long).unwrap_err();
        assert!(error.message.contains("10000 characters") && error.message.len() < 100, "{}", error.message);
        assert!(check_required_name("a volume type's name", "  ").is_err());
    }

    #[test]
    fn text_allows_line_breaks_but_not_nul() {
        assert!(check_text("description", "two\nlines\tand a tab").is_ok());
        assert!(check_text("description", "nul\0").is_err());
    }

    #[test]
    fn maps_follow_cinders_key_pattern() {
        assert!(check_map(&map(&[("capabilities:volume_backend_name", "lvm"), ("a b/c.d-e_f", "")]), "x").is_ok());
        for key in ["", "a~b", "ключ", "a\0"] {
            assert!(check_map(&map(&[(key, "v")]), "metadata item").is_err(), "{key:?}");
        }
        let error = check_map(&map(&[("k", "v\0")]), "metadata item").unwrap_err();
        assert!(error.message.contains("control character"), "{}", error.message);
        let many: HashMap<String, String> = (0..129).map(|index| (format!("k{index}"), String::new())).collect();
        assert!(check_map(&many, "metadata item").is_err());
    }
}
