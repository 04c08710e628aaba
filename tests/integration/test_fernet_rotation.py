"""Rotating Airflow's Fernet key, as docs/OPERATIONS.md tells an operator to.

A real Airflow (SQLite metadata database in tmp_path, a copy of the session's migrated one)
stores a connection password and a variable encrypted with the old key; with
`AIRFLOW__CORE__FERNET_KEY="NEW,OLD"`, `airflow rotate-fernet-key` re-encrypts them; afterwards
the new key alone decrypts them and the old one no longer does.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from tests.integration.conftest import copy_sqlite, migrated_metadata_db

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent
CONN_ID = "rotation_probe"
VARIABLE = "rotation_probe"

# What Airflow itself decrypts with the key it is given (the ORM, as a task's server side would):
# "ok", "mismatch" or the exception's name. argv: the connection's id, the variable's key.
READ_BACK = """
import json, os, sys
from sqlalchemy import select
from airflow.models import Connection, Variable
from airflow.utils.session import create_session

def password(session):
    return session.scalar(select(Connection).where(Connection.conn_id == sys.argv[1])).password

def value(session):
    return session.scalar(select(Variable).where(Variable.key == sys.argv[2])).val

def check(read, expected):
    try:
        with create_session() as session:
            return "ok" if read(session) == os.environ[expected] else "mismatch"
    except Exception as error:
        return type(error).__name__

print(json.dumps({"connection": check(password, "PROBE_PASSWORD"),
                  "variable": check(value, "PROBE_VALUE")}))
"""


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"airflow {args[0]}: {done.stderr[-3000:]}"
    return done


def stored(database: Path) -> tuple[str, str]:
    """The ciphertexts in the metadata database: the connection's password, the variable."""
    with sqlite3.connect(database) as db:
        password, encrypted = db.execute(
            "SELECT password, is_encrypted FROM connection WHERE conn_id = ?", (CONN_ID,)
        ).fetchone()
        value, value_encrypted = db.execute(
            "SELECT val, is_encrypted FROM variable WHERE key = ?", (VARIABLE,)
        ).fetchone()
    assert encrypted and value_encrypted
    return password, value


def read_back(env: dict[str, str], key: str) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", READ_BACK, CONN_ID, VARIABLE],
        env={**env, "AIRFLOW__CORE__FERNET_KEY": key},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_rotate_fernet_key_re_encrypts_with_the_new_key(tmp_path):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    # hex: a value starting with "-" would read as an option to `airflow variables set`
    password, value = secrets.token_hex(16), secrets.token_hex(16)
    database = tmp_path / "airflow.db"
    (tmp_path / "dags").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    env |= {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{database}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": old,
        "PROBE_PASSWORD": password,
        "PROBE_VALUE": value,
    }
    copy_sqlite(migrated_metadata_db(), database)  # what `airflow db migrate` makes
    airflow(env, "connections", "add", CONN_ID, "--conn-type", "generic",
            "--conn-login", "probe", "--conn-password", password)  # fmt: skip
    airflow(env, "variables", "set", VARIABLE, value)
    before = stored(database)
    assert password not in before[0] and value not in before[1]
    assert Fernet(old.encode()).decrypt(before[0].encode()).decode() == password
    assert Fernet(old.encode()).decrypt(before[1].encode()).decode() == value

    # docs/OPERATIONS.md: both keys, the new one first; rotate; then the new one alone
    airflow({**env, "AIRFLOW__CORE__FERNET_KEY": f"{new},{old}"}, "rotate-fernet-key")

    after = stored(database)
    assert after[0] != before[0] and after[1] != before[1]  # the stored ciphertexts changed
    assert Fernet(new.encode()).decrypt(after[0].encode()).decode() == password
    assert Fernet(new.encode()).decrypt(after[1].encode()).decode() == value
    for ciphertext in after:
        with pytest.raises(InvalidToken):
            Fernet(old.encode()).decrypt(ciphertext.encode())
    # Airflow with the new key alone reads both; with the old key alone, neither
    assert read_back(env, new) == {"connection": "ok", "variable": "ok"}
    # (loading the connection raises InvalidToken; the variable reads as None)
    assert read_back(env, old) == {"connection": "InvalidToken", "variable": "mismatch"}
