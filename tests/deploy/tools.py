"""Helm, kubeconform and the schemas kubeconform validates with, offline, cached once per machine.

Helm and kubeconform are built with Go from the Go module proxy into ``~/.cache/uplink/go``
(``uplink.cache.go_install``). The schemas come from Go modules the proxy serves, downloaded with
``go mod download`` (so checked against the Go checksum database) and converted to JSON schemas
under ``~/.cache/uplink/kube-schemas``:

- the Kubernetes API: ``api/openapi-spec/swagger.json`` of ``k8s.io/kubernetes``;
- KEDA's ScaledObject and TriggerAuthentication: ``config/crd/bases`` of
  ``github.com/kedacore/keda/v2``;
- the Prometheus operator's ServiceMonitor and PrometheusRule:
  ``example/prometheus-operator-crd`` of ``github.com/prometheus-operator/prometheus-operator``.

The conversion is kubeconform's own idea (its ``openapi2jsonschema``) in a few lines: one
schema per kind and version, every object that lists its properties closed to others (strict),
``int-or-string`` as either.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from uplink.cache import default_cache_dir, fetch_once, go_environ, go_install, shown
from uplink.exceptions import UplinkError

HELM = "helm.sh/helm/v3/cmd/helm"
HELM_VERSION = "v3.22.1"
KUBECONFORM = "github.com/yannh/kubeconform/cmd/kubeconform"
KUBECONFORM_VERSION = "v0.8.0"
KUBERNETES = ("k8s.io/kubernetes", "v1.34.2")
KEDA = ("github.com/kedacore/keda/v2", "v2.21.1")
PROMETHEUS_OPERATOR = ("github.com/prometheus-operator/prometheus-operator", "v0.85.0")
CRDS = {
    KEDA: [
        "config/crd/bases/keda.sh_scaledobjects.yaml",
        "config/crd/bases/keda.sh_triggerauthentications.yaml",
    ],
    PROMETHEUS_OPERATOR: [
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    ],
}
# kubeconform's template: Group is the apiVersion's first part ("v1" for the core group).
SCHEMA_LOCATION = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"


ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "uplink"


class ToolError(UplinkError):
    """A deployment tool could not be built or its schemas fetched."""


def go_dir(cache_dir: Path) -> Path:
    return cache_dir / "go"


def helm(cache_dir: Path | None = None) -> Path:
    """The helm binary, built once (a few minutes on two cores)."""
    cache_dir = cache_dir or default_cache_dir()
    binary = go_dir(cache_dir) / "bin" / f"helm-{HELM_VERSION}"
    return go_install(HELM, HELM_VERSION, binary, go_dir(cache_dir), ToolError, "minutes")


def run_helm(verb: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``helm VERB ARGS`` from the repository's root, for the Kubernetes version of the schemas
    (a helm built by ``go install`` assumes 1.20 otherwise)."""
    version = f"--kube-version={KUBERNETES[1]}"
    return subprocess.run(
        [str(helm()), verb, version, *args], capture_output=True, text=True, check=False, cwd=ROOT
    )


def kubeconform(cache_dir: Path | None = None) -> Path:
    cache_dir = cache_dir or default_cache_dir()
    binary = go_dir(cache_dir) / "bin" / f"kubeconform-{KUBECONFORM_VERSION}"
    return go_install(
        KUBECONFORM, KUBECONFORM_VERSION, binary, go_dir(cache_dir), ToolError, "a minute"
    )


def schemas(cache_dir: Path | None = None) -> Path:
    """The directory of JSON schemas, laid out for ``SCHEMA_LOCATION``."""
    cache_dir = cache_dir or default_cache_dir()
    done = (
        cache_dir
        / "kube-schemas"
        / f"kubernetes-{KUBERNETES[1]}-keda-{KEDA[1]}-prometheus-operator-{PROMETHEUS_OPERATOR[1]}"
    )

    def fetch() -> None:
        building = done.with_name(done.name + ".partial")
        shutil.rmtree(building, ignore_errors=True)
        swagger = json.loads(_module_file(cache_dir, KUBERNETES, "api/openapi-spec/swagger.json"))
        for path, schema in kubernetes_schemas(swagger):
            _write(building / path, schema)
        for module, files in CRDS.items():
            for name in files:
                for crd in yaml.safe_load_all(_module_file(cache_dir, module, name)):
                    for path, schema in crd_schemas(crd):
                        _write(building / path, schema)
        os.replace(building, done)

    fetch_once(
        "the Kubernetes, KEDA and Prometheus operator schemas",
        done,
        cache_dir / "kube-schemas" / ".lock",
        fetch,
        f"fetching the Kubernetes API's and the CRDs' schemas into {shown(done.parent)} "
        "(first run only, about a minute)…",
    )
    return done


def _module_file(cache_dir: Path, module: tuple[str, str], name: str) -> bytes:
    """One file of a module the Go module proxy serves, read from its zip."""
    go = shutil.which("go")
    if go is None:
        raise ToolError("the schemas come through the Go module proxy: `go` is not on PATH")
    path, version = module
    result = subprocess.run(
        [go, "mod", "download", "-json", f"{path}@{version}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=cache_dir,
        env={**os.environ, **go_environ(go_dir(cache_dir))},
    )
    info = json.loads(result.stdout or "{}")
    if "Zip" not in info:  # a module may ask for a newer Go to build, not to be read
        raise ToolError(f"go mod download {path}@{version}: {result.stderr[-2000:]}")
    with zipfile.ZipFile(info["Zip"]) as archive:
        return archive.read(f"{path}@{version}/{name}")


def _write(path: Path, schema: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema))


def _location(api_version: str, kind: str) -> str:
    return f"{api_version.split('/')[0]}/{kind.lower()}_{api_version.split('/')[-1]}.json"


def kubernetes_schemas(swagger: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A standalone strict schema per kind and version of the API's OpenAPI (v2) document."""
    definitions = {name: strict(schema) for name, schema in swagger["definitions"].items()}
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            api = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            needed = _closure(name, definitions)
            yield (
                _location(api, gvk["kind"]),
                {
                    **definition,
                    "definitions": {ref: definitions[ref] for ref in needed},
                },
            )


def _closure(name: str, definitions: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo += [ref.removeprefix("#/definitions/") for ref in _refs(definitions[current])]
    return seen


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def crd_schemas(crd: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A strict schema per served version of a CustomResourceDefinition."""
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    for version in crd["spec"]["versions"]:
        schema = strict(version["schema"]["openAPIV3Schema"])
        yield _location(f"{group}/{version['name']}", kind), schema


def strict(node: Any) -> Any:
    """``node`` with every object that lists its properties closed to others (as the API server
    prunes them), and int-or-string values accepting either."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string"):
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    out = {key: strict(value) for key, value in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def main() -> int:
    """``python -m tests.deploy.tools``: build and fetch whatever is missing."""
    print(helm(), kubeconform(), schemas(), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
