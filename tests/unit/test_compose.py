"""docker-compose.yaml: valid Compose, every secret read from the environment, and the stack the
production profile needs (services, healthchecks, start order, logins).

There is no container engine here: these tests read the file, and run the parts of it that are
plain Python (the admin's passwords file) or plain config (MLflow's auth ini) outside Docker.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"

AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker"]
ONE_SHOT = {"airflow-init", "minio-init"}
SECRET_LIKE = re.compile(r"(PASSWORD|SECRET|FERNET|_KEY)", re.I)
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $$ is a literal $
VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def documented() -> dict[str, str]:
    return dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                if line and not line.startswith("#"))


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation, enough for these tests: defaults, required values, $$."""
    def value(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        given = env.get(name)
        if op in (":-", "-") and not (given if op == ":-" else given is not None):
            return arg
        if op in (":?", "?") and not given:
            raise KeyError(f"{name}: {arg}")
        return given or ""
    return VARIABLE.sub(value, text).replace("$$", "$")


def test_compose_file_matches_the_compose_specification():
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_variable_compose_reads_is_documented_in_env_example():
    used = {m.group(1) for m in VARIABLE.finditer(COMPOSE.read_text())}
    assert "DRIFTLINE_MLFLOW_UI_URL" in used  # ${X:-default} counts as read
    assert "HOSTNAME" not in used  # $${HOSTNAME} is the container's, not compose's
    assert used == set(documented())


def test_env_example_says_what_each_variable_is():
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert number and lines[number - 1].startswith("# "), f"{line}: no comment above it"


def test_every_secret_is_required():
    """Compose refuses to start while a secret is unset: one ${X:?...} per secret at least."""
    text = COMPOSE.read_text()
    secrets = [name for name in documented() if SECRET_LIKE.search(name)]
    assert {"AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
            "AIRFLOW_ADMIN_PASSWORD", "POSTGRES_PASSWORD", "REDIS_PASSWORD",
            "MINIO_ROOT_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
            "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= set(secrets)
    for name in secrets:
        assert re.search(r"\$\{" + name + r":\?", text), f"{name} is not required"
        assert not re.search(r"\$\{" + name + r":?-", text), f"{name} has a default"


def test_no_secret_is_written_into_the_compose_file():
    compose = yaml.safe_load(COMPOSE.read_text())
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        for key, value in env.items():
            if key.endswith("_FILE"):  # where a secret lives, not the secret
                assert str(value).startswith("/"), f"{name}.{key} is not a path"
            elif SECRET_LIKE.search(key):
                assert str(value).startswith("${"), f"{name}.{key} is not taken from the env"
    assert all(not value for value in documented().values()), ".env.example must hold no values"


def test_no_literal_credential_anywhere_in_the_file():
    """A password inside a URL or a command counts too, not only env keys named *PASSWORD."""
    text = COMPOSE.read_text()
    credentials_in_urls = re.findall(r"://[^:/@\s]+:([^@\s]+)@", text)
    # compose's ${...} or, inside a container's shell script, the container's own $${...}
    assert credentials_in_urls and all(c.startswith(("${", "$${")) for c in credentials_in_urls)
    assert "redis-cli -a" not in text, "a healthcheck passes the password on the command line"
    compose = yaml.safe_load(text)
    for name, service in compose["services"].items():
        command = " ".join(service.get("command") or []) if isinstance(
            service.get("command"), list) else str(service.get("command") or "")
        assert "--requirepass" not in command and ("PASSWORD" not in command or "$$" in command), \
            f"{name}: a password is passed on the command line"
    for name, config in compose.get("configs", {}).items():
        assert "${" not in re.sub(r"\$\{\w+:-[\w.:/-]*\}", "", config.get("content", "")), \
            f"config {name} interpolates something other than a default-able setting"


def test_training_files_are_in_the_image():
    compose = yaml.safe_load(COMPOSE.read_text())
    dockerfile = compose["x-airflow"]["build"]["dockerfile_inline"]
    assert "dvc.yaml params.yaml" in dockerfile
    assert "FROM apache/airflow:3.3.2-python3.11" in dockerfile
    assert "-r /opt/driftline/requirements.txt" in dockerfile
    assert "-c /opt/driftline/constraints.txt" in dockerfile


def test_the_whole_stack_is_there(compose):
    services = set(compose["services"])
    assert {"postgres", "redis", "minio", "minio-init", "mlflow", "evidently-ui",
            "airflow-init", *AIRFLOW_SERVICES} <= services
    commands = {name: compose["services"][name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-apiserver": ["airflow", "api-server"],
        "airflow-scheduler": ["airflow", "scheduler"],
        "airflow-dag-processor": ["airflow", "dag-processor"],
        "airflow-triggerer": ["airflow", "triggerer"],
        "airflow-worker": ["airflow", "celery", "worker"],
    }


def test_each_long_running_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name} is a one-shot job"
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert service.get("restart") == "unless-stopped", f"{name} is not restarted"


def test_every_dependency_waits_on_a_condition(compose):
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for other, how in depends.items():
            assert other in services, f"{name} depends on unknown {other}"
            wanted = ("service_completed_successfully" if other in ONE_SHOT
                      else "service_healthy")
            assert how.get("condition") == wanted, f"{name} -> {other}: {how}"
            if wanted == "service_healthy":
                assert services[other].get("healthcheck"), f"{other} cannot become healthy"
    for name in AIRFLOW_SERVICES:
        assert {"postgres", "redis", "mlflow", "airflow-init"} <= set(services[name]["depends_on"])
    assert {"postgres", "minio-init", "airflow-init"} <= set(services["mlflow"]["depends_on"])
    assert set(services["evidently-ui"]["depends_on"]) == {"airflow-init"}
    assert set(services["airflow-init"]["depends_on"]) == {"postgres"}
    assert set(services["minio-init"]["depends_on"]) == {"minio"}


def test_the_executor_is_celery_on_redis_and_postgres(compose):
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        env = compose["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:${REDIS_PASSWORD")
        assert env["AIRFLOW__CELERY__BROKER_URL"].endswith("@redis:6379/0")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
        assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"  # port 8974's check


def test_mlflow_runs_behind_basic_auth_on_postgres_and_s3(compose, tmp_path):
    mlflow = compose["services"]["mlflow"]
    command, env = mlflow["command"], mlflow["environment"]
    assert command[:2] == ["mlflow", "server"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert command[command.index("--artifacts-destination") + 1] == "s3://driftline/mlflow"
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://airflow:${")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${")
    assert "mlflow" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")  # Airflow's Host header
    assert mlflow["image"] == compose["x-airflow"]["image"]
    assert mlflow["entrypoint"][0] == "/usr/bin/dumb-init"  # not `airflow mlflow server`
    # the ini named by MLFLOW_AUTH_CONFIG_PATH is the one mounted from `configs:`
    (mount,) = [c for c in mlflow["configs"] if c["target"] == env["MLFLOW_AUTH_CONFIG_PATH"]]
    content = interpolate(compose["configs"][mount["source"]]["content"], {})
    ini = configparser.ConfigParser()
    ini.read_string(content)
    auth = ini["mlflow"]
    assert auth["database_uri"] == "postgresql+psycopg2://airflow@postgres:5432/mlflow_auth"
    assert env["PGPASSWORD"].startswith("${POSTGRES_PASSWORD")  # libpq's, for that URI
    assert auth["admin_username"] == "admin" and "admin_password" not in auth
    assert auth["default_permission"] in {"READ", "NO_PERMISSIONS"}
    # Airflow's tasks log in as that admin
    airflow_env = compose["x-airflow"]["environment"]
    assert interpolate(airflow_env["MLFLOW_TRACKING_USERNAME"], {}) == auth["admin_username"]
    assert airflow_env["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD")
    assert airflow_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    named = interpolate(compose["configs"][mount["source"]]["content"],
                        {"MLFLOW_ADMIN_USERNAME": "ops"})
    assert "admin_username = ops" in named


def test_airflow_init_creates_every_database_the_stack_uses(compose):
    script = compose["services"]["airflow-init"]["command"][-1]
    (created,) = re.findall(r"for db in ([\w ]+); do", script)
    used = set(re.findall(r"@postgres:5432/(\w+)", COMPOSE.read_text())) - {"airflow"}
    assert used == {"flights", "mlflow", "mlflow_auth", "monitoring"}
    assert used <= set(created.split())
    assert "airflow db migrate" in script


def init_password_script(compose) -> str:
    script = interpolate(compose["services"]["airflow-init"]["command"][-1], {})
    (python,) = re.findall(r"python - <<'PY'\n(.*?)\nPY\n", script, re.S)
    return python


def test_airflow_init_writes_the_admin_passwords_file(compose, tmp_path):
    password = 'p"w\\d $HOME x'  # quotes, backslash and a $ survive as they are
    path = tmp_path / "auth" / "passwords.json"
    env = {"PATH": os.environ["PATH"], "AIRFLOW_ADMIN_USERNAME": "ops",
           "AIRFLOW_ADMIN_PASSWORD": password,
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(path)}
    done = subprocess.run([sys.executable, "-c", init_password_script(compose)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout + done.stderr
    assert json.loads(path.read_text()) == {"ops": password}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["passwords.json"]  # no temp file left
    # a second start rewrites it (a changed password takes effect)
    env["AIRFLOW_ADMIN_PASSWORD"] = "second"
    subprocess.run([sys.executable, "-c", init_password_script(compose)], env=env, check=True,
                   timeout=60)
    assert json.loads(path.read_text()) == {"ops": "second"}


def test_the_admin_password_comes_only_from_the_environment(compose):
    services = compose["services"]
    script = services["airflow-init"]["command"][-1]
    assert "AIRFLOW_ADMIN_PASSWORD" in init_password_script(compose)
    assert "$AIRFLOW_ADMIN_PASSWORD" not in script and "${AIRFLOW_ADMIN_PASSWORD" not in script
    assert "echo" not in init_password_script(compose) and "print" not in init_password_script(
        compose)
    init_env = services["airflow-init"]["environment"]
    assert init_env["AIRFLOW_ADMIN_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")
    assert init_env["AIRFLOW_ADMIN_USERNAME"] == "${AIRFLOW_ADMIN_USERNAME:-admin}"
    for name, service in services.items():
        if name != "airflow-init":
            assert "AIRFLOW_ADMIN_PASSWORD" not in service.get("environment", {}), name


def mounts(service: dict) -> dict[str, str]:
    """target -> source of a service's volumes (short syntax)."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_the_api_server_reads_the_passwords_file_airflow_init_writes(compose):
    services = compose["services"]
    init, api = services["airflow-init"], services["airflow-apiserver"]
    key = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
    path = PurePosixPath(init["environment"][key])
    assert api["environment"][key] == str(path)
    folder = str(path.parent)
    volume = mounts(init)[folder]
    assert volume in compose["volumes"]  # a named volume, shared
    assert mounts(api)[folder] == volume
    assert not any(v.endswith(":ro") for v in api["volumes"] if v.startswith(f"{volume}:"))
    assert folder in compose["x-airflow"]["build"]["dockerfile_inline"]  # airflow owns it
    for name in ["airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-worker", "mlflow", "evidently-ui"]:
        assert volume not in mounts(services[name]).values(), f"{name} sees the passwords"
    # the same user, as admin, in the users list the api-server reads
    users = interpolate(api["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"], {})
    assert users == f"{interpolate(init['environment']['AIRFLOW_ADMIN_USERNAME'], {})}:admin"
    assert api["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    # the rest of the api-server's mounts are the common ones
    assert set(api["volumes"]) - {f"{volume}:{folder}"} == set(compose["x-airflow"]["volumes"])
    assert set(init["volumes"]) - {f"{volume}:{folder}"} == set(compose["x-airflow"]["volumes"])


def test_airflow_links_to_the_uis_and_shares_the_drift_history(compose):
    env = compose["x-airflow"]["environment"]
    assert env["DRIFTLINE_MLFLOW_UI_URL"] == "${DRIFTLINE_MLFLOW_UI_URL:-http://localhost:5000}"
    assert env["DRIFTLINE_EVIDENTLY_UI_URL"] == (
        "${DRIFTLINE_EVIDENTLY_UI_URL:-http://localhost:8000}")
    assert interpolate(env["DRIFTLINE_MLFLOW_UI_URL"],
                       {"DRIFTLINE_MLFLOW_UI_URL": "https://ml.example"}) == "https://ml.example"
    history = env["DRIFTLINE_HISTORY_URL"]
    assert history.startswith("postgresql+psycopg2://airflow:${POSTGRES_PASSWORD")
    assert history.endswith("@postgres:5432/monitoring")
    for name in AIRFLOW_SERVICES:
        assert compose["services"][name]["environment"]["DRIFTLINE_HISTORY_URL"] == history


def test_evidently_ui_serves_the_workers_workspace(compose):
    ui = compose["services"]["evidently-ui"]
    command = ui["command"]
    assert command[:2] == ["evidently", "ui"]
    home = compose["x-airflow"]["environment"]["DRIFTLINE_HOME"]
    workspace = command[command.index("--workspace") + 1]
    assert workspace == f"{home}/evidently"  # driftline.config.Settings.evidently_workspace
    assert command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    assert ui["ports"] == [f"127.0.0.1:{port}:{port}"]  # no login: the host only
    assert ui["healthcheck"]["test"][-1] == f"http://localhost:{port}/api/version"
    data = mounts(compose["x-airflow"])[home]
    assert f"{data}:{home}:ro" in ui["volumes"]
    assert ui["image"] == compose["x-airflow"]["image"]
    assert ui["entrypoint"][0] == "/usr/bin/dumb-init"
    assert f"mkdir -p {workspace}" in compose["services"]["airflow-init"]["command"][-1]
