"""The package around the binding: its version (one source, the header macros), the input dtype
policy, out= arrays, Stream.finish, the exporter's shape check and fix-it messages, the wheel
build backend and the `continual` console entry. (pip install itself runs in .ci/run's venv step.)"""
import importlib.util
import os
import re
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

import continual_c
from continual_c import Error, ExportError, PrecisionWarning
from helpers import export_load, seed, torch_forward

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = os.path.join(REPO, "include", "continual.h")


def _header_macros():
    with open(HEADER, encoding="utf-8") as f:
        text = f.read()
    return tuple(int(re.search(r"#define CO_VERSION_%s (\d+)" % p, text).group(1)) for p in ("MAJOR", "MINOR", "PATCH"))


def _strided_net():
    """Strided and padded, so that forward_steps' bound on the output frames is loose (T_out < cap)."""
    seed(41)
    return nn.Sequential(nn.Conv1d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Conv1d(3, 3, 3, padding=2)).eval()


def _backend():
    path = os.path.join(REPO, "python", "wheel_backend", "continual_c_backend.py")
    spec = importlib.util.spec_from_file_location("continual_c_backend_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- version ----
@pytest.mark.no_lib
def test_version_is_the_header_macros():
    assert continual_c.__version__ == "%d.%d.%d" % _header_macros()


@pytest.mark.no_lib
def test_cmake_project_version_is_the_header_macros():
    """CMake reads the same macros: the configured continual.pc (beside the library under test) says so."""
    lib = os.environ.get("CONTINUAL_LIB")
    pc = os.path.join(os.path.dirname(lib), "continual.pc") if lib else None
    if not pc or not os.path.exists(pc):
        pytest.skip("no CMake build beside $CONTINUAL_LIB")
    with open(pc) as f:
        assert "Version: %s\n" % continual_c.__version__ in f.read()


def test_library_version_matches_package():
    lib = continual_c.library()
    assert continual_c.library_version() == continual_c.__version__
    major, minor, patch = _header_macros()
    assert lib.co_version() == major * 10000 + minor * 100 + patch


# ---- dtype policy ----
def test_float64_is_narrowed_with_a_warning(tmp_path):
    net = _strided_net()
    model = export_load(net, tmp_path, input_shape=(2,))
    x = torch.randn(2, 2, 9)
    ref = model.forward(x.numpy())
    with pytest.warns(PrecisionWarning, match=r"Model.forward: clip is float64.*astype\(np.float32\)"):
        y = model.forward(x.numpy().astype(np.float64))
    np.testing.assert_array_equal(y, ref)  # the same float32 values
    with pytest.warns(PrecisionWarning, match="Stream.forward_step: x is float64"):
        model.stream(2).forward_step(x[:, :, 0].double())
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        with pytest.raises(PrecisionWarning):
            model.stream(2).forward_steps(x.double())
        # exact widenings and float32 never warn
        model.forward(x.half())
        model.forward(x.bfloat16())
        model.forward(x.numpy().astype(np.float16))
        model.forward(x)
        model.forward(np.asfortranarray(x.numpy()))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_, np.complex64, object])
