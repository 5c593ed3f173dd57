"""The built wheel carries every data file the package reads at run time.

An editable install (the README's) reads files from the source tree, so a file type missing
from ``package-data`` only breaks users who ``pip install`` the package; this builds the wheel.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_every_package_data_file(tmp_path: Path) -> None:
    # build from a copy: an in-tree build would leave build/ in the checkout
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip_wheel = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip_wheel, "-q", "-w", str(tmp_path)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("rlhfv-*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    package = REPO / "src" / "rlhfv"
    data_files = {
        "rlhfv/" + path.relative_to(package).as_posix()
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }
    assert "rlhfv/scenes/checkpoint/chat_template.jinja" in data_files
    assert sorted(data_files - in_wheel) == []
