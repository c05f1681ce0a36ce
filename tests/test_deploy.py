"""The production deployment: the compose file and the image it runs, deploy/dagster.yaml loaded
into a real Dagster instance on PostgreSQL, and environment.yml against pyproject.toml.

There is no Docker here: the compose file and Dockerfile are read, not run. The instance is real:
dagster-postgres creates its schema in a throwaway PostgreSQL on loopback (tests/servers)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from importlib.metadata import distributions
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
from geocluster_dagster.defs.resources import (
    ENV_AOI_REGISTRY,
    ENV_DASK_SCHEDULER,
    ENV_OUTPUT,
    ENV_STAC_URL,
)

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


def _run_lines() -> list[str]:
    """The RUN instructions of the Dockerfile, continued lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip()[4:] for line in text.splitlines() if line.startswith("RUN ")]


def _interpolated(environment: dict, host: dict[str, str]) -> dict[str, str]:
    """A service's environment as Docker Compose makes it from ``host`` (the shell or
    deploy/.env): ``${VAR}`` and ``${VAR:-default}``, nested, and ``$$`` for a literal ``$``;
    a variable listed without a value is passed on only when ``host`` sets it."""
    innermost = re.compile(r"\$\{(\w+)(?::-([^${}]*))?\}")

    def value(text: str) -> str:
        text = text.replace("$$", "\0")
        while True:
            replaced = innermost.sub(lambda m: host.get(m.group(1)) or (m.group(2) or ""), text)
            if replaced == text:
                return text.replace("\0", "$")
            text = replaced

    made = {k: value(str(v)) for k, v in environment.items() if v is not None}
    made.update({k: host[k] for k, v in environment.items() if v is None and k in host})
    return made