def test_non_float_inputs_refused(tmp_path, dtype):
    model = export_load(_strided_net(), tmp_path, input_shape=(2,))
    clip = np.ones((2, 2, 5)).astype(dtype)
    s = model.stream(2)
    calls = [("Model.forward: clip", lambda: model.forward(clip)),
             ("Stream.forward_step: x", lambda: s.forward_step(clip[:, :, 0])),
             ("Stream.forward_steps: x", lambda: s.forward_steps(clip)),
             ("MultiStream.forward_step: frame 0", lambda: model.multistream(1, 2).forward_step([s], [clip[:, :, 0]]))]
    for what, call in calls:
        with pytest.raises(TypeError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(what) and np.dtype(dtype).name in msg and "astype(np.float32)" in msg, msg
    assert s.forward_steps(np.ones((2, 2, 5), np.float32)) is not None  # the refusals left the stream usable


def test_torch_integer_tensor_refused(tmp_path):
    model = export_load(_strided_net(), tmp_path, input_shape=(2,))
    with pytest.raises(TypeError, match=r"Model.forward: clip has dtype int64.*x.float\(\)"):
        model.forward(torch.ones(1, 2, 5, dtype=torch.int64))


# ---- out= ----
def _bad_outs(shape):
    ok = np.empty(shape, np.float32)
    ro = np.empty(shape, np.float32)
    ro.flags.writeable = False
    bigger = tuple(shape[:-1]) + (shape[-1] + 1,)
    return [(np.empty(shape, np.float64), TypeError, "float32"),
            (ok.tolist(), TypeError, "numpy.ndarray"),
            (np.empty(bigger, np.float32), ValueError, "shape"),
            (np.empty(shape[::-1], np.float32).T, ValueError, "C-contiguous"),
            (ro, ValueError, "read-only")]


def test_forward_out(tmp_path):
    net = _strided_net()
    model = export_load(net, tmp_path, input_shape=(2,))
    x = torch.randn(2, 2, 11)
    ref = torch_forward(net, x).numpy()
    out = np.full(model.forward_shape(x.shape), np.nan, np.float32)
    y = model.forward(x, out=out)
    assert y is out
    np.testing.assert_allclose(out, ref, atol=1e-5)
    for bad, err, word in _bad_outs(out.shape):
        with pytest.raises(err, match=word):
            model.forward(x, out=bad)


def test_forward_step_out(tmp_path):
    model = export_load(_strided_net(), tmp_path, input_shape=(2,))
    x = np.random.default_rng(3).standard_normal((2, 2, 9)).astype(np.float32)
    a, b = model.stream(2), model.stream(2)
    out = np.empty(b.output_shape, np.float32)
    seen = 0
    for t in range(x.shape[2]):
        ya = a.forward_step(x[:, :, t])
        yb = b.forward_step(x[:, :, t], out=out)
        assert (ya is None) == (yb is None)
        if ya is not None:
            assert yb is out
            np.testing.assert_array_equal(out, ya)
            seen += 1
    assert seen >= 3
    for bad, err, word in _bad_outs(out.shape):
        with pytest.raises(err, match=word):
            b.forward_step(x[:, :, 0], out=bad)


@pytest.mark.parametrize("pad_end", [False, True])
def test_forward_steps_out_is_a_prefix_view(tmp_path, pad_end):
    """out has T_cap = steps_max_output frames; the result is out[:, :, :T_out] even when T_out < T_cap
    (the library writes the clip compacted; the binding moves each row into place)."""
    model = export_load(_strided_net(), tmp_path, input_shape=(2,))
    x = np.random.default_rng(4).standard_normal((2, 2, 8)).astype(np.float32)
    a, b = model.stream(2), model.stream(2)
    ref = a.forward_steps(x, pad_end=pad_end)
    cap = b.steps_max_output(x.shape[2], pad_end)
    o = b.output_shape
    assert cap > ref.shape[2]  # the compaction is exercised
    out = np.full(o[:2] + (cap,) + o[2:], np.nan, np.float32)
    y = b.forward_steps(x, pad_end=pad_end, out=out)
    assert y.base is out or y.base is out.base
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(out[:, :, :ref.shape[2]], ref)
    with pytest.raises(ValueError, match="shape"):
        b.forward_steps(x, out=np.empty(o[:2] + (cap + 1,) + o[2:], np.float32))


def test_multistream_out(tmp_path):
    model = export_load(_strided_net(), tmp_path, input_shape=(2,))
    ms = model.multistream(2, 1)
    s1, s2 = model.stream(1), model.stream(1)
    r1, r2 = model.stream(1), model.stream(1)
    outs = [np.empty(s1.output_shape, np.float32), np.empty(s2.output_shape, np.float32)]
    x = np.random.default_rng(5).standard_normal((2, 1, 2, 6)).astype(np.float32)
    for t in range(6):
        got = ms.forward_step([s1, s2], [x[0, :, :, t], x[1, :, :, t]], out=outs)
        want = [r1.forward_step(x[0, :, :, t]), r2.forward_step(x[1, :, :, t])]
        for g, w, o in zip(got, want, outs):
            assert (g is None) == (w is None)
            if w is not None:
                assert g is o
                np.testing.assert_array_equal(g, w)
    with pytest.raises(ValueError, match="2 streams, 1 out"):
        ms.forward_step([s1, s2], [x[0, :, :, 0], x[1, :, :, 0]], out=outs[:1])
    with pytest.raises(TypeError, match=r"out\[1\].*float32"):
        ms.forward_step([s1, s2], [x[0, :, :, 0], x[1, :, :, 0]], out=[outs[0], outs[1].astype(np.float64)])


# ---- end of input ----
def test_finish_flushes_the_end_padding(tmp_path):
    model = export_load(_strided_net(), tmp_path, input_shape=(2,))
    s = model.stream(2)
    x = np.random.default_rng(6).standard_normal((2, 2, 9)).astype(np.float32)
    whole = model.stream(2).forward_steps(x, pad_end=True)
    head = [s.forward_step(x[:, :, t]) for t in range(x.shape[2])]
    head = [y for y in head if y is not None]
    cap = s.finish_max_output()
    o = s.output_shape
    out = np.full(o[:2] + (cap,) + o[2:], np.nan, np.float32)
    tail = s.finish(out=out)
    np.testing.assert_allclose(np.concatenate([np.stack(head, 2), tail], 2), whole, atol=1e-6)
    # clean afterwards: the same clip again gives the same result
    np.testing.assert_allclose(s.forward_steps(x, pad_end=True), whole, atol=1e-6)


# ---- exporter ----
def test_wrong_input_shape_refused(tmp_path):
    """A frame shape the network cannot take would make a file no one can load: export refuses it with
    the library's reason and leaves no file; check=False writes it as it is (for later rewriting)."""
    seed(42)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)).eval()
    path = str(tmp_path / "m.safetensors")
    continual_c.export(net, path, input_shape=(3, 6))  # fits
    continual_c.load(path).close()
    for wrong in [(3, 16, 6), (4, 6), (1, 6)]:
        os.remove(path)
        with pytest.raises(ExportError) as e:
            continual_c.export(net, path, input_shape=wrong)
        msg = str(e.value)
        assert "input_shape %r does not fit the network" % (wrong,) in msg and "(C, *S)" in msg, msg
        assert "expected a frame (B, 3" in msg, msg  # the library's own reason
        assert not os.path.exists(path), "a refused export left its file"
        continual_c.export(net, path, input_shape=wrong, check=False)
        with pytest.raises(Error) as e:
            continual_c.load(path)
        assert e.value.status_name == "CO_ERR_SHAPE"


