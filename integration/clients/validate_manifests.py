"""Validates Kubernetes manifests offline and reports how they run Basalt.

    validate_manifests.py KUBERNETES_VERSION FILE...

Core kinds are checked, strictly (no unknown field), against the Kubernetes OpenAPI schemas that
the kubernetes-validate package (PyPI) carries for each release. The external-snapshotter's kinds
are checked against the fields of their CRDs (snapshot.storage.k8s.io/v1). Prints one JSON line:
the arguments and environment variables of every container whose image is Basalt's, so the caller
can check them against `basalt csi --help`. Exits 1 with the reasons when anything is invalid.
"""

import json
import sys

import jsonschema
import kubernetes_validate
import yaml

# Basalt's images: the services' one and the CSI node plugin's (the Dockerfile's two targets).
BASALT_IMAGES = ("basalt", "basalt-csi-node")
METADATA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}

# snapshot.storage.k8s.io/v1, from the external-snapshotter's CRDs (openAPIV3Schema).
SNAPSHOT_KINDS = {
    "VolumeSnapshotClass": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "driver", "deletionPolicy"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "snapshot.storage.k8s.io/v1"},
            "kind": {"const": "VolumeSnapshotClass"},
            "metadata": METADATA,
            "driver": {"type": "string"},
            "deletionPolicy": {"enum": ["Delete", "Retain"]},
            "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "VolumeSnapshot": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "snapshot.storage.k8s.io/v1"},
            "kind": {"const": "VolumeSnapshot"},
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["source"],
                "additionalProperties": False,
                "properties": {
                    "volumeSnapshotClassName": {"type": "string"},
                    "source": {
                        "type": "object",
                        "additionalProperties": False,
                        "minProperties": 1,
                        "maxProperties": 1,
                        "properties": {
                            "persistentVolumeClaimName": {"type": "string"},
                            "volumeSnapshotContentName": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}


def main():
    version, files = sys.argv[1], sys.argv[2:]
    problems, containers = [], []
    for path in files:
        with open(path) as handle:
            documents = [document for document in yaml.safe_load_all(handle) if document]
        for document in documents:
            kind = document.get("kind", "?")
            name = document.get("metadata", {}).get("name", "?")
            where = f"{path}: {kind}/{name}"
            try:
                if kind in SNAPSHOT_KINDS:
                    jsonschema.validate(document, SNAPSHOT_KINDS[kind])
                else:
                    kubernetes_validate.validate(document, version, strict=True)
            except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
                problems.append(f"{where}: {getattr(error, 'message', error)}")
                continue
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{where}: no schema for {kind} in Kubernetes {version}")
                continue
            spec = document.get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []):
                if container.get("image", "").split(":")[0] in BASALT_IMAGES:
                    containers.append({
                        "where": where,
                        "args": container.get("args", []),
                        "env": [item["name"] for item in container.get("env", [])],
                    })
            if kind == "ConfigMap":
                containers.append({"where": where, "args": [], "env": sorted(document.get("data", {}))})
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"containers": containers}))


if __name__ == "__main__":
    main()
