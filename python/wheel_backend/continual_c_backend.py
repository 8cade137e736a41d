"""PEP 517 build backend for the continual_c wheel, standard library only (no setuptools, nothing
from a package index): `pip install ./python` builds libcontinual and the `continual` tool with
CMake from the repository this folder sits in, and writes a wheel holding

    continual_c/*.py                      the exporter and the ctypes binding
    continual_c/_version.py               __version__, from include/continual.h's CO_VERSION_* macros
    continual_c/_native/lib/libcontinual.so.<major>
    continual_c/_native/bin/continual     RUNPATH $ORIGIN/../lib: finds the library beside it
    continual_c/_native/include/continual.h
    continual_c-<version>.dist-info/      METADATA, WHEEL, entry_points.txt (`continual`), RECORD

Environment: CONTINUAL_C_CMAKE_ARGS (extra configure arguments, split on spaces, e.g.
"-DCO_BLAS=openblas"), CONTINUAL_C_BUILD_DIR (the CMake build folder; default
<repo>/build-python, kept so that a reinstall rebuilds only what changed),
CMAKE_BUILD_PARALLEL_LEVEL (build jobs; CMake's own variable).
"""
import base64
import hashlib
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile

DIST_NAME = "continual-c"          # the name pip shows
PACKAGE = "continual_c"            # the import name, and the wheel's file-name prefix
SUMMARY = "Run Continual Inference Networks frame by frame with libcontinual (C11); export them from PyTorch"
PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # <repo>/python
REPO_DIR = os.path.dirname(PYTHON_DIR)
HEADER = os.path.join(REPO_DIR, "include", "continual.h")
NATIVE = PACKAGE + "/_native"      # where the C products lie inside the package
EXECUTABLE_MODE = 0o755
FILE_MODE = 0o644
# A zip entry's Unix mode sits in the high 16 bits of its external attributes.
ZIP_UNIX_MODE_SHIFT = 16
# Fixed timestamp for every entry (the zip format starts in 1980): the same sources give the same wheel.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _version():
    """"MAJOR.MINOR.PATCH" from the header's CO_VERSION_* macros (continual_c/_header_version.py,
    loaded by path: the package itself needs numpy, the build does not)."""
    spec = importlib.util.spec_from_file_location("_continual_c_header_version",
                                                  os.path.join(PYTHON_DIR, PACKAGE, "_header_version.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        return mod.header_version(HEADER)
    except OSError as e:
        raise RuntimeError("continual_c is built from a continual-c checkout: %s is missing (%s); run "
                           "`pip install ./python` from the repository root" % (HEADER, e)) from None


def _platform_tag():
    return re.sub(r"[^A-Za-z0-9]", "_", sysconfig.get_platform())


def _tag():
    # The library is reached through ctypes: any Python 3, no Python ABI, one platform.
    return "py3-none-" + _platform_tag()


def _dist_info(version):
    return "%s-%s.dist-info" % (PACKAGE, version)


def _metadata(version):
    return "\n".join([
        "Metadata-Version: 2.1",
        "Name: " + DIST_NAME,
        "Version: " + version,
        "Summary: " + SUMMARY,
        "License: see the repository",
        "Requires-Python: >=3.8",
        "Requires-Dist: numpy",
        "Provides-Extra: export",
        'Requires-Dist: torch; extra == "export"',
        "",
        "The continual_c package of continual-c: `continual_c.export` writes a PyTorch network (torch.nn or",
        "continual-inference) as a safetensors model file, `continual_c.load` runs it through the bundled",
        "libcontinual; the `continual` command is the bundled C tool (info, run, bench, compare).",
        "",
    ])


def _wheel_file():
    return "Wheel-Version: 1.0\nGenerator: continual_c_backend\nRoot-Is-Purelib: false\nTag: %s\n" % _tag()


def _entry_points():
    return "[console_scripts]\ncontinual = continual_c._cli:main\n"


def _metadata_files(version):
    """(name inside the dist-info folder, text) for everything but RECORD."""
    return [("METADATA", _metadata(version)), ("WHEEL", _wheel_file()),
            ("entry_points.txt", _entry_points()), ("top_level.txt", PACKAGE + "\n")]


def _run(cmd):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stderr)  # pip reads stdout for nothing; keep logs together


def _build_native():
    """Configure and build the library and the tool; returns the build folder. The tool is linked
    with its install RUNPATH ($ORIGIN/../lib), which the wheel's _native/{bin,lib} layout keeps."""
    if shutil.which("cmake") is None:
        raise RuntimeError("building continual_c needs cmake (Debian: apt-get install cmake gcc pkg-config "
                           "libcjson-dev)")
    build = os.environ.get("CONTINUAL_C_BUILD_DIR") or os.path.join(REPO_DIR, "build-python")
    extra = os.environ.get("CONTINUAL_C_CMAKE_ARGS", "").split()
    _run(["cmake", "-S", REPO_DIR, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DCO_BUILD_TESTS=OFF",
          "-DCO_BUILD_TOOLS=OFF", "-DCO_WERROR=OFF", "-DCO_SANITIZE=OFF", "-DCMAKE_INSTALL_LIBDIR=lib",
          "-DCMAKE_INSTALL_BINDIR=bin", "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON"] + extra)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    _run(["cmake", "--build", build, "--parallel", jobs, "--target", "continual", "continual_cli"])
    return build


def _native_files(build, version):
    """(path inside the wheel, file on disk, mode) of the C products."""
    soname = "libcontinual.so." + version.split(".")[0]
    lib = os.path.realpath(os.path.join(build, soname))  # the versioned file, not the symlink
    tool = os.path.join(build, "continual")
    for p in (lib, tool, HEADER):
        if not os.path.isfile(p):
            raise RuntimeError("the CMake build did not produce %s" % p)
    return [(NATIVE + "/lib/" + soname, lib, EXECUTABLE_MODE),
            (NATIVE + "/bin/continual", tool, EXECUTABLE_MODE),
            (NATIVE + "/include/continual.h", HEADER, FILE_MODE)]


def _python_files():
    src = os.path.join(PYTHON_DIR, PACKAGE)
    out = []
    for name in sorted(os.listdir(src)):
        if name.endswith(".py") and name != "_version.py":
            out.append((PACKAGE + "/" + name, os.path.join(src, name), FILE_MODE))
    return out


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return "%s,sha256=%s,%d" % (arcname, digest, len(data))


def _write_wheel(path, entries):
    """entries: (arcname, bytes, mode); RECORD is added last."""
    record = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for arcname, data, mode in entries:
            info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
            info.external_attr = (stat.S_IFREG | mode) << ZIP_UNIX_MODE_SHIFT
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
            record.append(_record_line(arcname, data))
        rec_name = entries[-1][0].split("/")[0] + "/RECORD"
        record.append(rec_name + ",,")
        info = zipfile.ZipInfo(rec_name, date_time=ZIP_EPOCH)
        info.external_attr = (stat.S_IFREG | FILE_MODE) << ZIP_UNIX_MODE_SHIFT
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, "\n".join(record) + "\n")


# ---- the PEP 517 hooks ----
def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    version = _version()
    d = os.path.join(metadata_directory, _dist_info(version))
    os.makedirs(d, exist_ok=True)
    for name, text in _metadata_files(version):
        with open(os.path.join(d, name), "w", encoding="utf-8") as f:
            f.write(text)
    return os.path.basename(d)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    version = _version()
    entries = []
    for arcname, src, mode in _python_files() + _native_files(_build_native(), version):
        with open(src, "rb") as f:
            entries.append((arcname, f.read(), mode))
    entries.append((PACKAGE + "/_version.py",
                    ('"""Written by the wheel build from include/continual.h."""\n__version__ = "%s"\n'
                     % version).encode("utf-8"), FILE_MODE))
    dist_info = _dist_info(version)
    for name, text in _metadata_files(version):
        entries.append((dist_info + "/" + name, text.encode("utf-8"), FILE_MODE))
    name = "%s-%s-%s.whl" % (PACKAGE, version, _tag())
    os.makedirs(wheel_directory, exist_ok=True)
    _write_wheel(os.path.join(wheel_directory, name), entries)
    return name
