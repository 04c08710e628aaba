"""SQL takes values only as bound parameters, never by formatting them into the statement.

Two nets: ruff's S608 (bandit's "hardcoded SQL expression": an f-string, .format, % or + that
builds something SQL-shaped) is on in pyproject.toml, so `make lint` / `make test` enforce it
everywhere; and an AST walk over the platform's code fails on any formatted string handed
straight to an SQL entry point, SQL-shaped or not.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from driftline.config import list_usecases
from tests.conftest import REPO

RUFF = Path(sys.executable).parent / "ruff"
PLATFORM_CODE = ("include", "dags", "plugins", "bench", "scripts")

# Functions and methods that run or wrap SQL text.
SQL_SINKS = {
    "text",
    "execute",
    "executemany",
    "executescript",
    "exec_driver_sql",
    "read_sql",
    "read_sql_query",
    "read_sql_table",
}
# (path, line) -> why a formatted statement there is safe. Empty: there is none.
LEGITIMATE: dict[tuple[str, int], str] = {}

FORMATTED = """
def day_rows(conn, day):
    return conn.execute(f"SELECT * FROM flights WHERE day = '{day}'")
"""
BOUND = """
import sqlalchemy as sa


def day_rows(conn, day):
    return conn.execute(sa.text("SELECT * FROM flights WHERE day = :day"), {"day": day})
"""


def _ruff_codes(source: str, as_path: str) -> set[str]:
    """The rules the project's ruff config reports on `source` if it lived at `as_path`."""
    done = subprocess.run(
        [
            str(RUFF),
            "check",
            "--no-cache",
            "--output-format",
            "json",
            "--stdin-filename",
            str(REPO / as_path),
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return {finding["code"] for finding in json.loads(done.stdout)}


@pytest.mark.parametrize(
    "as_path",
    [
        "include/driftline/probe.py",
        "dags/probe.py",
        "plugins/probe.py",
        "bench/probe.py",
        "tests/unit/probe.py",
    ],
)
def test_ruff_rejects_sql_built_by_formatting(as_path):
    assert "S608" in _ruff_codes(FORMATTED, as_path)
    assert "S608" not in _ruff_codes(BOUND, as_path)


def _formatted(node: ast.expr) -> bool:
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
    )


def _sink_name(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def formatted_sql_calls(root: Path, folders: tuple[str, ...]) -> list[tuple[str, int]]:
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and _sink_name(node) in SQL_SINKS
                    and node.args
                    and _formatted(node.args[0])
                ):
                    found.append((str(path.relative_to(root)), node.lineno))
    return sorted(found)


def test_no_formatted_string_reaches_an_sql_call_in_platform_code():
    found = formatted_sql_calls(REPO, PLATFORM_CODE)
    unexplained = [f"{path}:{line}" for path, line in found if (path, line) not in LEGITIMATE]
    assert not unexplained, (
        "SQL built by formatting (bind the values: sa.text(':name') + parameters):\n"
        + "\n".join(unexplained)
    )


def test_the_walk_finds_formatted_sql(tmp_path):
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "bad.py").write_text(
        "def f(conn, t, d):\n"
        "    conn.exec_driver_sql('DELETE FROM ' + t)\n"
        "    conn.execute(sa.text('WHERE day = {}'.format(d)))\n"
        "    pd.read_sql(f'{t}', conn)\n"
        "    conn.execute(sa.text('SELECT 1'))\n"
    )
    assert formatted_sql_calls(tmp_path, ("include",)) == [
        ("include/bad.py", 2),
        ("include/bad.py", 3),
        ("include/bad.py", 4),
    ]


def test_use_case_queries_take_only_the_window_as_bound_parameters(settings):
    """The extract runs each configured query as sa.text(query) with :start/:end bound."""
    for usecase in list_usecases(settings):
        for name, query in usecase.source.queries.items():
            # no str.format / printf placeholder: nothing is ever formatted into a query
            assert not any(mark in query for mark in ("{", "%s", "%(")), (usecase.name, name)
            assert set(sa.text(query).compile().params) <= {"start", "end"}, (usecase.name, name)
