//! What adopting an object of a pool (Cinder's manage) is the same for, whether the object
//! becomes a volume or a snapshot: the verdict on each object a node lists, and finding the one
//! a request names among them.

use basalt::ServiceError;

const GIB: u64 = 1 << 30;

/// A listed object's verdict: its size in whole GiB (at least one), and why it may not be
/// adopted (empty when it may): the deployment manages it already, or the node said why not.
pub fn verdict(size_bytes: u64, node_reason: &str, managed: bool) -> (u64, String) {
    let reason = if managed { "already managed" } else { node_reason };
    (size_bytes.div_ceil(GIB).max(1), reason.to_owned())
}

/// The object `name` among `listed`, when it may be adopted. `view` gives an object's name,
/// whether it is safe to manage and why not; `listing` is the path that lists them on `host`.
pub fn pick<'a, T>(
    listed: &'a [T],
    name: &str,
    host: &str,
    listing: &str,
    view: impl Fn(&T) -> (&str, bool, &str),
) -> Result<&'a T, ServiceError> {
    let excerpt = basalt::error::excerpt(name);
    let object = listed.iter().find(|object| view(object).0 == name).ok_or_else(|| {
        ServiceError::not_found(format!("{excerpt:?} is not in pool {host}; GET {listing}?host={host} lists what is"))
    })?;
    let (_, safe, reason) = view(object);
    if !safe {
        return Err(ServiceError::invalid(format!("{excerpt:?} cannot be managed: {reason}")));
    }
    Ok(object)
}
