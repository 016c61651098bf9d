//! String maps (volume and snapshot metadata, extra specs, QoS specs): stored as JSON text with
//! sorted keys, and checked the same way wherever a caller sends one.

use std::collections::{BTreeMap, HashMap};

use basalt::ServiceError;

/// The longest key or value, as Cinder's schemas allow.
pub const MAX_LEN: usize = 255;

pub fn to_json(map: &HashMap<String, String>) -> String {
    let sorted: BTreeMap<&String, &String> = map.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_else(|_| "{}".into())
}

pub fn from_json(text: &str) -> HashMap<String, String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Every key needs 1 to 255 characters and every value at most 255; `what` names an entry in the
/// error ("metadata item", "extra spec", ...).
pub fn validate(map: &HashMap<String, String>, what: &str) -> Result<(), ServiceError> {
    for (key, value) in map {
        if key.is_empty() || key.chars().count() > MAX_LEN || value.chars().count() > MAX_LEN {
            return Err(ServiceError::invalid(format!(
                "invalid {what} {key:?}: keys need 1 to {MAX_LEN} characters, values at most {MAX_LEN}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip_with_sorted_keys_and_are_checked() {
        let map: HashMap<String, String> = [("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())].into();
        assert_eq!(to_json(&map), r#"{"a":"1","b":"2"}"#);
        assert_eq!(from_json(&to_json(&map)), map);
        assert!(validate(&map, "metadata item").is_ok());
        let empty_key: HashMap<String, String> = [(String::new(), "v".to_owned())].into();
        let error = validate(&empty_key, "extra spec").unwrap_err();
        assert!(error.message.starts_with("invalid extra spec \"\""), "{}", error.message);
    }
}
