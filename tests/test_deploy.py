"""The scale-out deployment (compose.yaml and deploy/), checked without a container engine.

No engine runs in CI, so no container starts here. What can be checked is that the files agree
with each other and with the gateway: the services and the settings they pass, what nginx and
Prometheus point at, and that every dashboard query names a metric the gateway exports.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from sami_gateway import config as gateway_config
from sami_gateway.config import CORE_SECTIONS, DEFAULT_NAMESPACES, Config, plugin_sections
from sami_gateway.config.cluster import ClusterSettings
from sami_gateway.errors import Code
from sami_gateway.runtime.metrics import Metrics
from tests.conftest import ROOT
from tests.test_container import env_values

FRONTS = ("front1", "front2")
WORKERS = ("worker1", "worker2")
SERVICES = {"redis", "s3", *FRONTS, "nginx", *WORKERS, "prometheus", "grafana"}
CLUSTER_ENV = ("SAMI_QUEUE_URL", "SAMI_STORAGE_URL", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "SAMI_TOKEN_SECRET", "SAMI_APPKEYS")
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "sami-gateway.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
# A metric in PromQL: a name followed by its label selector, its range, or the end of a call.
METRIC = re.compile(r"\b(sami_gateway_\w+)\s*[{\[)]")
# The samples the text format writes for one metric family, by its type.
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command(name: str) -> list[str]:
    words = service(name).get("command") or []
    return shlex.split(words) if isinstance(words, str) else [str(word) for word in words]


def mounts(name: str) -> list[Mount]:
    found = []
    for entry in service(name).get("volumes") or []:
        if isinstance(entry, dict):
            found.append(Mount(entry["source"], entry["target"], bool(entry.get("read_only"))))
        else:
            source, target, *mode = entry.split(":")
            found.append(Mount(source, target, "ro" in mode[0].split(",") if mode else False))
    return found


def seconds(duration: str) -> float:
    """A compose duration (`330s`, `5m30s`, `1h`) in seconds."""
    parts = re.fullmatch(r"(?:\d+(?:\.\d+)?(?:h|ms|m|s|us))+", duration)
    assert parts, f"not a duration: {duration!r}"
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(number) * scale[unit] for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", duration))


def front_port() -> int:
    return int(environment(FRONTS[0]).get("SAMI_PORT") or env_values()["SAMI_PORT"])


def worker_port() -> int:
    return int(environment(WORKERS[0]).get("SAMI_WORKER_PORT") or ClusterSettings().worker_port)


def known_variables() -> set[str]:
    """Every variable the gateway reads: the core's settings, its sections' and the default plugins'."""
    sections = CORE_SECTIONS + plugin_sections(DEFAULT_NAMESPACES)
    return {s.env for s in gateway_config.SETTINGS} | {s.env for section in sections for s in section.settings}


def exported_samples() -> set[str]:
    """The sample names a front's or worker's /metrics can carry, from the gateway's own registry.

    A labelled metric has no sample until a label set is used, so each family's sample names are
    also derived from its name and type (counter: `_total`; histogram: `_bucket`, `_sum`, `_count`).
    """
    names: set[str] = set()
    for family in Metrics(["MusicSourceSeparate"]).registry.collect():
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))}
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    found = []
    for panel in dashboard()["panels"]:
        found += [panel, *panel.get("panels", [])]  # a collapsed row keeps its panels inside
    return found


def exprs() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel.get("targets", [])]


def nginx_directives() -> list[list[str]]:
    """nginx.conf as directives (words up to `;`, `{` or `}`), comments dropped."""
    text = re.sub(r"#[^\n]*", "", (ROOT / "deploy" / "nginx.conf").read_text())
    return [statement.split() for statement in re.split(r"[;{}]", text) if statement.strip()]


def nginx_values(name: str) -> list[list[str]]:
    return [words[1:] for words in nginx_directives() if words[0] == name]


def nginx_size(text: str) -> int:
    scale = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(text[:-1]) * scale[text[-1].lower()] if text[-1].lower() in scale else int(text)


def nginx_seconds(text: str) -> float:
    scale = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", text).groups()  # type: ignore[union-attr]
    return int(number) * scale[unit or "s"]


def test_compose_runs_exactly_the_scale_out_services() -> None:
    assert set(compose()["services"]) == SERVICES


def test_fronts_serve_and_workers_work_from_the_same_image() -> None:
    for name in FRONTS:
        assert command(name) == ["sami-gateway", "serve"]
    for name in WORKERS:
        assert command(name) == ["sami-gateway", "worker"]
    builds = {str(service(name).get("build")) for name in FRONTS + WORKERS}
    images = {service(name).get("image") for name in FRONTS + WORKERS}
    assert builds == {"."} and len(images) == 1
    assert (ROOT / "Dockerfile").is_file()


