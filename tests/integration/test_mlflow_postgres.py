"""Training against an MLflow tracking server backed by the local PostgreSQL (production's
setup), reached by URL only: the same code, another MLFLOW_TRACKING_URI."""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import mlflow
import pytest
import sqlalchemy as sa

from driftline import etl, registry, training
from driftline.config import Settings
from tests.conftest import copy_curated

pytestmark = pytest.mark.integration

SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    name = f"driftline_mlflow_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    artifacts = tmp_path_factory.mktemp("mlflow-artifacts")
    port = _free_port()
    log = open(artifacts.parent / f"{name}.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server",
         "--backend-store-uri", f"{SERVER}/{name}",
         "--artifacts-destination", artifacts.as_uri(),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("mlflow server did not start:\n"
                                + Path(log.name).read_text()[-3000:])
                time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_training_registers_into_a_postgres_backed_tracking_server(
    tracking_server, usecase, settings, curated_days, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    settings = dataclasses.replace(settings, mlflow_uri=Settings.from_env().mlflow_uri)
    assert settings.mlflow_tracking_uri == tracking_server  # configuration alone
    copy_curated(curated_days, settings.home, dt.date(2013, 1, 21))
    request = training.TrainingRequest.from_conf(
        {"window_end": "2013-01-14", "window_days": 14, "reason": "postgres"}, usecase)
    result = training.train(usecase, settings, request)
    assert result["version"] == "1" and result["promoted"]
    assert registry.alias_version(settings, "flights_delay", "champion") == "1"
    mlflow.set_tracking_uri(tracking_server)
    model = mlflow.pyfunc.load_model("models:/flights_delay@champion")
    rows = etl.read_curated(usecase, settings, dt.date(2013, 1, 15), dt.date(2013, 1, 15))
    assert model.predict(rows[usecase.features.all]).between(0, 1).all()
    # the store really is the server's PostgreSQL database, not a local file
    assert not (settings.home / "mlflow").exists()
    info = registry.version_info(settings, usecase, "1")
    assert info["tags"]["dvc_commit"] == result["commit"]
