"""Schemathesis hooks for fuzzing Basalt's REST API (`integration/tests/rest_fuzz.rs` runs them).

One check on top of schemathesis' own: a refused request (any 4xx) changes nothing. Before every
call that may write (any method but GET) the state a caller can see is recorded (volumes, snapshots, backups, attachments of every
project, volume types, QoS specs, the project's quota limits); after a refusal it is read again
and must be the same. Operations accepted earlier keep running in the background (a volume goes
from creating to available, a deleted one vanishes), but never into a transitional status: a
resource that was settled must be exactly as it was, one in transit may have moved on, and one
that was already on its way out may be gone.
"""

import os

import requests
import schemathesis

BASE = os.environ["BASALT_FUZZ_BASE"]
PROJECT = os.environ["BASALT_FUZZ_PROJECT"]
HEADERS = {
    "X-Auth-Token": os.environ["BASALT_FUZZ_TOKEN"],
    "OpenStack-API-Version": "volume 3.71",
}

# Statuses an accepted operation passes through; anything else stays put until someone asks.
TRANSITIONAL = {
    "creating", "deleting", "attaching", "detaching", "extending", "backing-up", "restoring-backup",
    "restoring", "reverting", "retyping", "downloading", "uploading", "reserved", "updating",
    "error_deleting",
}
# On its way out: such a resource may vanish between two readings.
LEAVING = {"deleting", "error_deleting"}
# Fields that change as time passes, not as callers ask.
MOVING = {"updated_at", "os-extended-snapshot-attributes:progress", "links"}

# (path, key of the list, how to name each item)
LISTINGS = [
    ("/volumes/detail?all_tenants=true", "volumes"),
    ("/snapshots/detail?all_tenants=true", "snapshots"),
    ("/backups/detail?all_tenants=true", "backups"),
    ("/attachments/detail?all_tenants=true", "attachments"),
    ("/types?is_public=None", "volume_types"),
    ("/qos-specs", "qos_specs"),
]

_before = {}
_session = requests.Session()


def _get(path):
    response = _session.get(BASE + path, headers=HEADERS, timeout=60)
    response.raise_for_status()
    return response.json()


def visible_state():
    """Every resource a caller can see, by kind and id, without the fields time moves."""
    state = {}
    for path, key in LISTINGS:
        for item in _get(path)[key]:
            stable = {name: value for name, value in item.items() if name not in MOVING}
            state[(key, item["id"])] = stable
    quotas = _get(f"/os-quota-sets/{PROJECT}")["quota_set"]
    state[("quota_set", PROJECT)] = quotas
    return state


def differences(before, after):
    """What changed between two readings that no background work explains. Background work only
    moves a resource out of a transitional status, so one that was settled must be exactly as it
    was; one in transit may have moved on, and one on its way out may be gone."""
    found = []
    for ident, old in before.items():
        new = after.get(ident)
        if new is None:
            if old.get("status") not in LEAVING:
                found.append(f"{ident} vanished (it was {old.get('status', 'there')})")
            continue
        settled = old.get("status") not in TRANSITIONAL
        if settled and old != new:
            changed = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
            found.append(f"{ident} changed: {', '.join(changed)}")
    for ident in after.keys() - before.keys():
        found.append(f"{ident} appeared")
    return found


@schemathesis.hook
def before_call(context, case, kwargs):
    # Reads change nothing by design; what they answer is checked by schemathesis itself.
    if case.method.upper() != "GET":
        _before[id(case)] = visible_state()


@schemathesis.check
def refused_requests_change_nothing(ctx, response, case):
    before = _before.pop(id(case), None)
    if before is None or not 400 <= response.status_code < 500:
        return None
    changed = differences(before, visible_state())
    if changed:
        raise AssertionError(
            f"refused with {response.status_code}, yet the state changed: " + "; ".join(changed[:5])
        )
    return True
