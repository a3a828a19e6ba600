"""Check a built wheel and sdist hold what users need: ``python scripts/check-wheel.py dist``.

- every file of the source package is in the wheel (a module left out would pass
  tests run from the source tree and break every user), ``py.typed`` included;
- the console script and the pytest plugin entry points are declared;
- the wheel's version is the one in ``sslsms_notify/version.py``;
- the sdist carries the tests, examples and docs, so it can be tested as shipped.
Exits non-zero with one line per problem.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sslsms_notify"


#: what a user (and an index) reads off the metadata
CLASSIFIERS = (
    "Framework :: Pytest",
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
    "Programming Language :: Python :: 3.13",
    "Typing :: Typed",
)
URLS = ("Homepage", "Documentation", "Source", "Changelog")
#: extras the CLI names when a part is missing (sslsms_notify/extras.py)
EXTRAS = ("relay", "redis", "apprise", "test")


def metadata_problems(metadata: str, names: set[str]) -> list[str]:
    problems = []
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("wheel lacks the LICENSE file")
    if "License-Expression: MIT" not in metadata:
        problems.append("wheel metadata does not say the license (MIT)")
    for classifier in CLASSIFIERS:
        if f"Classifier: {classifier}\n" not in metadata:
            problems.append(f"wheel metadata lacks the classifier {classifier!r}")
    for label in URLS:
        if not re.search(rf"^Project-URL: {label}, https://", metadata, re.MULTILINE):
            problems.append(f"wheel metadata lacks the project URL {label!r}")
    for extra in EXTRAS:
        if f"Provides-Extra: {extra}\n" not in metadata:
            problems.append(f"wheel metadata lacks the extra {extra!r}")
    if re.search(r"^Requires-Dist: (uvicorn|prometheus-client)\b(?!.*extra ==)", metadata, re.MULTILINE):
        problems.append("uvicorn and prometheus-client must be the relay extra's, not required by everyone")
    return problems


def main(dist: Path) -> int:
    problems: list[str] = []
    wheels = sorted(dist.glob("sslsms_notify-*.whl"))
    sdists = sorted(dist.glob("sslsms_notify-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in {dist}, found {len(wheels)} and {len(sdists)}")
        return 1
    version = re.search(r'"([^"]+)"', (PACKAGE / "version.py").read_text()).group(1)  # type: ignore[union-attr]
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(info).decode()
        entry_points = wheel.read(info.replace("METADATA", "entry_points.txt")).decode()
    expected = {
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    for missing in sorted(expected - names):
        problems.append(f"wheel lacks {missing}")
    if "sslsms_notify/py.typed" not in names:
        problems.append("wheel lacks py.typed: type checkers would ignore our hints")
    if f"Version: {version}\n" not in metadata:
        problems.append(f"wheel metadata version differs from version.py ({version})")
    if "sslsms-notify = sslsms_notify.cli:main" not in entry_points:
        problems.append("wheel does not declare the sslsms-notify console script")
    if "sslsms_notify = sslsms_notify.emulator.pytest_plugin" not in entry_points:
        problems.append("wheel does not declare the pytest plugin (sslsms_gateway fixture)")
    problems += metadata_problems(metadata, names)
    with tarfile.open(sdists[0]) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    shipped = ("tests/conftest.py", "examples/relay/relay.toml", "docs/fingerprints.md", "README.md")
    shipped += ("LICENSE",)
    for needed in shipped:
        if needed not in members:
            problems.append(f"sdist lacks {needed}")
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{wheels[0].name}: {len(names)} files, version {version}, entry points and py.typed present")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "dist")))
