# Helpers for lane scripts, sourced inside a guest.
export PATH=/mnt/host/bin:$PATH
recorded=/mnt/host/out/recorded
mkdir -p "$recorded"

# record <transcript> <command...>: runs a command and appends it, with its output, to a
# transcript in the format the node's `_recorded` unit tests replay.
record() {
    local transcript=$1
    shift
    python3 - "$recorded/$transcript" "$@" <<'PY'
import json, subprocess, sys
done = subprocess.run(sys.argv[2:], capture_output=True, text=True)
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"command": " ".join(sys.argv[2:]), "code": done.returncode,
                          "stdout": done.stdout, "stderr": done.stderr.strip()}) + "\n")
print(f"recorded: {' '.join(sys.argv[2:])} -> exit {done.returncode} {done.stderr.strip()[:200]}")
PY
}

load_device_mapper() {
    modprobe -a dm_mod dm_snapshot dm_thin_pool dm_bufio
}
