//! String maps (volume and snapshot metadata, extra specs, QoS specs): stored as JSON text with
//! sorted keys (`fields::check_map` checks what callers send).

use std::collections::{BTreeMap, HashMap};

pub fn to_json(map: &HashMap<String, String>) -> String {
    let sorted: BTreeMap<&String, &String> = map.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_else(|_| "{}".into())
}

pub fn from_json(text: &str) -> HashMap<String, String> {
    serde_json::from_str(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip_with_sorted_keys() {
        let map: HashMap<String, String> = [("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())].into();
        assert_eq!(to_json(&map), r#"{"a":"1","b":"2"}"#);
        assert_eq!(from_json(&to_json(&map)), map);
    }
}
