"""The project's version from its one source, the CO_VERSION_* macros of include/continual.h.
Standard library only: the wheel build backend (python/wheel_backend) loads this file by path to
write _version.py into the wheel; a source checkout's __init__ reads the header with it."""
from __future__ import annotations

import os
import re

VERSION_PARTS = ("MAJOR", "MINOR", "PATCH")
# <repo>/include/continual.h, seen from <repo>/python/continual_c/
SOURCE_HEADER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "include", "continual.h")


def header_version(header: str = SOURCE_HEADER) -> str:
    """"MAJOR.MINOR.PATCH" from the header's #define CO_VERSION_<part> lines; OSError if the
    header cannot be read, ValueError if a macro is missing."""
    with open(header, encoding="utf-8") as f:
        text = f.read()
    parts = []
    for part in VERSION_PARTS:
        m = re.search(r"^#define CO_VERSION_%s +([0-9]+)" % part, text, re.M)
        if not m:
            raise ValueError("%s: no #define CO_VERSION_%s" % (header, part))
        parts.append(m.group(1))
    return ".".join(parts)
