"""No secret is committed: Yelp's detect-secrets scans every file git tracks (or would track).

All of detect-secrets' detectors and its default false-positive filters run, except its inline
`pragma: allowlist secret` comments: the only way to accept a finding is `ALLOWED` below, one
entry per dummy value with the reason it is not a secret.
"""

from __future__ import annotations

import secrets
import string
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
from detect_secrets import SecretsCollection
from detect_secrets.core.potential_secret import PotentialSecret
from detect_secrets.settings import default_settings

from tests.conftest import REPO

# (path, detector, dummy value) -> why it is not a secret. Matched on the value's hash, so an
# entry survives the line moving but not the value changing.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("tests/unit/ingest/test_source.py", "Basic Auth Credentials", "s3cret"): (
        "dummy password in a URL to 127.0.0.1:1 (nothing listens); the test checks that the "
        "error message hides it"
    ),
    ("tests/unit/operator/test_compose.py", "Secret Keyword", "second"): (
        "dummy admin password fed to the compose init script, to check that it rewrites the file"
    ),
    ("tests/integration/test_operator_stack.py", "Secret Keyword", "admin"): (
        "the wrong password the test expects the Airflow API to refuse (401)"
    ),
    ("include/driftline/operator/airflow_admin.py", "Secret Keyword", "AIRFLOW_ADMIN_PASSWORD"): (
        "the name of the environment variable the admin's password is read from, not a value"
    ),
    ("tests/unit/operator/test_alerts.py", "Basic Auth Credentials", "s3cret"): (
        "dummy password in an alert URL to 127.0.0.1:9 (nothing listens); the test checks that "
        "make up's alerts line masks it"
    ),
    ("README.md", "Basic Auth Credentials", "pass"): (
        "the placeholder `user:pass` of apprise's mail URL in the Alerts example"
    ),
}


def candidate_files(root: Path) -> list[str]:
    """What git tracks, plus the new files it does not ignore (what `git add -A` would commit)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    return sorted({f for f in listed if f and (root / f).is_file()})


def scan(root: Path, files: Iterable[str]) -> list[tuple[str, PotentialSecret]]:
    collection = SecretsCollection(root=str(root))
    with default_settings() as settings:
        settings.disable_filters("detect_secrets.filters.allowlist.is_line_allowlisted")
        for name in files:
            collection.scan_file(name)
    return sorted(collection, key=lambda found: (found[0], found[1].line_number))


def allowed(path: str, secret: PotentialSecret) -> bool:
    return any(
        (path, secret.type) == (p, kind) and secret.secret_hash == PotentialSecret.hash_secret(v)
        for p, kind, v in ALLOWED
    )


def report(findings: list[tuple[str, PotentialSecret]]) -> str:
    return "\n".join(f"{path}:{s.line_number}: {s.type}" for path, s in findings)


def unexplained(root: Path, files: Iterable[str]) -> list[tuple[str, PotentialSecret]]:
    return [(path, s) for path, s in scan(root, files) if not allowed(path, s)]


@pytest.fixture(scope="module")
def repo_findings() -> list[tuple[str, PotentialSecret]]:
    files = candidate_files(REPO)
    assert len(files) > 50, f"git listed only {len(files)} files: is {REPO} a checkout?"
    return scan(REPO, files)


def test_no_file_git_would_commit_holds_a_secret(repo_findings):
    leaks = [(path, s) for path, s in repo_findings if not allowed(path, s)]
    if leaks:
        pytest.fail(
            "possible secrets (remove them, or add a dummy value to ALLOWED with its reason):\n"
            + report(leaks),
            pytrace=False,
        )


def test_every_allow_list_entry_still_matches_a_finding(repo_findings):
    stale = [
        key
        for key in ALLOWED
        if not any(allowed(path, s) and (path, s.type) == key[:2] for path, s in repo_findings)
    ]
    assert not stale, f"ALLOWED entries that match nothing any more (remove them): {stale}"


def test_the_scan_catches_planted_secrets_and_names_file_line_and_type(tmp_path):
    # Built at run time, so that this file holds no secret-shaped literal.
    aws_key = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))
    (tmp_path / "settings.py").write_text(f'REGION = "eu-west-1"\nKEY_ID = "{aws_key}"\n')
    (tmp_path / "deploy.pem").write_text(
        "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEow" + secrets.token_hex(32) + "\n"
    )
    (tmp_path / "db.env").write_text(
        f"SOURCE_URL=postgresql://etl:{secrets.token_urlsafe(12)}@db.internal:5432/flights\n"
    )
    # an inline pragma does not silence a finding: only ALLOWED does
    (tmp_path / "quiet.py").write_text(f'KEY_ID = "{aws_key}"  # pragma: allowlist secret\n')

    found = unexplained(tmp_path, ["settings.py", "deploy.pem", "db.env", "quiet.py"])

    listed = report(found)
    assert "settings.py:2: AWS Access Key" in listed
    assert "deploy.pem:1: Private Key" in listed
    assert "db.env:1: Basic Auth Credentials" in listed
    assert "quiet.py:1: AWS Access Key" in listed
