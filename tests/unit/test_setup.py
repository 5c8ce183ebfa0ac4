"""`make setup` as the README promises it: a second run does nothing and takes about a second, and a machine
without java, mvn or Python 3.11 gets one line saying what to install, before anything is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="GNU make is not installed")


def _make(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    # As a user types it, also when the suite itself runs under `make test` (no inherited make flags).
    inherited = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON_BOOTSTRAP"}
    env = {key: value for key, value in os.environ.items() if key not in inherited}
    if path is not None:
        env["PATH"] = path
    assert MAKE is not None
    return subprocess.run(
        [MAKE, "--no-print-directory", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_second_setup_does_nothing_in_about_a_second() -> None:
    """The suite runs after `make setup`: every stamp is current, so nothing is installed, resolved or rebuilt."""
    # Not current (an input changed since): say so instead of installing from inside a test.
    stamps = [".venv/.installed", ".jars/.resolved", ".jars/spark-classes.jsa", ".trino/.resolved"]
    current = _make("--question", *stamps)
    assert current.returncode == 0, f"make setup is not current here ({', '.join(stamps)}): run it first"
    assert shutil.which("chromium") and shutil.which("chromedriver"), "make setup installs chromium: run it first"
    began = time.monotonic()
    result = _make("setup")
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["setup complete: .venv and .jars/ are ready"], result.stdout
    assert result.stderr == ""
    # "under a second" on an idle machine; the bound leaves room for a loaded one.
    assert elapsed < 10, f"a second make setup took {elapsed:.1f} s"


def test_setup_checks_the_prerequisites_before_anything_else() -> None:
    targets = _make("-pn", "setup").stdout
    (rule,) = [line for line in targets.splitlines() if line.startswith("setup:")]
    assert rule.split(":", 1)[1].split()[0] == "prerequisites"


def _bin(tmp_path: Path, tools: dict[str, str]) -> str:
    """A PATH of only these tools: name -> the real program, or a script text (a program this machine lacks)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("grep", "head"):
        (folder / name).symlink_to(shutil.which(name) or name)
    for name, target in tools.items():
        if target.startswith("#!"):
            (folder / name).write_text(target)
            (folder / name).chmod(0o755)
        else:
            (folder / name).symlink_to(target)
    return str(folder)


REAL = {
    "python3": sys.executable,
    "java": shutil.which("java") or "java",
    "mvn": shutil.which("mvn") or "mvn",
}
# Stand-ins for what this machine does not have: an older Python and an older Java.
PYTHON_39 = '#!/bin/sh\n[ "$1" = -V ] && { echo "Python 3.9.18"; exit 0; }\nexit 1\n'
JAVA_11 = "#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n"


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ({"java": REAL["java"], "mvn": REAL["mvn"]}, "error: python3 not found: install Python 3.11"),
        (
            {**REAL, "python3": PYTHON_39},
            "error: Python 3.11 is required (python3 is Python 3.9.18); set PYTHON_BOOTSTRAP=/path/to/python3.11",
        ),
        (
            {"python3": sys.executable, "mvn": REAL["mvn"]},
            "error: java not found: install a Java 17 JDK (Debian: apt-get install openjdk-17-jdk-headless)",
        ),
        (
            {**REAL, "java": JAVA_11},
            'error: Java 17 or newer is required, found: openjdk version "11.0.22" 2024-01-16',
        ),
        (
            {"python3": sys.executable, "java": REAL["java"]},
            "error: mvn not found: install Apache Maven (Debian: apt-get install maven)",
        ),
    ],
    ids=["no-python", "python-3.9", "no-java", "java-11", "no-mvn"],
)
def test_a_missing_prerequisite_is_one_line_saying_what_to_install(
    tmp_path: Path, tools: dict[str, str], message: str
) -> None:
    result = _make("prerequisites", path=_bin(tmp_path, tools))
    assert result.returncode != 0
    assert result.stdout.strip().splitlines() == [message], result.stdout + result.stderr


def test_the_prerequisites_of_this_machine_pass(tmp_path: Path) -> None:
    """The same check with every tool present (so the failures above come from the missing one alone)."""
    result = _make("prerequisites", path=_bin(tmp_path, REAL))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
