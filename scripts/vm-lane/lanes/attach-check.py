#!/usr/bin/env python3
"""Attaches a volume of a running `basalt up` the way a host does, through the Cinder v3 REST API:
over NFS (a connector without an initiator: the host mounts the share) or over iSCSI (`iscsiadm`
login with the returned CHAP credentials). Writes bytes through the attachment and checks they
reached the volume's file. Usage: attach-check.py <rest url> nfs|iscsi <initiator or ->, or
attach-check.py <rest url> before-restart|after-restart <marker file>"""
import json, os, subprocess, sys, time, urllib.request

rest, protocol, initiator = sys.argv[1], sys.argv[2], sys.argv[3]
project = "6c616e65000000000000000000000000"  # Keystone-form ids only ("lane" in hex)
headers = {"X-Auth-Token": f"admin:{project}", "Content-Type": "application/json",
           "OpenStack-API-Version": "volume 3.71"}


def call(method, path, body=None):
    request = urllib.request.Request(f"{rest}/v3/{project}{path}", method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request) as answer:
            text = answer.read()
            return answer.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_status(volume_id, wanted):
    for _ in range(300):
        status = call("GET", f"/volumes/{volume_id}")[1]["volume"]["status"]
        if status == wanted:
            return
        time.sleep(0.2)
    sys.exit(f"volume {volume_id} never became {wanted} (last {status})")


def run(*command, check=True):
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done


def volume_file(volume_id):
    """The volume's file on whichever NFS share the node has mounted."""
    mounts = [line.split()[4] for line in open("/proc/self/mountinfo") if " - nfs" in line]
    files = [os.path.join(m, f"volume-{volume_id}") for m in mounts]
    return next((path for path in files if os.path.exists(path)), None)


# A node restart (its shares unmounted in between, as after a reboot): the volume made before is
# still there, with its bytes. `before-restart <file>` makes it, `after-restart <file>` checks it.
if protocol in ("before-restart", "after-restart"):
    marker = initiator
    if protocol == "before-restart":
        code, created = call("POST", "/volumes", {"volume": {"size": 1, "name": "survivor"}})
        assert code == 202, (code, created)
        volume_id = created["volume"]["id"]
        wait_status(volume_id, "available")
        with open(volume_file(volume_id), "r+b") as volume:
            volume.write(b"survivor" * 512)
            os.fsync(volume.fileno())
        open(marker, "w").write(volume_id)
        print(f"restart: volume {volume_id} made, 4 KiB written")
    else:
        volume_id = open(marker).read().strip()
        wait_status(volume_id, "available")
        path = volume_file(volume_id)
        assert path, "after the restart the volume's file is on no mounted share"
        with open(path, "rb") as volume:
            assert volume.read(4096) == b"survivor" * 512, "the volume's bytes changed across the restart"
        code, _ = call("DELETE", f"/volumes/{volume_id}")
        assert code == 202, code
        print(f"restart: the node mounted its share again; volume {volume_id} is available with its bytes")
    sys.exit(0)

code, created = call("POST", "/volumes", {"volume": {"size": 1, "name": f"attach-{protocol}"}})
assert code == 202, (code, created)
volume_id = created["volume"]["id"]
wait_status(volume_id, "available")
connector = {"host": "lane-host"} if protocol == "nfs" else {"host": "lane-host", "initiator": initiator}
code, attached = call("POST", "/attachments", {"attachment": {"volume_uuid": volume_id, "connector": connector}})
assert code == 200, (code, attached)
attachment = attached["attachment"]
info = attachment["connection_info"]
print(f"{protocol}: connection_info driver_volume_type={info['driver_volume_type']} "
      f"data keys={sorted(info['data'])}")
assert info["driver_volume_type"] == protocol, info["driver_volume_type"]
pattern = os.urandom(4 << 20)

if protocol == "nfs":
    data = info["data"]
    mount_point = "/mnt/attach-nfs"
    os.makedirs(mount_point, exist_ok=True)
    options = data.get("options", "").replace("-o ", "")
    run("mount", "-t", "nfs", *(["-o", options] if options else []), data["export"], mount_point)
    path = os.path.join(mount_point, data["name"])
    size = os.path.getsize(path)
    assert size == 1 << 30, f"the volume's file holds {size} bytes"
    with open(path, "r+b") as volume:
        volume.seek(1 << 20)
        volume.write(pattern)
        volume.flush()
        os.fsync(volume.fileno())
    run("umount", mount_point)
    print(f"nfs: mounted {data['export']}, wrote 4 MiB into {data['name']} (1 GiB)")
else:
    data = info["data"]
    portal, iqn, lun = data["target_portal"], data["target_iqn"], data["target_lun"]
    node = ["iscsiadm", "-m", "node", "-T", iqn, "-p", portal]
    run("iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", portal)
    for key, value in [("authmethod", "CHAP"), ("username", data["auth_username"]),
                       ("password", data["auth_password"])]:
        run(*node, "--op", "update", "-n", f"node.session.auth.{key}", "-v", value)
    run(*node, "--login")
    device = f"/dev/disk/by-path/ip-{portal}-iscsi-{iqn}-lun-{lun}"
    for _ in range(100):
        if os.path.exists(device):
            break
        time.sleep(0.2)
    with open(device, "r+b", buffering=0) as disk:
        disk.seek(1 << 20)
        disk.write(pattern)
        os.fsync(disk.fileno())
    run(*node, "--logout")
    print(f"iscsi: logged in to {iqn} at {portal} with CHAP, wrote 4 MiB through LUN {lun}")

code, _ = call("POST", f"/attachments/{attachment['id']}/action", {"os-complete": None})
assert code == 204, code
wait_status(volume_id, "in-use")
# The bytes are in the volume's file on the node's share, where the backend keeps it.
path = volume_file(volume_id)
assert path, "the volume's file is on no mounted share"
with open(path, "rb") as volume:
    volume.seek(1 << 20)
    assert volume.read(len(pattern)) == pattern, "the volume's file does not hold the bytes written"
print(f"{protocol}: the volume's file on the node holds the bytes written through the attachment")
code, _ = call("DELETE", f"/attachments/{attachment['id']}")
assert code == 200, code
wait_status(volume_id, "available")
code, _ = call("DELETE", f"/volumes/{volume_id}")
assert code == 202, code
for _ in range(300):
    if call("GET", f"/volumes/{volume_id}")[0] == 404:
        break
    time.sleep(0.2)
assert not os.path.exists(path), "the deleted volume's file remains"
print(f"{protocol}: detached and deleted; the file is gone")
