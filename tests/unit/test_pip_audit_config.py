"""`make audit`'s accepted vulnerabilities are explained and current; a skipped pin never passes."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO

ENTRY = re.compile(r"^(?P<id>(PYSEC|GHSA|CVE)-[\w-]+)\s+(?P<pin>[\w.-]+==[\w.]+)\s+(?P<why>.+)$")


def _lock() -> set[str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return {line.strip().lower() for line in lines if "==" in line and not line.startswith("#")}


def test_every_accepted_vulnerability_names_a_locked_pin_and_a_reason():
    lock = _lock()
    for line in (REPO / ".pip-audit-ignore").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        entry = ENTRY.match(line)
        assert entry, f"not 'ID package==version reason': {line!r}"
        assert entry["pin"].lower() in lock, (
            f"{entry['id']}: {entry['pin']} is no longer the locked version: check whether the "
            "new pin still has it, then update or remove the line"
        )
        assert len(entry["why"].split()) >= 5, f"{entry['id']}: say why it cannot hurt us"


def test_make_audit_fails_on_what_it_could_not_audit():
    recipe = subprocess.run(
        ["make", "-n", "--no-print-directory", "audit"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    audit = next(line for line in recipe.split("\n.venv/bin/") if line.startswith("pip-audit"))
    assert "--strict" in audit  # without it, a pin the feed does not know is skipped silently
    assert "--vulnerability-service pypi" in audit
    assert "-r constraints.txt" in audit.replace("--requirement", "-r")
    assert "scripts/check_audit_feed.py" in recipe  # "feed unreachable" fails with its own words
    ids = re.findall(r"--ignore-vuln (\S+)", audit)
    listed = [
        line.split()[0]
        for line in (REPO / ".pip-audit-ignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ids == listed
