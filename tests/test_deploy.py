"""The production deployment: the compose file and the image it runs, deploy/dagster.yaml loaded
into a real Dagster instance on PostgreSQL, and environment.yml against pyproject.toml.

There is no Docker here: the compose file and Dockerfile are read, not run. The instance is real:
dagster-postgres creates its schema in a throwaway PostgreSQL on loopback (tests/servers)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.tags import get_multidimensional_partition_tag
from dagster._utils.tags import TagConcurrencyLimitsCounter
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from geocluster_dagster.cli import _OWN_INSTANCE, RUN_QUEUE, _create_own_instance
from geocluster_dagster.defs.partitions import AOI_PARTITIONS, partitions
from geocluster_dagster.defs.resources import ENV_DASK_SCHEDULER, ENV_OUTPUT

from .servers.postgres import PostgresServer

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DAGSTER_YAML = DEPLOY / "dagster.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DAGSTER_SERVICES = ("webserver", "daemon")
WEBSERVER = ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.yaml"]
DAEMON = ["dagster-daemon", "run", "-w", "workspace.yaml"]


def _compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _dockerfile() -> tuple[dict[str, str], list[tuple[str, str]], list[str]]:
    """(ENV values, COPY (source, destination) with ENV expanded, CMD) of the Dockerfile."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # join continued lines
    env: dict[str, str] = {}
    copies: list[tuple[str, str]] = []
    cmd: list[str] = []
    for line in text.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "ENV":
            env.update(dict(word.split("=", 1) for word in shlex.split(rest)))
        elif instruction == "COPY":
            *sources, destination = shlex.split(rest)
            destination = re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], destination)
            copies += [(source, destination) for source in sources]
        elif instruction == "CMD":
            cmd = json.loads(rest)
    return env, copies, cmd


def _volumes(service: dict) -> dict[str, str]:
    """Mount point -> volume name (or host path) of a service."""
    return {entry.split(":")[1]: entry.split(":")[0] for entry in service.get("volumes", [])}


def test_compose_runs_the_webserver_and_the_daemon_from_one_image_with_deploy_dagster_yaml():
    compose = _compose()
    services = compose["services"]
    assert {"postgres", *DAGSTER_SERVICES, "dask-scheduler", "dask-worker"} <= set(services)
    assert re.fullmatch(r"(postgres|postgis/postgis):15[.\w-]*", services["postgres"]["image"])

    env, copies, cmd = _dockerfile()
    webserver, daemon = (services[name] for name in DAGSTER_SERVICES)
    # One image, built from the repository's Dockerfile, whose default command is the webserver.
    assert webserver["image"] == daemon["image"]
    assert webserver["build"] == daemon["build"]
    context = (DEPLOY / webserver["build"]["context"]).resolve()
    assert context == REPO_ROOT and (context / webserver["build"]["dockerfile"]) == DOCKERFILE
    assert webserver["command"] == cmd == WEBSERVER
    assert daemon["command"] == DAEMON

    # Both read deploy/dagster.yaml: the image holds it as $DAGSTER_HOME/dagster.yaml.
    home = env["DAGSTER_HOME"]
    assert ("deploy/dagster.yaml", f"{home}/dagster.yaml") in copies
    for service in (webserver, daemon):
        environment = service["environment"]
        assert environment["DAGSTER_HOME"] == home
        url = urlsplit(environment["DAGSTER_POSTGRES_URL"])
        assert url.scheme == "postgresql+psycopg2"  # see the comment in deploy/dagster.yaml
        assert url.hostname == "postgres" and url.port == 5432
        postgres_env = services["postgres"]["environment"]
        assert url.username == postgres_env["POSTGRES_USER"]
        assert url.path == f"/{postgres_env['POSTGRES_DB']}"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert ENV_DASK_SCHEDULER in environment  # passed on for the dask profile
    assert webserver["environment"] == daemon["environment"]

    # The same outputs and compute logs in both (runs execute in the daemon's container).
    output = webserver["environment"][ENV_OUTPUT]
    data_mount = next(m for m in _volumes(webserver) if output.startswith(m.rstrip("/") + "/"))
    assert _volumes(webserver) == _volumes(daemon)
    assert _volumes(webserver)[f"{home}/storage"] in compose["volumes"]
    assert _volumes(webserver)[data_mount] in compose["volumes"]

    # The Dask scheduler and worker are optional, and the workers see the same data.
    scheduler, worker = services["dask-scheduler"], services["dask-worker"]
    assert scheduler["profiles"] == worker["profiles"] == ["dask"]
    assert "postgres" not in worker.get("depends_on", [])
    assert worker["image"] == scheduler["image"] == webserver["image"]
    assert _volumes(worker)[data_mount] == _volumes(webserver)[data_mount]
    assert worker["command"][:2] == ["dask", "worker"]
    address = urlsplit(worker["command"][2])
    assert address.hostname == "dask-scheduler" and str(address.port) in scheduler["command"]


