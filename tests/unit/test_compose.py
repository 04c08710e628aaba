"""docker-compose.yaml: valid Compose, and every secret read from the environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yaml"


def test_compose_file_matches_the_compose_specification():
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_variable_compose_reads_is_documented_in_env_example():
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE.read_text()))  # $${X}: literal
    documented = {line.split("=", 1)[0] for line in (REPO / ".env.example").read_text().splitlines()
                  if line and not line.startswith("#")}
    assert used == documented


def test_no_secret_is_written_into_the_compose_file():
    secret_like = re.compile(r"(PASSWORD|SECRET|FERNET|_KEY)", re.I)
    compose = yaml.safe_load(COMPOSE.read_text())
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        for key, value in env.items():
            if secret_like.search(key):
                assert str(value).startswith("${"), f"{name}.{key} is not taken from the env"
    assert all(not line.split("=", 1)[1] for line in
               (REPO / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")), ".env.example must hold no values"


def test_no_literal_credential_anywhere_in_the_file():
    """A password inside a URL or a command counts too, not only env keys named *PASSWORD."""
    text = COMPOSE.read_text()
    credentials_in_urls = re.findall(r"://[^:/@\s]+:([^@\s]+)@", text)
    assert credentials_in_urls and all(c.startswith("${") for c in credentials_in_urls)
    compose = yaml.safe_load(text)
    for name, service in compose["services"].items():
        command = " ".join(service.get("command") or []) if isinstance(
            service.get("command"), list) else str(service.get("command") or "")
        assert "--requirepass" not in command and ("PASSWORD" not in command or "$$" in command), \
            f"{name}: a password is passed on the command line"


def test_training_files_are_in_the_image():
    compose = yaml.safe_load(COMPOSE.read_text())
    dockerfile = compose["x-airflow"]["build"]["dockerfile_inline"]
    assert "dvc.yaml params.yaml" in dockerfile
