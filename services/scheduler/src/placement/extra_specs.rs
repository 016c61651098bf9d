//! Cinder's extra-spec operators (`cinder/scheduler/filters/extra_specs_ops.py`): how a volume
//! type's requirement like `>= 10` or `<in> ssd` is matched against a pool's capability.

/// Whether `capability` satisfies `requirement`. A requirement without an operator is a string
/// equality; numeric operators fail on values that are not numbers.
pub fn matches(capability: &str, requirement: &str) -> bool {
    let mut words = requirement.split_whitespace();
    let Some(first) = words.next() else {
        return capability.is_empty();
    };
    let rest: Vec<&str> = words.collect();
    let operand = rest.join(" ");
    let number = |text: &str| text.trim().parse::<f64>().ok();
    let numeric = |compare: fn(f64, f64) -> bool| match (number(capability), number(&operand)) {
        (Some(have), Some(want)) => compare(have, want),
        _ => false,
    };
    match first {
        "=" => numeric(|have, want| have >= want),
        "==" => numeric(|have, want| have == want),
        "!=" => numeric(|have, want| have != want),
        ">=" => numeric(|have, want| have >= want),
        "<=" => numeric(|have, want| have <= want),
        "s==" => capability == operand,
        "s!=" => capability != operand,
        "s<" => capability < operand.as_str(),
        "s<=" => capability <= operand.as_str(),
        "s>" => capability > operand.as_str(),
        "s>=" => capability >= operand.as_str(),
        "<in>" => capability.contains(operand.as_str()),
        "<all-in>" => rest.iter().all(|word| capability.contains(word)),
        "<is>" => is_true(capability) == is_true(&operand),
        "<or>" => requirement
            .split("<or>")
            .map(str::trim)
            .filter(|alternative| !alternative.is_empty())
            .any(|alternative| alternative == capability),
        _ => capability == requirement,
    }
}

/// Cinder's `<is>` compares booleans written as `True`/`true`/`1`.
fn is_true(text: &str) -> bool {
    matches!(text.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on")
}

/// The capability key an extra spec checks, or `None` for specs placement ignores: unscoped
/// keys and `capabilities:` keys are checked; other scopes (`RESKEY:`, `provisioning:`, vendor
/// prefixes) are not.
pub fn capability_key(spec_key: &str) -> Option<&str> {
    match spec_key.split_once(':') {
        None => Some(spec_key),
        Some(("capabilities", key)) => Some(key),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_behave_as_in_cinder() {
        let cases = [
            ("10", "= 5", true),
            ("4", "= 5", false),
            ("5", "== 5.0", true),
            ("5", "!= 5", false),
            ("20", ">= 20", true),
            ("20", "<= 19", false),
            ("abc", "s== abc", true),
            ("abc", "s!= abc", false),
            ("abc", "s< abd", true),
            ("abc", "s>= abd", false),
            ("ssd nvme", "<in> nvme", true),
            ("ssd", "<in> hdd", false),
            ("ssd nvme fast", "<all-in> nvme ssd", true),
            ("ssd", "<all-in> nvme ssd", false),
            ("True", "<is> True", true),
            ("true", "<is> True", true),
            ("False", "<is> True", false),
            ("lvm", "<or> nfs <or> lvm", true),
            ("file", "<or> nfs <or> lvm", false),
            ("file", "file", true),
            ("file", "lvm", false),
            ("x", "= 5", false),
        ];
        for (capability, requirement, expected) in cases {
            assert_eq!(matches(capability, requirement), expected, "{capability:?} vs {requirement:?}");
        }
    }

    #[test]
    fn only_unscoped_and_capabilities_keys_are_checked() {
        assert_eq!(capability_key("volume_backend_name"), Some("volume_backend_name"));
        assert_eq!(capability_key("capabilities:multiattach"), Some("multiattach"));
        assert_eq!(capability_key("provisioning:type"), None);
        assert_eq!(capability_key("RESKEY:availability_zones"), None);
    }
}
