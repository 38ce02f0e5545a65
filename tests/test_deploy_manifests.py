"""contrib/replicas (compose) and contrib/kubernetes agree with the gateway they deploy: the
port it serves, the health paths it answers, the drain its SIGTERM takes, and a config (the
ConfigMap's, the compose file's) that the real loader accepts with a PostgreSQL ledger."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from thanos_asgi import Gateway, build_app
from thanos_asgi.cli import _parser
from thanos_asgi.config.load import parse_config
from thanos_asgi.config.schema import Config, ServerConfig

pytestmark = pytest.mark.anyio
CONTRIB = Path(__file__).parent.parent / "contrib"
DEFAULT_PORT = ServerConfig().port


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kubernetes() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((CONTRIB / "kubernetes").glob("*.yaml")):
        for doc in load(path):
            assert doc["kind"] not in found, f"two {doc['kind']} manifests"
            found[doc["kind"]] = doc
    return found


def serve_args(argv: list[str]) -> Any:
    """`argv` parsed by the real `thanos` command line."""
    args = _parser().parse_args([str(part) for part in argv])
    assert args.command == "serve"
    return args


def config_from(text: str, env: dict[str, str]) -> Config:
    config = parse_config(text, source="manifest", env=env)
    assert config.ledger.url and config.ledger.url.startswith("postgresql://")
    assert config.state.backend == "redis" and config.state.url
    assert config.server.keys and config.server.keys[0].key == env["THANOS_CLIENT_KEY"]
    assert config.server.port == DEFAULT_PORT
    return config


async def test_the_health_paths_are_served_by_the_app(tmp_path: Path) -> None:
    config = parse_config(f'[cost]\nledger_path = "{tmp_path / "u.db"}"\n', source="t", env={})
    async with Gateway(config) as gateway:
        transport = httpx.ASGITransport(app=build_app(gateway))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.get("/health")).status_code == 200
            assert (await http.get("/health/ready")).status_code in (200, 503)  # (no provider)


def test_kubernetes_manifests_match_the_app() -> None:
    docs = kubernetes()
    assert set(docs) == {"ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"}
    deployment, service, pdb = docs["Deployment"], docs["Service"], docs["PodDisruptionBudget"]
    assert deployment["spec"]["replicas"] >= 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        pdb["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = serve_args(container["args"])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert args.port == ports["http"] == DEFAULT_PORT
    assert service["spec"]["ports"][0]["targetPort"] in ("http", DEFAULT_PORT)
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # SIGTERM comes after preStop; the drain must end before the kubelet's SIGKILL
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert int(pre_stop[1]) + args.drain_seconds < pod["terminationGracePeriodSeconds"]
    # the ConfigMap holds the file THANOS_CONFIG names; the Secret fills its ${VARS}
    env = {item["name"]: item["value"] for item in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (item,) = volumes["config"]["configMap"]["items"]
    assert env["THANOS_CONFIG"] == f"{mounts['config']}/{item['path']}"
    assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    secret = docs["Secret"]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    text = docs["ConfigMap"]["data"][item["key"]]
    assert set(re.findall(r"\$\{(\w+)\}", text)) <= set(secret["stringData"])
    config = config_from(text, secret["stringData"])
    assert config.ledger.retention_days
    assert mounts["data"] == "/var/lib/thanos"  # the image's HOME: the ledger journal's home


def test_the_replicas_compose_file_matches_the_app() -> None:
    folder = CONTRIB / "replicas"
    (compose,) = load(folder / "compose.yaml")
    services = compose["services"]
    gateways = {name: s for name, s in services.items() if name.startswith("gateway-")}
    assert len(gateways) >= 2 and {"postgres", "redis", "balancer"} <= set(services)
    upstreams = re.findall(r"server (\S+):(\d+)", (folder / "nginx.conf").read_text())
    assert sorted(name for name, _ in upstreams) == sorted(gateways)
    assert services["balancer"]["ports"] == [f"127.0.0.1:{DEFAULT_PORT}:8080"]
    assert "listen 8080;" in (folder / "nginx.conf").read_text()
    volumes = set()
    for service in gateways.values():
        args = serve_args(service["command"][0:1] + _split(service["command"][1:]))
        assert args.port == DEFAULT_PORT and {int(port) for _, port in upstreams} == {args.port}
        grace = int(service["stop_grace_period"].rstrip("s"))
        assert grace > args.drain_seconds
        assert "/health" in " ".join(service["healthcheck"]["test"])
        mounted = dict(volume.split(":")[:2][::-1] for volume in service["volumes"])
        volumes.add(mounted["/var/lib/thanos"])  # each replica its own journal
    assert len(volumes) == len(gateways)
    env = dict(next(iter(gateways.values()))["environment"])
    env["THANOS_CLIENT_KEY"] = "thk_from-the-environment-0123456789"
    env["THANOS_LEDGER_URL"] = env["THANOS_LEDGER_URL"].replace(
        "${POSTGRES_PASSWORD:-thanos-dev-only}", "pw"
    )
    config_from((folder / "thanos.toml").read_text(), env)


def _split(flags: list[str]) -> list[str]:
    """["--port=8080"] -> ["--port", "8080"] (argparse takes both; keep it explicit)."""
    return [part for flag in flags for part in flag.split("=", 1)]
