"""The deployment files a platform team uses as they are (``deploy/``), validated without a cluster or a
container engine: the Kubernetes manifests against the API's schemas (kubernetes-validate, strict:
an unknown or misplaced key fails), and every file against what the gateway really reads — each
``CG_*`` variable is a setting the gateway knows, the probes hit /healthz and /readyz, the image runs
as a non-root user and copies every package the wheel ships."""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
KNOWN = {f"CG_{f.name.upper()}" for f in fields(Settings)} | {
    "CG_CONFIG",
    "CG_LOG_LEVEL",
}  # the last two: the CLI
K8S_VERSION = "1.30.0"


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_each_manifest_is_valid_kubernetes(path: Path) -> None:
    kubernetes_validate.validate(_load(path), K8S_VERSION, strict=True)


def test_a_broken_manifest_is_refused() -> None:
    broken = copy.deepcopy(_load(DEPLOY / "k8s" / "deployment.yaml"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_deployment_probes_and_runs_as_the_gateway_expects() -> None:
    spec = _load(DEPLOY / "k8s" / "deployment.yaml")["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz?scope=self"
    assert container["resources"]["requests"]["cpu"] and spec["securityContext"]["runAsNonRoot"] is True
    hpa = _load(DEPLOY / "k8s" / "hpa.yaml")["spec"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu" and hpa["minReplicas"] >= 3


def test_every_variable_in_the_deployment_files_is_a_setting_the_gateway_reads() -> None:
    names: set[str] = set()
    for kind in ("configmap", "secret"):
        data = _load(DEPLOY / "k8s" / f"{kind}.yaml")
        names |= set(data.get("data") or data.get("stringData") or {})
    compose = _load(DEPLOY / "compose.yaml")
    names |= set(compose["x-gateway"]["environment"])
    unknown = sorted(n for n in names if n.startswith("CG_") and n not in KNOWN)
    assert unknown == []


def test_compose_runs_three_gateways_behind_a_proxy_on_shared_stores() -> None:
    services = _load(DEPLOY / "compose.yaml")["services"]
    gateways = [name for name in services if name.startswith("gateway")]
    assert len(gateways) == 3
    for name in gateways:
        environment = services[name]["environment"]
        assert environment["CG_DATABASE_URL"].startswith("postgresql://")
        assert environment["CG_REDIS_URL"].startswith("redis://")
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert all(f"server {name}:8000" in nginx for name in gateways)
    assert "Upgrade $http_upgrade" in nginx  # subscriptions over WebSocket pass the proxy
    assert {"postgres", "redis", "demo", "proxy"} <= set(services)


def test_the_image_is_multi_stage_non_root_with_a_healthcheck_and_every_package() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) == 2
    assert re.search(r"^USER (?!root|0\b)\S+", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    shipped = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]["include"]
    for package in (name.rstrip("*") for name in shipped):
        assert re.search(rf"^COPY {package} {package}$", dockerfile, re.M), package
