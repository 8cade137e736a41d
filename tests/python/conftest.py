"""pytest configuration for the continual_c Python suite.

* Puts <repo>/python on sys.path (the package is used from the source tree).
* Tests need libcontinual ($CONTINUAL_LIB, else <repo>/build/libcontinual.so). When it cannot be
  loaded every test is skipped with the reason, except the exporter-only tests (marker
  `no_lib`), which check the model files in Python.
* The `continual` reference package is optional (tests that need it use importorskip).
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "python"))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import continual_c  # noqa: E402


def _lib_problem():
    path = continual_c.library_path()
    try:
        continual_c.library()
    except OSError as e:
        return "libcontinual could not be loaded from %s (build it with cmake, or set CONTINUAL_LIB): %s" % (path, e)
    return None


LIB_PROBLEM = _lib_problem()


def pytest_configure(config):
    config.addinivalue_line("markers", "no_lib: the test does not need libcontinual (exporter only)")
    # noise from the reference package (co.Sequential.state_dict passes positional args; stride warnings)
    config.addinivalue_line("filterwarnings", "ignore:Positional args are being deprecated:UserWarning")


def pytest_collection_modifyitems(config, items):
    if LIB_PROBLEM is None:
        return
    skip = pytest.mark.skip(reason=LIB_PROBLEM)
    for item in items:
        if "no_lib" not in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return "continual_c library: %s" % ("OK " + continual_c.library_path() if LIB_PROBLEM is None else LIB_PROBLEM)
