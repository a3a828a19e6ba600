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
    with tarfile.open(sdists[0]) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    for needed in ("tests/conftest.py", "examples/relay/relay.toml", "docs/fingerprints.md", "README.md"):
        if needed not in members:
            problems.append(f"sdist lacks {needed}")
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{wheels[0].name}: {len(names)} files, version {version}, entry points and py.typed present")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "dist")))
