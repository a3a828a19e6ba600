"""What users install: one version everywhere, type information shipped, entry points declared."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import sslsms_notify


def test_one_version_for_the_package_metadata_and_the_cli() -> None:
    assert importlib.metadata.version("sslsms-notify") == sslsms_notify.__version__
    cli = Path(sys.executable).with_name("sslsms-notify")
    out = subprocess.run([str(cli), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith(f"version {sslsms_notify.__version__}")


def test_type_information_ships_with_the_package() -> None:
    assert (Path(sslsms_notify.__file__).parent / "py.typed").is_file()


def test_entry_points_are_declared() -> None:
    points = importlib.metadata.entry_points()
    assert any(p.value == "sslsms_notify.cli:main" for p in points.select(group="console_scripts"))
    assert any(p.value == "sslsms_notify.emulator.pytest_plugin" for p in points.select(group="pytest11"))
