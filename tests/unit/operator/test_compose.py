"""docker-compose.yaml: valid Compose, every secret read from the environment, and the stack the
production profile needs (services, healthchecks, start order, logins).

There is no container engine here: these tests read the file, and run the parts of it that are
plain Python (airflow-init's creation of the FAB admin, driftline.operator.airflow_admin) or
plain config (MLflow's auth ini) outside Docker. The production config must use no development
auth manager (Airflow's simple auth manager) and no default credential (MLflow basic-auth's
former default admin password).
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from driftline.operator import airflow_admin
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"

AIRFLOW_SERVICES = [
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
]
ONE_SHOT = {"airflow-init", "minio-init"}
SECRET_LIKE = re.compile(r"(PASSWORD|SECRET|FERNET|_KEY)", re.I)
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $$ is a literal $
VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def documented() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )


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
        capture_output=True,
        text=True,
        timeout=60,
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
    assert {
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_API_SECRET_KEY",
        "AIRFLOW_ADMIN_PASSWORD",
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "MLFLOW_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
    } <= set(secrets)
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
        command = (
            " ".join(service.get("command") or [])
            if isinstance(service.get("command"), list)
            else str(service.get("command") or "")
        )
        assert "--requirepass" not in command and ("PASSWORD" not in command or "$$" in command), (
            f"{name}: a password is passed on the command line"
        )
    for name, config in compose.get("configs", {}).items():
        assert "${" not in re.sub(r"\$\{\w+:-[\w.:/-]*\}", "", config.get("content", "")), (
            f"config {name} interpolates something other than a default-able setting"
        )


def test_training_files_are_in_the_image():
    compose = yaml.safe_load(COMPOSE.read_text())
    dockerfile = compose["x-airflow"]["build"]["dockerfile_inline"]
    assert "dvc.yaml params.yaml" in dockerfile
    assert "FROM apache/airflow:3.3.2-python3.11" in dockerfile
    assert "-r /opt/driftline/requirements.txt" in dockerfile
    assert "-c /opt/driftline/constraints.txt" in dockerfile


def test_the_whole_stack_is_there(compose):
    services = set(compose["services"])
    assert {
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "mlflow",
        "evidently-ui",
        "scoring",
        "airflow-init",
        *AIRFLOW_SERVICES,
    } <= services
    commands = {name: compose["services"][name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-apiserver": ["airflow", "api-server"],
        "airflow-scheduler": ["airflow", "scheduler"],
        "airflow-dag-processor": ["airflow", "dag-processor"],
        "airflow-triggerer": ["airflow", "triggerer"],
        "airflow-worker": ["python", "-m", "driftline.warm_start", "celery", "worker"],
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
            wanted = "service_completed_successfully" if other in ONE_SHOT else "service_healthy"
            assert how.get("condition") == wanted, f"{name} -> {other}: {how}"
            if wanted == "service_healthy":
                assert services[other].get("healthcheck"), f"{other} cannot become healthy"
    for name in AIRFLOW_SERVICES:
        assert {"postgres", "redis", "mlflow", "airflow-init"} <= set(services[name]["depends_on"])
    assert {"postgres", "minio-init", "airflow-init"} <= set(services["mlflow"]["depends_on"])
    assert set(services["evidently-ui"]["depends_on"]) == {"airflow-init"}
    assert set(services["scoring"]["depends_on"]) == {"mlflow", "airflow-init"}
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
    named = interpolate(
        compose["configs"][mount["source"]]["content"], {"MLFLOW_ADMIN_USERNAME": "ops"}
    )
    assert "admin_username = ops" in named


def test_airflow_init_creates_every_database_the_stack_uses(compose):
    script = compose["services"]["airflow-init"]["command"][-1]
    (created,) = re.findall(r"for db in ([\w ]+); do", script)
    used = set(re.findall(r"@postgres:5432/(\w+)", COMPOSE.read_text())) - {"airflow"}
    assert used == {"flights", "mlflow", "mlflow_auth", "monitoring", "predictions"}
    assert used <= set(created.split())
    assert "airflow db migrate" in script


# airflow-init's step that creates the FAB admin (or sets its password again); the native
# production stack (`driftline stack up --production`) runs the same module
ADMIN_COMMAND = [sys.executable, "-m", "driftline.operator.airflow_admin"]


def init_commands(compose) -> list[str]:
    """airflow-init's script as its command lines, comments left out."""
    script = compose["services"]["airflow-init"]["command"][-1]
    return [line.strip() for line in script.splitlines() if not line.lstrip().startswith("#")]


