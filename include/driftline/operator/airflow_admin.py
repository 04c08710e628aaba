"""The Airflow admin of a deployment that logs in through FAB, taken from the environment.

Production runs Airflow with the FAB auth manager (apache-airflow-providers-fab): users,
roles and hashed passwords live in the metadata database, so someone has to create the
first admin. The compose stack's airflow-init and `driftline stack up --production` both
run `python -m driftline.operator.airflow_admin` right after `airflow db migrate`. The password is
read from the environment, never from argv (`ps` shows a command line, which is why this is
not `airflow users create -p`), and it is set again at every start, so a changed password
takes effect.
"""

from __future__ import annotations

import os
import sys

USERNAME_ENV = "AIRFLOW_ADMIN_USERNAME"
PASSWORD_ENV = "AIRFLOW_ADMIN_PASSWORD"

# FAB's settings (AIRFLOW__FAB__CONFIG_FILE): log in with a name and password kept in the
# metadata database; nobody can sign themselves up.
FAB_CONFIG = """\
from flask_appbuilder.const import AUTH_DB

AUTH_TYPE = AUTH_DB
AUTH_USER_REGISTRATION = False
WTF_CSRF_ENABLED = True
"""


class AdminError(RuntimeError):
    """The admin could not be created or updated; the message says why."""


def ensure_admin(username: str, password: str) -> str:
    """Create `username` with FAB's Admin role, or set its password (and role) again.

    Returns "created" or "updated". Needs a migrated metadata database with FAB's tables.
    """
    if not username or not password:
        raise AdminError(f"{USERNAME_ENV} and {PASSWORD_ENV} must not be empty")
    # FAB builds a Flask app on import: only here, never when the module is imported
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        security = appbuilder.sm
        admin = security.find_role("Admin")
        if admin is None:
            raise AdminError("FAB has no Admin role: did `airflow db migrate` run?")
        user = security.find_user(username=username)
        if user is None:
            email = f"{username}@driftline.invalid"
            if not security.add_user(username, "Airflow", "Admin", email, admin, password):
                raise AdminError(f"could not create the Airflow admin {username}")
            return "created"
        if not security.reset_password(user.id, password):
            raise AdminError(f"could not set the password of the Airflow admin {username}")
        if admin not in user.roles:
            user.roles.append(admin)
            security.update_user(user)
        return "updated"


def main() -> None:
    """`python -m driftline.operator.airflow_admin`: the admin named by the environment."""
    username = os.environ.get(USERNAME_ENV, "")
    try:
        outcome = ensure_admin(username, os.environ.get(PASSWORD_ENV, ""))
    except AdminError as error:
        sys.exit(f"driftline.operator.airflow_admin: {error}")
    sys.stdout.write(f"Airflow admin {username} {outcome}\n")


if __name__ == "__main__":
    main()
