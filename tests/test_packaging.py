"""The wheel holds the library alone: no comparison harness, with its license and its typing marker."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("lift_integrations-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_the_library_and_not_the_harness(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"lift_integrations"}
    assert not [name for name in wheel.namelist() if "bench" in name.split("/")[1:-1] or "lift_bench" in name]
    names = set(wheel.namelist())
    assert "lift_integrations/py.typed" in names
    assert "lift_integrations/data/replay_prompts.json" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