def test_airflow_init_runs_the_shared_admin_module_and_fab_config(compose):
    commands = init_commands(compose)
    admin = commands.index("python -m driftline.operator.airflow_admin")
    assert commands.index("airflow db migrate") < admin < commands.index("driftline seed")
    # the compose stack and the native one log in through the same FAB settings
    assert compose["configs"]["airflow-fab-config"]["content"] == airflow_admin.FAB_CONFIG


# Stands in for apache-airflow-providers-fab's get_application_builder (the real one needs a
# migrated metadata database: see the integration test below): the users in a JSON file, and
# each call of the security manager's that changes them in a list.
FAB_STUB = """
import contextlib
import json
import os
import types
from pathlib import Path

STATE = Path(os.environ["FAB_STUB_STATE"])


class Role:
    def __init__(self, name):
        self.name = name

    def __eq__(self, other):
        return isinstance(other, Role) and other.name == self.name


class Security:
    def __init__(self, state):
        self.state = state

    def find_role(self, name):
        return Role(name) if name in ("Admin", "Viewer") else None

    def find_user(self, username=None):
        found = self.state["users"].get(username)
        if found is None:
            return None
        return types.SimpleNamespace(id=found["id"], username=username,
                                     roles=[Role(r) for r in found["roles"]])

    def add_user(self, username, first_name, last_name, email, role, password):
        self.state["calls"].append("add_user")
        self.state["users"][username] = {"id": len(self.state["users"]) + 1, "email": email,
                                         "roles": [role.name], "password": password}
        return self.find_user(username)

    def reset_password(self, userid, password):
        self.state["calls"].append("reset_password")
        for user in self.state["users"].values():
            if user["id"] == userid:
                user["password"] = password
                return True
        return False

    def update_user(self, user):
        self.state["calls"].append("update_user")
        self.state["users"][user.username]["roles"] = [r.name for r in user.roles]
        return True


@contextlib.contextmanager
def get_application_builder():
    state = json.loads(STATE.read_text()) if STATE.exists() else {"users": {}, "calls": []}
    yield types.SimpleNamespace(sm=Security(state))
    STATE.write_text(json.dumps(state))
"""


def fab_stub(root: Path) -> dict[str, str]:
    """An environment whose `airflow.providers.fab...utils` is FAB_STUB, its state in root."""
    top = root / "stub"
    package = top / "airflow" / "providers" / "fab" / "auth_manager" / "cli_commands"
    package.mkdir(parents=True)
    folder = package
    while folder != top:
        (folder / "__init__.py").write_text("")
        folder = folder.parent
    (package / "utils.py").write_text(FAB_STUB)
    return {
        "PATH": os.environ["PATH"],
        # the stub's `airflow` first; driftline from the checkout
        "PYTHONPATH": os.pathsep.join([str(top), str(REPO / "include")]),
        "FAB_STUB_STATE": str(root / "fab.json"),
    }


