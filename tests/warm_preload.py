"""What tests.warm_cli's fork server imports once: the tasks' libraries (not Airflow), as the
warm scheduler does."""

from driftline.warm_start import preload

preload()