def _volumes(service: dict, host: dict[str, str] | None = None) -> dict[str, str]:
    """Mount point -> volume name (or host path, as Compose makes it from ``host``) of a
    service; a read-only mount's source ends in ``:ro``."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target, *mode = _interpolated({"v": entry}, host or {})["v"].split(":")
        mounts[target] = source + "".join(f":{m}" for m in mode)
    return mounts


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

    # The same settings and compute logs in both (runs execute in the daemon's container).
    assert (
        _volumes(webserver)
        == _volumes(daemon)
        == {
            f"{home}/storage": "dagster-storage",
            AOI_MOUNT: "./aois:ro",  # deploy/aois, read-only: the AOI files of the host
        }
    )
    assert _volumes(webserver, {"GEOCLUSTER_AOI_DIR": "/data/aois"})[AOI_MOUNT] == "/data/aois:ro"
    assert "dagster-storage" in compose["volumes"]

    # The products in the compose network's object store, which Dagster waits for.
    environment = _interpolated(webserver["environment"], {})
    store = services["object-store"]
    assert urlsplit(environment[ENV_OUTPUT]).scheme == "s3"
    endpoint = urlsplit(environment["AWS_ENDPOINT_URL"])
    assert endpoint.hostname == "object-store" and f":{endpoint.port}" in store["command"][0]
    assert f"/objects/{urlsplit(environment[ENV_OUTPUT]).netloc}" in store["command"][0]
    assert _volumes(store) == {"/objects": "objects"} and "objects" in compose["volumes"]
    for service in (webserver, daemon):
        assert service["depends_on"]["object-store"]["condition"] == "service_healthy"
    # The store's keys are the clients' keys, whatever deploy/.env sets.
    for host_env in ({}, {"AWS_SECRET_ACCESS_KEY": "s3cret"}, {"OBJECT_STORE_SECRET_KEY": "k"}):
        clients = _interpolated(webserver["environment"], host_env)
        served = _interpolated(store["environment"], host_env)
        assert served["OBJECT_STORE_ACCESS_KEY"] == clients["AWS_ACCESS_KEY_ID"]
        assert served["OBJECT_STORE_SECRET_KEY"] == clients["AWS_SECRET_ACCESS_KEY"]

    # The Dask scheduler and worker are optional, with the runs' settings and no volume at all.
    scheduler, worker = services["dask-scheduler"], services["dask-worker"]
    assert scheduler["profiles"] == worker["profiles"] == ["dask"]
    assert "postgres" not in worker.get("depends_on", [])
    assert worker["image"] == scheduler["image"] == webserver["image"]
    assert _volumes(worker) == _volumes(scheduler) == {}
    assert worker["environment"] == webserver["environment"]
    assert worker["command"][:2] == ["dask", "worker"]
    address = urlsplit(worker["command"][2])
    assert address.hostname == "dask-scheduler" and str(address.port) in scheduler["command"]

    # The demo the compose file names is the one the image builds.
    baked = next(line for line in _run_lines() if "build_demo(" in line)
    demo_root = re.search(r"build_demo\('([^']+)'\)", baked)
    assert demo_root is not None
    for name in (ENV_STAC_URL, ENV_AOI_REGISTRY):
        assert environment[name].startswith(demo_root.group(1) + "/"), name


@pytest.mark.servers
def test_the_compose_services_share_nothing_but_the_object_store(tmp_path):
    """The compose deployment without Docker: its object store, its Dask scheduler and worker
    started with the compose file's own commands and environments (service names and the
    image's demo folder mapped to loopback and a temporary folder), then a partition run with
    the daemon's environment. Every product lands in the store's bucket; the worker, in a
    folder of its own, reads the demo from the image's path and writes nothing where it runs."""
    import secrets
    import subprocess

    from .servers.ports import free_port, stop_process, wait_for_port

    services = _compose()["services"]
    store_port, scheduler_port = free_port(), free_port()
    demo_root = re.search(
        r"build_demo\('([^']+)'\)", next(line for line in _run_lines() if "build_demo(" in line)
    )
    assert demo_root is not None
    objects, image_demo = tmp_path / "objects", tmp_path / "image_demo"
    mapped = {  # what the compose network and the image name, here
        "object-store:9000": f"127.0.0.1:{store_port}",
        "dask-scheduler:8786": f"127.0.0.1:{scheduler_port}",
        demo_root.group(1): str(image_demo),
    }

    def here(text: str) -> str:
        for theirs, ours in mapped.items():
            text = text.replace(theirs, ours)
        return text

    host = {"OBJECT_STORE_SECRET_KEY": secrets.token_hex(16)}  # as deploy/.env would set it
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GEOCLUSTER_", "AWS_"))}
    # The image's build step, as the Dockerfile runs it.
    baked = next(line for line in _run_lines() if "build_demo(" in line)
    subprocess.run(here(baked), shell=True, check=True, env=base)

    store_command = services["object-store"]["command"][0].replace("$$", "$")
    store_command = store_command.replace("/objects", str(objects))
    store_command = store_command.replace("--addr :9000", f"--addr 127.0.0.1:{store_port}")
    store_env = {**base, **_interpolated(services["object-store"]["environment"], host)}
    worker_env = {
        **base,
        **{
            k: here(v)
            for k, v in _interpolated(services["dask-worker"]["environment"], host).items()
        },
    }
    scheduler_command = [
        here(word) if word != "8786" else str(scheduler_port)
        for word in services["dask-scheduler"]["command"]
    ]
    scheduler_command[scheduler_command.index("--dashboard-address") + 1] = ":0"
    worker_command = [here(word) for word in services["dask-worker"]["command"]]
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    processes = []
    try:
        processes.append(subprocess.Popen(["sh", "-c", store_command], env=store_env))
        wait_for_port(store_port, process=processes[-1])
        processes.append(subprocess.Popen(scheduler_command, env=worker_env, cwd=elsewhere))
        wait_for_port(scheduler_port, process=processes[-1])
        processes.append(subprocess.Popen(worker_command, env=worker_env, cwd=elsewhere))
        daemon_env = {
            **base,
            **{
                k: here(v)
                for k, v in _interpolated(services["daemon"]["environment"], host).items()
            },
            ENV_DASK_SCHEDULER: f"tcp://127.0.0.1:{scheduler_port}",
            "GEOCLUSTER_STATE": str(tmp_path / "daemon_state"),
        }
        daemon_env.pop("DAGSTER_HOME")  # the CLI keeps its own instance: no PostgreSQL here
        daemon_env.pop("DAGSTER_POSTGRES_URL")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "geocluster_dagster",
                "materialize",
                "--aoi",
                "demo",
                "--date",
                "2023-06",
            ],  # fmt: skip
            env=daemon_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{scheduler_port}", timeout=30) as client:
            worked = client.run(lambda dask_worker: len(dask_worker.state.log))
        assert len(worked) == 1 and all(n > 0 for n in worked.values()), worked  # it computed
    finally:
        for process in reversed(processes):
            stop_process(process)
    bucket = (
        objects
        / urlsplit(_interpolated(services["daemon"]["environment"], host)[ENV_OUTPUT]).netloc
    )
    stored = {p.relative_to(bucket).parts[1] for p in bucket.rglob("*") if p.is_file()}
    assert {
        "stac_items",
        "band_stack",
        "mosaic",
        "geotiff",
        "clusters",
        "diagnostics",
        "stac",
    } <= stored
    assert list(elsewhere.iterdir()) == []  # the worker wrote nothing where it ran
    assert not list((tmp_path / "daemon_state").rglob("*.tif"))


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
    """`dg dev` on the CLI's instance (the README's UI command) dequeues every second,
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


#: Where the containers and pods find the AOI files (deploy/aois/README.md).
AOI_MOUNT = "/srv/geocluster/aois"


def test_the_containers_read_the_aoi_files_the_user_puts_in_deploy_aois(tmp_path):
    """A registry folder the compose file mounts: the files a user puts in deploy/aois are the
    AOIs of a registry at the mount point (the README beside them is not one)."""
    import shapely

    from geocluster_dagster.aoi import load_registry

    folder = DEPLOY / "aois"
    assert (folder / "README.md").exists()
    assert f"GEOCLUSTER_AOI_REGISTRY={AOI_MOUNT}" in (folder / "README.md").read_text()
    assert f"GEOCLUSTER_AOI_REGISTRY={AOI_MOUNT}" in COMPOSE_FILE.read_text()
    mounted = tmp_path / "aois"  # what the container sees at AOI_MOUNT
    shutil.copytree(folder, mounted)
    feature = {
        "type": "Feature",
        "properties": {"name": "Lake"},
        "geometry": shapely.geometry.mapping(shapely.box(-84.05, 34.97, -83.95, 35.03)),
    }
    (mounted / "lake.geojson").write_text(json.dumps(feature))
    assert list(load_registry(mounted)) == ["lake"]


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
                    "volumeMounts": deployment["volumeMounts"],
                }
            ],
            "volumes": deployment["volumes"],
        },
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    # The AOI files: the ConfigMap, read-only where the registry setting points, in the code
    # server's pod and in every run pod.
    run_pods = launcher["config"]["k8sRunLauncher"]
    for pod_values in (deployment, run_pods):
        (mount,) = pod_values["volumeMounts"]
        (volume,) = [v for v in pod_values["volumes"] if v["name"] == mount["name"]]
        assert volume["configMap"]["name"] == "geocluster-aois"
        assert mount["mountPath"] == env[ENV_AOI_REGISTRY] == AOI_MOUNT and mount["readOnly"]
    # The run queue: the same limit as deploy/dagster.yaml, one run per AOI across the cluster.
    chart = values["dagsterDaemon"]["runCoordinator"]
    assert chart["enabled"] and chart["type"] == "QueuedRunCoordinator"
    limits = chart["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    instance = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    assert limits == instance["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert limits[0]["key"] == get_multidimensional_partition_tag(AOI_PARTITIONS)
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"]
    assert values["postgresql"]["enabled"] is False  # an external, managed PostgreSQL


def test_the_package_declares_its_licence_and_ships_its_text():
    from importlib.metadata import metadata

    declared = metadata("geocluster_dagster")
    assert declared["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in (declared.get_all("License-File") or [])
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert any(
        c.startswith("Topic :: Scientific/Engineering :: GIS")
        for c in declared.get_all("Classifier") or []
    )


def test_the_image_context_leaves_out_what_the_image_does_not_need():
    import fnmatch

    ignored = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for heavy in (".git", ".venv", "geocluster_output", ".dagster_home"):
        assert heavy in ignored, heavy
    _, copies, _ = _dockerfile()
    for source, _ in copies:
        if source.startswith("deploy/dagster.yaml"):
            continue
        assert (REPO_ROOT / source).exists(), source  # what the image copies is there ...
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source  # ... sent


def test_the_ui_and_the_dask_dashboard_listen_on_this_machine_only():
    """Neither has a login: compose publishes them on the loopback interface, not on every
    interface of the host (docs/deployment.md says how to put them behind one)."""
    published = [
        (name, port)
        for name, service in _compose()["services"].items()
        for port in service.get("ports", [])
    ]
    assert {name for name, _ in published} >= {"webserver", "dask-scheduler"}
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), (name, port)


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_every_install_uses_the_constraints_and_this_environment_holds_them():
    """One version of every package, the tested one, in every install the repository runs."""
    readme = (REPO_ROOT / "README.md").read_text()
    command_1 = next(
        line for line in readme.splitlines() if "geocluster demo" in line and "pip" in line
    )
    test_sh = (REPO_ROOT / "scripts" / "test.sh").read_text()
    installs = [
        command_1,
        next(line for line in test_sh.splitlines() if line.startswith("pip install")),
        next(line for line in _run_lines() if "pip install" in line),
    ]
    assert all("-c constraints.txt" in line for line in installs), installs
    _, copies, _ = _dockerfile()
    assert "constraints.txt" in [source for source, _ in copies]  # in the image before its install

    pins = _pins()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    for spec in wanted:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (spec, pins[name])
    # This environment was installed with them (CI's is a fresh one, made by scripts/test.sh).
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    differ = {n: (installed[n], v) for n, v in pins.items() if n in installed and installed[n] != v}
    assert not differ, f"installed (left) differs from constraints.txt (right): {differ}"