def test_airflow_init_creates_the_fab_admin_then_sets_its_password_again(compose, tmp_path):
    password = 'p"w\\d $HOME x'  # quotes, backslash and a $ survive as they are
    env = {
        **fab_stub(tmp_path),
        "AIRFLOW_ADMIN_USERNAME": "ops",
        "AIRFLOW_ADMIN_PASSWORD": password,
    }
    state = tmp_path / "fab.json"

    def init(env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            ADMIN_COMMAND,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = init(env)
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout + done.stderr
    assert json.loads(state.read_text()) == {
        "users": {
            "ops": {
                "id": 1,
                "email": "ops@driftline.invalid",
                "roles": ["Admin"],
                "password": password,
            }
        },
        "calls": ["add_user"],
    }
    # a second start sets the password again (a changed password takes effect)
    env["AIRFLOW_ADMIN_PASSWORD"] = "second"
    done = init(env)
    assert done.returncode == 0, done.stderr
    fab = json.loads(state.read_text())
    assert fab["calls"] == ["add_user", "reset_password"]
    assert fab["users"]["ops"]["password"] == env["AIRFLOW_ADMIN_PASSWORD"]
    # an admin whose Admin role was taken away gets it back
    fab["users"]["ops"]["roles"] = ["Viewer"]
    state.write_text(json.dumps(fab))
    assert init(env).returncode == 0
    fab = json.loads(state.read_text())
    assert fab["users"]["ops"]["roles"] == ["Viewer", "Admin"]
    assert fab["calls"][-2:] == ["reset_password", "update_user"]
    # an empty name or password is refused, and nothing changes
    for variable in ("AIRFLOW_ADMIN_USERNAME", "AIRFLOW_ADMIN_PASSWORD"):
        before = state.read_text()
        done = init({**env, variable: ""})
        assert done.returncode != 0 and "must not be empty" in done.stderr
        assert state.read_text() == before


def test_the_admin_password_comes_only_from_the_environment(compose):
    services = compose["services"]
    script = services["airflow-init"]["command"][-1]
    # the module reads the variable airflow-init is given
    assert airflow_admin.PASSWORD_ENV in services["airflow-init"]["environment"]
    assert "$AIRFLOW_ADMIN_PASSWORD" not in script and "${AIRFLOW_ADMIN_PASSWORD" not in script
    # never on a command line (`airflow users create -p PASSWORD`): the module reads it
    commands = init_commands(compose)
    assert not [line for line in commands if re.search(r"users (create|reset-password)", line)]
    init_env = services["airflow-init"]["environment"]
    assert init_env["AIRFLOW_ADMIN_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")
    assert init_env["AIRFLOW_ADMIN_USERNAME"] == "${AIRFLOW_ADMIN_USERNAME:-admin}"
    for name, service in services.items():
        if name != "airflow-init":
            assert "AIRFLOW_ADMIN_PASSWORD" not in service.get("environment", {}), name


def mounts(service: dict) -> dict[str, str]:
    """target -> source of a service's volumes (short syntax)."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
# MLflow's basic-auth app shipped this admin password in its basic_auth.ini before 3.x
MLFLOW_OLD_DEFAULT = "password" + "1234"


def airflow_services(compose) -> dict[str, dict]:
    """Every service that runs Airflow: those given any of Airflow's settings."""
    return {
        name: service
        for name, service in compose["services"].items()
        if any(key.startswith("AIRFLOW__") for key in service.get("environment") or {})
    }


def test_every_airflow_service_uses_the_fab_auth_manager(compose):
    services = airflow_services(compose)
    assert set(services) == {*AIRFLOW_SERVICES, "airflow-init"}
    for name, service in services.items():
        manager = service["environment"].get("AIRFLOW__CORE__AUTH_MANAGER")
        assert manager == FAB_AUTH_MANAGER, f"{name}: auth manager {manager!r} (unset: simple)"
    # the provider is installed in the image, at the pinned version
    dockerfile = compose["x-airflow"]["build"]["dockerfile_inline"]
    assert "-r /opt/driftline/requirements.txt" in dockerfile
    assert re.search(
        r"^apache-airflow-providers-fab==[\d.]+\b", (REPO / "requirements.txt").read_text(), re.M
    )


def test_no_service_uses_the_simple_auth_manager(compose):
    """Airflow's simple auth manager is for development: none of its settings, anywhere."""
    text = COMPOSE.read_text()
    assert not re.search(r"simple_?auth_?manager", text, re.I)
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert "SIMPLE_AUTH_MANAGER" not in key.upper(), f"{name}.{key}"
            assert "simpleauthmanager" not in str(value).lower().replace("_", ""), f"{name}.{key}"
    # nor its passwords file, nor a volume to share it
    assert "passwords.json" not in text and "airflow-auth" not in text


def test_the_fab_login_guards_the_ui_and_the_api(compose):
    """Users and passwords from the metadata database; no self-registration, no public role."""
    services = airflow_services(compose)
    path = compose["x-airflow"]["environment"]["AIRFLOW__FAB__CONFIG_FILE"]
    for name, service in services.items():
        env = service["environment"]
        assert env["AIRFLOW__FAB__CONFIG_FILE"] == path, name
        assert [c["source"] for c in service["configs"] if c["target"] == path] == [
            "airflow-fab-config"
        ], name
        # [fab] auth_role_public would let requests without a login through; [fab]
        # auth_backends is FAB's own API's (its default: the UI's session)
        assert "AIRFLOW__FAB__AUTH_ROLE_PUBLIC" not in env, name
        assert "AIRFLOW__FAB__AUTH_BACKENDS" not in env, name
    content = compose["configs"]["airflow-fab-config"]["content"]
    module = ast.parse(content)
    settings = {
        target.id: node.value
        for node in module.body
        if isinstance(node, ast.Assign)
        for target in node.targets
    }
    assert "from flask_appbuilder.const import AUTH_DB" in content
    assert ast.unparse(settings["AUTH_TYPE"]) == "AUTH_DB"
    assert ast.literal_eval(settings["AUTH_USER_REGISTRATION"]) is False
    assert ast.literal_eval(settings["WTF_CSRF_ENABLED"]) is True
    assert "AUTH_ROLE_PUBLIC" not in content
    # the api-server's login form and `POST /auth/token` are on the published port
    api = compose["services"]["airflow-apiserver"]
    assert api["ports"] == ["8080:8080"] and api["command"] == ["airflow", "api-server"]


def test_the_fernet_key_and_the_jwt_secret_come_only_from_the_environment(compose):
    # Airflow's setting -> the variable of .env it must come from
    settings = [
        ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW_FERNET_KEY"),
        ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW_JWT_SECRET"),
        ("AIRFLOW__API__SECRET_KEY", "AIRFLOW_API_SECRET_KEY"),
    ]
    for name, service in airflow_services(compose).items():
        env = service["environment"]
        for setting, variable in settings:
            value = env.get(setting, "")
            assert re.fullmatch(r"\$\{" + variable + r":\?[^}]*\}", value), f"{name}.{setting}"
            # not from a command, a secrets backend or a file either
            for other in ("_CMD", "_SECRET", "_FILE"):
                assert setting + other not in env, f"{name}.{setting}{other}"
            # compose refuses to start without it ...
            with pytest.raises(KeyError):
                interpolate(value, {})
            # ... and passes it on as given: "NEW,OLD" while the Fernet key is rotated
            assert interpolate(value, {variable: "new,old"}) == "new,old"
        assert not any(key.startswith("AIRFLOW__API_AUTH__JWT_PRIVATE_KEY") for key in env)


def test_compose_generates_no_secret():
    """Every secret is the operator's (.env), none is made up at start nor has a default."""
    text = COMPOSE.read_text()
    for generator in (
        "generate_key",
        "token_urlsafe",
        "token_hex",
        "urandom",
        "openssl",
        "random",
        "uuid",
        "pwgen",
        "mkpasswd",
    ):
        assert generator not in text.lower(), generator


def test_mlflow_admin_password_can_never_be_mlflows_old_default(compose, tmp_path):
    mlflow = compose["services"]["mlflow"]
    env = mlflow["environment"]
    assert MLFLOW_OLD_DEFAULT not in COMPOSE.read_text()
    assert MLFLOW_OLD_DEFAULT not in ENV_EXAMPLE.read_text()
    # the admin's password has one source, the operator's MLFLOW_ADMIN_PASSWORD, required
    value = env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{MLFLOW_ADMIN_PASSWORD:\?[^}]*\}", value)
    with pytest.raises(KeyError):
        interpolate(value, {})
    # the auth app reads the ini mounted from `configs:` (not the one inside the mlflow
    # package), and that one has no admin_password
    (mount,) = [c for c in mlflow["configs"] if c["target"] == env["MLFLOW_AUTH_CONFIG_PATH"]]
    ini_path = tmp_path / "basic_auth.ini"
    ini_path.write_text(interpolate(compose["configs"][mount["source"]]["content"], {}))
    ini = configparser.ConfigParser()
    ini.read(ini_path)
    assert "admin_password" not in ini["mlflow"]
    # MLflow's own reading: the environment's password; and the old default is refused even
    # if an operator set it (MLflow 3.x)
    chosen = secrets.token_urlsafe(16)
    check = """
import json, sys
from mlflow.exceptions import MlflowException
from mlflow.server.auth import create_admin_user, store
from mlflow.server.auth.config import read_auth_config

config = read_auth_config()
store.init_db("sqlite:///" + sys.argv[1])
try:
    create_admin_user(config.admin_username, sys.argv[2])
    old_default = "accepted"
except MlflowException:
    old_default = "refused"
create_admin_user(config.admin_username, config.admin_password)
print(json.dumps({"username": config.admin_username, "old_default": old_default,
                  "login": bool(store.authenticate_user(config.admin_username, sys.argv[3]))}))
"""
    run_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "MLFLOW_AUTH_CONFIG_PATH": str(ini_path),
        "MLFLOW_AUTH_ADMIN_PASSWORD": interpolate(value, {"MLFLOW_ADMIN_PASSWORD": chosen}),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    done = subprocess.run(
        [sys.executable, "-c", check, str(tmp_path / "users.db"), MLFLOW_OLD_DEFAULT, chosen],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "username": "admin",
        "old_default": "refused",
        "login": True,
    }


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_airflow_admin_module_with_the_real_fab_provider(compose, tmp_path):
    """The compose settings and driftline.operator.airflow_admin on a real Airflow (SQLite) with
    FAB: the admin is created, then its password set again; `POST /auth/token` gives a token for the
    current password only, and the API refuses requests without one."""
    if importlib.util.find_spec("airflow.providers.fab") is None:
        pytest.skip("apache-airflow-providers-fab is not installed (make install)")
    fab_config = tmp_path / "webserver_config.py"
    fab_config.write_text(compose["configs"]["airflow-fab-config"]["content"])
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "_AIRFLOW"))
    }
    env |= {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": compose["x-airflow"]["environment"][
            "AIRFLOW__CORE__AUTH_MANAGER"
        ],
        "AIRFLOW__FAB__CONFIG_FILE": str(fab_config),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW_ADMIN_USERNAME": "ops",
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(16),
    }
    (tmp_path / "dags").mkdir()
    airflow = Path(sys.executable).parent / "airflow"

    def run(*command: str) -> None:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert env["AIRFLOW_ADMIN_PASSWORD"] not in done.stdout + done.stderr

    run(str(airflow), "db", "migrate")
    first = env["AIRFLOW_ADMIN_PASSWORD"]
    run(*ADMIN_COMMAND)
    env["AIRFLOW_ADMIN_PASSWORD"] = secrets.token_urlsafe(16)
    run(*ADMIN_COMMAND)
    check = """
import json, os, sys
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app

client = TestClient(create_app())
status = {}
for label, password in (("current", os.environ["AIRFLOW_ADMIN_PASSWORD"]), ("first", sys.argv[1])):
    answer = client.post("/auth/token", json={"username": "ops", "password": password})
    status[label] = answer.status_code
    if answer.status_code == 201:
        bearer = {"Authorization": "Bearer " + answer.json()["access_token"]}
        status["with_token"] = client.get("/api/v2/dags", headers=bearer).status_code
status["without_token"] = client.get("/api/v2/dags").status_code
print(json.dumps(status))
"""
    done = subprocess.run(
        [sys.executable, "-c", check, first], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "current": 201,
        "with_token": 200,
        "first": 401,
        "without_token": 401,
    }