def test_fronts_and_workers_share_the_queue_storage_and_secret() -> None:
    for variable in CLUSTER_ENV:
        values = {environment(name).get(variable) for name in FRONTS + WORKERS}
        assert None not in values, f"{variable} missing from a front or worker"
        assert len(values) == 1, f"{variable} differs between fronts and workers: {values}"
    env = environment(FRONTS[0])
    # Interpolated from the caller's environment: no secret is committed.
    assert env["SAMI_TOKEN_SECRET"].startswith("${SAMI_TOKEN_SECRET:?")
    assert env["AWS_SECRET_ACCESS_KEY"].startswith("${")
    # They reach the services compose runs, with the credentials and bucket S3 was started with.
    assert urlsplit(env["SAMI_QUEUE_URL"]).hostname == "redis"
    assert urlsplit(env["AWS_ENDPOINT_URL"]).hostname == "s3"
    s3_env = environment("s3")
    assert (s3_env["AWS_ACCESS_KEY_ID"], s3_env["AWS_SECRET_ACCESS_KEY"]) == \
        (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    assert f"-bucket={ClusterSettings(storage_url=env['SAMI_STORAGE_URL']).bucket}" in command("s3")


def test_every_sami_variable_in_compose_is_a_setting() -> None:
    known = known_variables()
    for name in compose()["services"]:
        unknown = {key for key in environment(name) if key.startswith("SAMI_")} - known
        assert not unknown, f"{name} sets variables the gateway does not read: {sorted(unknown)}"


def test_one_model_volume_read_only_for_fronts() -> None:
    model_dir = env_values()["SAMI_MODEL_DIR"]
    sources = set()
    for name in FRONTS + WORKERS:
        found = [m for m in mounts(name) if m.target == (environment(name).get("SAMI_MODEL_DIR") or model_dir)]
        assert len(found) == 1, f"{name} does not mount the model store"
        assert found[0].read_only == (name in FRONTS), f"{name}: fronts read the models, workers may write"
        sources.add(found[0].source)
    assert len(sources) == 1 and sources <= set(compose()["volumes"])


def test_workers_are_reachable_and_outlast_their_shutdown_grace() -> None:
    for name in WORKERS:
        env = environment(name)
        assert env["SAMI_WORKER_HOST"] == "0.0.0.0"  # 127.0.0.1 would hide it from Prometheus
        grace = float(env.get("SAMI_SHUTDOWN_GRACE") or Config().shutdown_grace)
        assert seconds(str(service(name)["stop_grace_period"])) > grace
        health = " ".join(service(name)["healthcheck"]["test"])
        assert "/healthz" in health and "SAMI_WORKER_PORT" in health


def test_every_file_a_service_mounts_exists() -> None:
    for name in compose()["services"]:
        for mount in mounts(name):
            if mount.source.startswith("."):
                assert (ROOT / mount.source).exists(), f"{name} mounts {mount.source}, which is missing"


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    words = command("redis")
    assert words[words.index("--appendonly") + 1] == "yes"
    assert words[words.index("--appendfsync") + 1] == "everysec"
    assert any(m.target == "/data" and m.source in compose()["volumes"] for m in mounts("redis"))
    assert service("redis")["image"].split(":")[0] == "redis"


def test_nginx_balances_both_fronts_without_buffering() -> None:
    upstreams = [words[1] for words in nginx_directives() if words[0] == "upstream"]
    assert len(upstreams) == 1
    servers = {words[0] for words in nginx_values("server") if words}
    assert servers == {f"{name}:{front_port()}" for name in FRONTS}
    assert [f"http://{upstreams[0]}"] in nginx_values("proxy_pass")
    assert nginx_values("proxy_buffering") == [["off"]]  # Server-Sent Events and long polls flow
    assert nginx_values("proxy_request_buffering") == [["off"]]
    (size,), = nginx_values("client_max_body_size")
    assert nginx_size(size) >= math.ceil(Config().max_input_bytes * 4 / 3)  # base64 of the largest invoke input
    assert nginx_size(size) > Config().max_job_input_bytes  # the largest job file, with its form around it
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        (timeout,), = nginx_values(directive)
        assert nginx_seconds(timeout) > Config().request_timeout
    (listen,), = nginx_values("listen")
    assert listen in {str(port).rsplit(":", 1)[-1] for port in service("nginx")["ports"]}  # published


def test_prometheus_scrapes_every_front_and_worker() -> None:
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {target for job in prometheus["scrape_configs"] for group in job.get("static_configs", [])
               for target in group["targets"]}
    wanted = {f"{name}:{front_port()}" for name in FRONTS} | {f"{name}:{worker_port()}" for name in WORKERS}
    assert wanted <= targets
    assert any(m.source == "./deploy/prometheus.yml" for m in mounts("prometheus"))


def test_every_dashboard_query_names_only_exported_metrics() -> None:
    exported = exported_samples()
    assert exprs()
    for expr in exprs():
        names = METRIC.findall(expr)
        assert names, f"no metric in {expr!r}"
        assert len(names) == expr.count("sami_gateway_"), f"a metric name not followed by {{, [ or ) in {expr!r}"
        missing = set(names) - exported
        assert not missing, f"{expr!r} names metrics the gateway does not export: {sorted(missing)}"


def test_dashboard_has_the_panels_an_operator_needs() -> None:
    titles = [panel["title"].lower() for panel in panels()]
    for needed in ("throughput", "latency", "queue depth", "queue age", "workers", "failures"):
        assert any(needed in title for title in titles), f"no panel about {needed}: {titles}"
    ok = Code.OK.value.code
    assert any(f'status_code!="{ok}"' in expr for expr in exprs()), "no panel of invoke answers other than success"


def test_grafana_provisions_prometheus_and_the_dashboard() -> None:
    by_target = {m.target: m.source for m in mounts("grafana")}
    assert (ROOT / by_target["/etc/grafana/provisioning"]).resolve() == PROVISIONING
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "sami-gateway.yaml").read_text())["providers"]
    folders = [PurePosixPath(provider["options"]["path"]) for provider in providers]
    shipped = {(ROOT / source).resolve(): PurePosixPath(target) for target, source in by_target.items()}
    assert shipped.get(DASHBOARD.parent) in folders, "no provider reads the folder the dashboard is mounted in"
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())["datasources"]
    (prometheus,) = [source for source in datasources if source["type"] == "prometheus"]
    assert urlsplit(prometheus["url"]).hostname == "prometheus"
    used = {target.get("datasource", panel.get("datasource"))["uid"] for panel in panels()
            for target in panel.get("targets", [])}
    assert used == {prometheus["uid"]}
