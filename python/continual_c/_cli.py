"""The `continual` console command of the installed package: runs the C tool that the wheel
carries (continual_c/_native/bin/continual, linked to the library beside it), with the same
arguments, exit status and output. In a source checkout it runs <repo>/build/continual."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# what main() returns when there is no tool to run (the tool's own "failure" status)
_EXIT_FAILURE = 1


def cli_path() -> Optional[str]:
    """The C tool: the one inside the installed package, else <repo>/build/continual, else None."""
    for p in (os.path.join(_PACKAGE_DIR, "_native", "bin", "continual"),
              os.path.join(os.path.dirname(os.path.dirname(_PACKAGE_DIR)), "build", "continual")):
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def main(argv: Optional[List[str]] = None) -> int:
    """Replace this process by the C tool (`continual info|run|bench|compare ...`)."""
    args = sys.argv[1:] if argv is None else list(argv)
    tool = cli_path()
    if tool is None:
        print("continual: the C tool is not in this continual_c (install the package with `pip install ./python` "
              "from the repository root, or build it with CMake)", file=sys.stderr)
        return _EXIT_FAILURE
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(tool, [tool] + args)
    return _EXIT_FAILURE  # not reached: execv replaces the process or raises OSError


if __name__ == "__main__":
    sys.exit(main())
