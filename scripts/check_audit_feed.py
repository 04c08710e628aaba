"""Fail loudly when PyPI's vulnerability feed, which `make audit` (pip-audit) reads, is down.

pip-audit's `pypi` service asks https://pypi.org/pypi/NAME/VERSION/json for each pin. If that
endpoint cannot be reached, or answers 404 for a release that exists, nothing can be audited,
and `make audit` must fail saying so rather than report "no known vulnerabilities".

    python scripts/check_audit_feed.py [NAME VERSION]   # default: pip-audit 2.10.1
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

FEED = "https://pypi.org/pypi/{name}/{version}/json"


def main(argv: list[str]) -> None:
    name, version = argv if len(argv) == 2 else ("pip-audit", "2.10.1")
    url = FEED.format(name=name, version=version)
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            if "vulnerabilities" in response.read().decode():
                return
            problem = "the answer has no 'vulnerabilities' field"
    except urllib.error.HTTPError as exc:
        problem = f"HTTP {exc.code} for a release that exists"
    except (urllib.error.URLError, OSError) as exc:
        problem = f"unreachable: {getattr(exc, 'reason', exc)}"
    sys.exit(
        f"make audit: PyPI's vulnerability feed does not answer ({url}: {problem}).\n"
        "make audit: NOTHING WAS AUDITED. pip-audit's pypi service needs that per-release JSON "
        "endpoint; run `make audit` where it is reachable."
    )


if __name__ == "__main__":
    main(sys.argv[1:])