def test_compose_passes_on_only_settings_the_code_reads():
    source = "\n".join(p.read_text() for p in (REPO_ROOT / "geocluster_dagster").rglob("*.py"))
    read = set(re.findall(r"GEOCLUSTER_[A-Z_]+", source))
    for name in DAGSTER_SERVICES:
        passed = {
            key
            for key in _compose()["services"][name]["environment"]
            if key.startswith("GEOCLUSTER_")
        }
        assert passed and passed <= read, passed - read


@pytest.fixture
def postgres():
    with PostgresServer() as pg:
        yield pg


@pytest.mark.servers
def test_deploy_dagster_yaml_makes_a_real_instance_with_its_run_queue_limits(
    postgres, tmp_path, monkeypatch
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_YAML, home / "dagster.yaml")  # as the Dockerfile does
    url = postgres.dsn.replace("postgresql://", "postgresql+psycopg2://")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Runs and events are in PostgreSQL: dagster-postgres created its tables there.
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        with psycopg.connect(postgres.dsn) as conn:
            tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables")}
        assert {"runs", "run_tags", "event_logs"} <= tables

        # The queue the daemon dequeues from: two runs at a time, never two of one AOI.
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert queue.max_concurrent_runs == 2
        aoi_tag = get_multidimensional_partition_tag(AOI_PARTITIONS)
        assert AOI_PARTITIONS in partitions.partition_dimension_names
        assert [dict(limit) for limit in queue.tag_concurrency_limits] == [
            {"key": aoi_tag, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        # ... as Dagster applies it, to a run stored in (and read back from) PostgreSQL.
        instance.add_run(
            dg.DagsterRun(
                job_name="geocluster_pipeline",
                status=dg.DagsterRunStatus.STARTED,
                tags={aoi_tag: "lake_tahoe"},
            )
        )
        started = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert [run.tags[aoi_tag] for run in started] == ["lake_tahoe"]
        counter = TagConcurrencyLimitsCounter(queue.tag_concurrency_limits, list(started))

        def queued(aoi: str) -> dg.DagsterRun:
            return dg.DagsterRun(job_name="geocluster_pipeline", tags={aoi_tag: aoi})

        assert counter.is_blocked(queued("lake_tahoe"))
        assert not counter.is_blocked(queued("po_delta"))

        # Runs whose process died are marked failed; read retries are shown in the UI.
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 21600
        assert "geocluster_dagster" in instance.managed_python_loggers


def test_the_clis_own_instance_queues_runs_as_the_deployment_does(tmp_path):
    """`dagster dev` on the CLI's instance (the README's UI command) dequeues every second,
    two runs at a time and never two of one AOI: deploy/dagster.yaml's queue, and a real
    instance made from the file the CLI writes (an earlier version's file is upgraded)."""
    deployed = yaml.safe_load(DAGSTER_YAML.read_text())["run_coordinator"]
    assert yaml.safe_load(RUN_QUEUE)["run_coordinator"] == deployed
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(_OWN_INSTANCE)  # as an earlier version left it
    _create_own_instance(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 2
        assert [dict(limit) for limit in queue.tag_concurrency_limits] == [
            {
                "key": get_multidimensional_partition_tag(AOI_PARTITIONS),
                "value": {"applyLimitPerUniqueValue": True},
                "limit": 1,
            }
        ]
        assert "geocluster_dagster" in instance.managed_python_loggers
    edited = "telemetry:\n  enabled: true\n"  # a user's own file is left as it is
    (home / "dagster.yaml").write_text(edited)
    _create_own_instance(home)
    assert (home / "dagster.yaml").read_text() == edited


def _conda_name(spec: str) -> str:
    return canonicalize_name(re.split(r"[=<>!~\[ ]", spec, maxsplit=1)[0])


def test_environment_yml_lists_exactly_the_package_dependencies():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    required = {canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}

    environment = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    listed: list[str] = []
    pip_lines: list[str] = []
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            pip_lines += entry["pip"]
        else:
            listed.append(_conda_name(entry))
    listed += [
        canonicalize_name(Requirement(line).name) for line in pip_lines if not line.startswith("-")
    ]
    assert "-e .[test]" in pip_lines  # the package itself, with the test extras

    tooling = {"python", "pip"}
    assert len(listed) == len(set(listed)), "a package is listed twice"
    assert required - set(listed) == set(), "pyproject.toml dependencies missing in environment.yml"
    assert set(listed) - tooling - required == set(), (
        "environment.yml lists what the package does not use"
    )


# --- Kubernetes: Dagster's Helm chart with one pod per run, the products in a bucket -----------

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
#: The oldest Kubernetes the manifests are checked against (GKE, EKS and AKS all serve it).
KUBERNETES_VERSION = "1.30.0"


def _manifests() -> list[dict]:
    documents = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "values.yaml":  # Helm values, not a manifest
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def test_the_kubernetes_manifests_are_valid_against_the_kubernetes_schemas():
    """Offline, with the schemas kubernetes-validate ships; strict: no unknown field."""
    import kubernetes_validate

    documents = _manifests()
    assert {d["kind"] for d in documents} == {"Deployment", "Service", "Secret"}
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    # A field the schema does not know is refused: the check is not a formality.
    broken = json.loads(json.dumps(documents[0]))
    broken["spec"]["template"]["spec"]["containers"][0]["envFrm"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_helm_values_give_every_pod_the_bucket_and_its_secret_and_one_run_per_aoi():
    import kubernetes_validate

    values = yaml.safe_load((KUBERNETES / "values.yaml").read_text())
    (secret,) = [d for d in _manifests() if d["kind"] == "Secret"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "geocluster_dagster.definitions"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    # The products in the bucket (no shared disk), the credentials only from the Secret.
    assert env[ENV_OUTPUT].startswith("s3://") and not [k for k in env if k.startswith("AWS_")]
    assert set(secret["stringData"]) >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    reference = {"name": secret["metadata"]["name"]}
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert reference in deployment["envSecrets"]
    assert reference in launcher["config"]["k8sRunLauncher"]["envSecrets"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    # Every variable set is one the package reads (docs/configuration.md lists them).
    documented = set(
        re.findall(r"`(GEOCLUSTER_[A-Z_]+)`", (REPO_ROOT / "docs" / "configuration.md").read_text())
    )
    documented |= set(
        re.findall(r"`(GEOCLUSTER_[A-Z_]+)`", (REPO_ROOT / "docs" / "deployment.md").read_text())
    )
    assert set(env) <= documented, set(env) - documented
    # The user code pod as the chart renders it: its env, secret and resources are valid.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": deployment["name"]},
        "spec": {
            "containers": [
                {
                    "name": deployment["name"],
                    "image": f"{deployment['image']['repository']}:{deployment['image']['tag']}",
                    "env": deployment["env"],
                    "envFrom": [{"secretRef": s} for s in deployment["envSecrets"]],
                    "resources": deployment["resources"],
                }
            ]
        },
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    # The run queue: the same limit as deploy/dagster.yaml, one run per AOI across the cluster.
    chart = values["dagsterDaemon"]["runCoordinator"]
    assert chart["enabled"] and chart["type"] == "QueuedRunCoordinator"
    limits = chart["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    instance = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    assert limits == instance["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert limits[0]["key"] == get_multidimensional_partition_tag(AOI_PARTITIONS)
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"]
    assert values["postgresql"]["enabled"] is False  # an external, managed PostgreSQL
