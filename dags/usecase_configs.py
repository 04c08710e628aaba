"""No DAG here: the use-case configs that are wrong, shown by Airflow as one import error.

The etl, training and monitoring DAG files leave a wrong config out (and its DAGs with it), so
one wrong file takes no other use-case's DAGs down. This file fails to import with every
problem of every wrong config, each naming the file and the field, so the DAG list says which
use-case is missing and why. Only what reading the files can tell (schema, columns, label
rule, slices, suite and its parameters): `driftline check` also imports the use-cases' hooks,
which would cost every parse of this file.
"""

from __future__ import annotations

from driftline.config import ConfigError, Settings, config_problems

_problems = config_problems(Settings.from_env())
if _problems:
    raise ConfigError(
        "use-case configs with problems; their DAGs are not loaded (the other use-cases' "
        "are). Fix each, then `driftline check` says OK:\n" + "\n".join(_problems)
    )
