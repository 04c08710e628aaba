"""The logged model's code: exactly the driftline modules it imports, complete on its own."""

from __future__ import annotations

import subprocess
import sys

from driftline.serving import pyfunc

PACKAGES = ("driftline", "driftline.serving", "driftline.training")


def test_the_model_code_is_every_driftline_module_the_model_imports(tmp_path):
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, driftline.serving.pyfunc; "
         "print(' '.join(sorted(m for m in sys.modules if m.startswith('driftline'))))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    as_files = sorted(
        m.replace(".", "/") + ("/__init__.py" if m in PACKAGES else ".py")
        for m in imported
    )
    assert as_files == sorted(pyfunc.MODEL_MODULES)  # a new import must join the model's code

    folder = pyfunc.model_code(tmp_path / "code")
    assert folder == tmp_path / "code" / "driftline"
    probe = (
        f"import sys; sys.path.insert(0, {str(tmp_path / 'code')!r}); "
        "import driftline.serving.pyfunc as m; print(m.__file__)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=tmp_path, check=True)
    assert done.stdout.strip().startswith(str(tmp_path / "code"))


def test_the_requirements_pin_what_the_model_code_imports():
    pins = dict(line.split("==") for line in pyfunc.pip_requirements())
    assert set(pins) == {"mlflow", "xgboost", "pandas", "numpy"} and all(pins.values())
