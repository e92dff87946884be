"""`pip install ./clients/python` installs what the spec names: the distribution
`creditsd` for Python >= 3.9 on httpx, with its modules and `py.typed`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def test_the_wheel(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO / "clients" / "python")],
        check=True,
    )
    (wheel,) = tmp_path.glob("creditsd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("__init__.py", "_client.py", "_core.py", "errors.py", "models.py", "webhooks.py", "py.typed"):
        assert f"creditsd/{module}" in names, module
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Name: creditsd" in text
    assert "Requires-Python: >=3.9" in text
    assert "Requires-Dist: httpx" in text
    assert not any(n.startswith("tests/") for n in names)