def test_airflow_links_to_the_uis_and_shares_the_drift_history(compose):
    env = compose["x-airflow"]["environment"]
    assert env["DRIFTLINE_MLFLOW_UI_URL"] == "${DRIFTLINE_MLFLOW_UI_URL:-http://localhost:5000}"
    assert env["DRIFTLINE_EVIDENTLY_UI_URL"] == (
        "${DRIFTLINE_EVIDENTLY_UI_URL:-http://localhost:8000}"
    )
    assert (
        interpolate(
            env["DRIFTLINE_MLFLOW_UI_URL"], {"DRIFTLINE_MLFLOW_UI_URL": "https://ml.example"}
        )
        == "https://ml.example"
    )
    history = env["DRIFTLINE_HISTORY_URL"]
    assert history.startswith("postgresql+psycopg2://airflow:${POSTGRES_PASSWORD")
    assert history.endswith("@postgres:5432/monitoring")
    predictions = env["DRIFTLINE_PREDICTIONS_URL"]
    assert predictions.endswith("@postgres:5432/predictions")
    for name in AIRFLOW_SERVICES:
        assert compose["services"][name]["environment"]["DRIFTLINE_HISTORY_URL"] == history
        assert compose["services"][name]["environment"]["DRIFTLINE_PREDICTIONS_URL"] == predictions


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


def test_the_scoring_server_reads_the_registry_only_and_listens_on_this_host(compose):
    """It serves the champion with no login: bound to localhost, and holding no secret but
    the MLflow login it needs (artifacts come through MLflow's proxy)."""
    scoring = compose["services"]["scoring"]
    assert scoring["command"][:2] == ["driftline", "serve"]
    assert all(str(p).startswith("127.0.0.1:") for p in scoring["ports"])
    env = scoring["environment"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert not {k for k in env if k.startswith(("AIRFLOW__", "AWS_"))}