@pytest.mark.no_lib
def test_unsupported_module_errors_say_what_to_do(tmp_path):
    class DoubledPool(nn.MaxPool1d):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(ExportError) as e:
        continual_c.export(nn.Sequential(DoubledPool(2)), str(tmp_path / "a.safetensors"))
    assert "subclass of MaxPool1d" in str(e.value) and "what to do: keep the stock MaxPool1d" in str(e.value)
    with pytest.raises(ExportError) as e:
        continual_c.export(nn.Sequential(nn.ConvTranspose1d(2, 2, 2)), str(tmp_path / "b.safetensors"),
                           input_shape=(2,))
    msg = str(e.value)
    assert "conv_transpose1d is not supported" in msg and "what to do" in msg and "callbacks=[fn]" in msg, msg


# ---- the wheel build backend (the pip install itself: .ci/run) ----
@pytest.mark.no_lib
def test_backend_metadata(tmp_path):
    be = _backend()
    assert be.get_requires_for_build_wheel() == []  # nothing to download
    name = be.prepare_metadata_for_build_wheel(str(tmp_path))
    assert name == "continual_c-%s.dist-info" % continual_c.__version__
    meta = open(str(tmp_path / name / "METADATA")).read()
    assert "Version: %s\n" % continual_c.__version__ in meta and "Requires-Dist: numpy\n" in meta
    assert "continual = continual_c._cli:main" in open(str(tmp_path / name / "entry_points.txt")).read()


@pytest.mark.no_lib
def test_backend_wheel_record(tmp_path):
    """The zip writer: every file hashed in RECORD, modes kept (the tool stays executable)."""
    import base64
    import hashlib

    be = _backend()
    path = str(tmp_path / "t.whl")
    entries = [("continual_c/__init__.py", b"x = 1\n", 0o644), ("continual_c/_native/bin/continual", b"\x7fELF", 0o755),
               ("continual_c-0.dist-info/METADATA", b"Name: continual-c\n", 0o644)]
    be._write_wheel(path, entries)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        assert names[-1] == "continual_c-0.dist-info/RECORD"
        record = z.read(names[-1]).decode().splitlines()
        assert record[-1] == "continual_c-0.dist-info/RECORD,,"
        for (arc, data, mode), line in zip(entries, record):
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert line == "%s,sha256=%s,%d" % (arc, digest, len(data))
            assert z.read(arc) == data
            assert (z.getinfo(arc).external_attr >> 16) & 0o777 == mode


# ---- the console entry ----
@pytest.mark.no_lib
def test_console_entry_without_a_tool(monkeypatch, capsys):
    from continual_c import _cli

    monkeypatch.setattr(_cli, "cli_path", lambda: None)
    assert _cli.main(["info", "x"]) == 1
    assert "pip install ./python" in capsys.readouterr().err


def test_console_entry_runs_the_tool():
    tool = continual_c.cli_path()
    if tool is None:
        pytest.skip("no built `continual` tool beside this source tree (the CI venv step runs the installed one)")
    demo = os.path.join(REPO, "examples", "demo.safetensors")
    r = subprocess.run([sys.executable, "-m", "continual_c", "info", demo], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.join(REPO, "python")))
    assert r.returncode == 0, r.stderr
    assert "Sequential" in r.stdout


@pytest.mark.no_lib
def test_import_needs_no_torch():
    """The runtime part (and the `continual` entry) imports without torch; the exporter's names load
    it on first use."""
    code = ("import sys, continual_c; assert 'torch' not in sys.modules, 'torch imported'; "
            "continual_c.ExportError; assert 'torch' in sys.modules; print(continual_c.__version__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.join(REPO, "python")))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == continual_c.__version__
