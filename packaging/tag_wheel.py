"""Retags a ``py3-none-linux_<arch>`` wheel with the manylinux tag its
library really needs, as auditwheel computes it from the glibc, libstdc++ and
libgcc symbol versions the library references (the newest GLIBC_2.NN alone
is not enough: a GLIBCXX_3.4.30 symbol needs a newer system than GLIBC_2.34).

    python packaging/tag_wheel.py <wheel>      # prints the new wheel's path

Needs ``auditwheel`` and ``wheel`` (make wheel installs both into build/venv).
"""

import re
import subprocess
import sys
from pathlib import Path


def main() -> int:
    wheel = Path(sys.argv[1])
    show = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True, text=True
    )
    text = " ".join((show.stdout + show.stderr).split())
    m = re.search(r'consistent with the following platform tag: "([^"]+)"', text)
    if show.returncode != 0 or not m:
        print(f"tag_wheel: auditwheel could not place {wheel.name}:\n{show.stdout}{show.stderr}", file=sys.stderr)
        return 1
    tag = m.group(1)
    if not tag.startswith("manylinux"):
        print(f"tag_wheel: {wheel.name} is not manylinux-compatible ({tag})", file=sys.stderr)
        return 1
    subprocess.run(
        [sys.executable, "-m", "wheel", "tags", "--remove", "--platform-tag", tag, str(wheel)],
        check=True,
        capture_output=True,
    )
    name = wheel.name.rsplit("-", 1)[0] + f"-{tag}.whl"
    out = wheel.with_name(name)
    if not out.is_file():
        print(f"tag_wheel: expected {out} after retagging", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
