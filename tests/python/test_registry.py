"""The module registry and the shared element-wise formulas.

* Every type the library registers (listed by the C test program `test_registry --list`, built next
  to libcontinual in <build>/tests) is documented in docs/format.md, can be written by the exporter
  (python/continual_c/*.py but the binding) and is mentioned by some other test in tests/python.
* An unknown type is refused with a message naming the type and the node, pointing at
  docs/format.md.
* NaN goes where torch 1.13 sends it, for every element-wise activation module, every Lambda built-in
  (regression: Lambda("relu") mapped NaN to 0) and the relu RNN (regression: NaN became 0).
"""
import glob
import os
import re
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import continual_c
from helpers import export_load, seed, write_model

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


# ---- the registry against docs, exporter and tests ----------------------------------------------------------------

def _registry_program():
    lib = continual_c.library_path()
    exe = os.path.join(os.path.dirname(os.path.abspath(lib)), "tests", "test_registry")
    return exe


def registered_types():
    exe = _registry_program()
    assert os.path.isfile(exe), ("%s not found: it is built with the C tests next to the library (%s)"
                                 % (exe, continual_c.library_path()))
    out = subprocess.run([exe, "--list"], check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout
    names = out.split()
    assert len(names) >= 60 and len(set(names)) == len(names), names
    return names


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def documented(name, doc):
    """`Name` in docs/format.md, or a shared form such as `BatchNorm1d/2d/3d` or `AdaptiveAvgPool2d/3d`."""
    if "`%s`" % name in doc:
        return True
    m = re.fullmatch(r"(.*?)(\d)d", name)
    if m:
        for forms in re.findall(r"`" + re.escape(m.group(1)) + r"(\dd(?:/\dd)*)`", doc):
            if m.group(2) + "d" in forms.split("/"):
                return True
    return False


def generated(name, src):
    """A format string of src ("Conv%dd" % nd, "%sPool%dd" % (kind, nd)) can produce `name`."""
    for fmt in re.findall(r"""["']([A-Za-z%]*%[ds][A-Za-z%]*)["']""", src):
        if not re.search(r"[A-Za-z]{2}", fmt.replace("%s", "").replace("%d", "")):
            continue  # "%s" alone, or nearly, would match anything
        pattern = re.escape(fmt).replace("%d", r"\d+").replace("%s", r"[A-Z][a-z]+")
        if re.fullmatch(pattern, name):
            return True
    return False


def exportable(name, src):
    """The exporter writes `name`: it is a quoted string of its source, or one of its format strings makes it."""
    return bool(re.search(r"""["']%s["']""" % re.escape(name), src)) or generated(name, src)


def named_by_tests(name, tests):
    """Some test file (not this one) names the type, or builds its name with a format string
    (getattr(co, "Adaptive%sPool%dd" % (kind, nd)))."""
    return any(re.search(r"\b%s\b" % re.escape(name), s) or generated(name, s) for s in tests.values())


# Known gaps, reported rather than hidden (remove an entry once it is fixed; a new type that is missing
# anywhere fails). None at present.
KNOWN_GAPS = {
    "documented": set(),
    "exportable": set(),
    "tested": set(),
}


def check_gaps(what, missing, where):
    unexpected = sorted(set(missing) - KNOWN_GAPS[what])
    assert not unexpected, "registered types missing from %s: %s" % (where, unexpected)


@pytest.fixture(scope="module")
def sources():
    doc = _read(os.path.join(REPO, "docs", "format.md"))
    # the exporter: the package's modules but the ctypes binding (_export.py, _export_transformer.py, _trace.py, ...)
    exporter = "".join(_read(p) for p in sorted(glob.glob(os.path.join(REPO, "python", "continual_c", "*.py")))
                       if os.path.basename(p) != "_binding.py")
    tests = {os.path.basename(p): _read(p) for p in sorted(glob.glob(os.path.join(HERE, "*.py")))
             if os.path.basename(p) != os.path.basename(__file__)}
    return doc, exporter, tests


def test_registry_lists_known_types():
    names = registered_types()
    for t in ("Sequential", "Conv3d", "ReLU", "BatchNorm2d", "Lambda", "LSTM", "RetroactiveMultiheadAttention"):
        assert t in names


def test_every_registered_type_is_documented(sources):
    doc = sources[0]
    check_gaps("documented", [t for t in registered_types() if not documented(t, doc)], "docs/format.md")


def test_every_registered_type_is_exportable(sources):
    exporter = sources[1]
    check_gaps("exportable", [t for t in registered_types() if not exportable(t, exporter)],
               "the exporter (python/continual_c never writes them)")


def test_every_registered_type_is_tested(sources):
    tests = sources[2]
    check_gaps("tested", [t for t in registered_types() if not named_by_tests(t, tests)], "the tests (tests/python/*.py)")


def test_checks_catch_an_unknown_name(sources):
    """The three checks are not vacuous."""
    doc, exporter, tests = sources
    for fake in ("FrobNorm2d", "Relu", "SequentialX"):
        assert not documented(fake, doc) and not named_by_tests(fake, tests)
    assert not exportable("FrobNorm2d", exporter) and not exportable("Relu", exporter)
    assert documented("BatchNorm2d", doc) and documented("AdaptiveMaxPool3d", doc)
    assert not documented("AvgPool4d", doc) and not documented("AdaptiveMaxPool1d", doc)
    assert exportable("MaxPool2d", exporter) and exportable("Conv3d", exporter)
    assert named_by_tests("AdaptiveMaxPool3d", tests) and named_by_tests("LayerNorm", tests)


def test_unknown_type_message(tmp_path):
    net = {"type": "Sequential", "name": "", "children": [
        {"type": "ReLU", "name": "0"},
        {"type": "Sequential", "name": "1", "children": [{"type": "FrobNorm2d", "name": "inner"}]}]}
    path = write_model(os.path.join(str(tmp_path), "m.safetensors"), net, frame_shape=(2,))
    with pytest.raises(continual_c.Error) as e:
        continual_c.load(path)
    msg = str(e.value)
    assert e.value.status_name == "CO_ERR_NETWORK"
    for part in ("FrobNorm2d", "1.inner", "docs/format.md", "re-export"):
        assert part in msg, msg


# ---- NaN, infinities and signed zeros as torch 1.13 ---------------------------------------------------------------

SPECIAL = [float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 0.3, -0.3, 0.5, -0.5, 1.5, -2.5, 2.5, 7.0, -7.0,
           25.0, -25.0, 1e-3, -1e-3]


def special_clip(batch=1, frames=3):
    """(B, C, T) with C = len(SPECIAL): each frame holds every special value, shuffled per frame."""
    rng = np.random.RandomState(0)
    x = np.empty((batch, len(SPECIAL), frames), np.float32)
    for b in range(batch):
        for t in range(frames):
            x[b, :, t] = np.asarray(SPECIAL, np.float32)[rng.permutation(len(SPECIAL))]
    return x


def assert_same(actual, expected, what):
    """Equal NaN positions, equal infinities, finite values within 1e-5 (relative above 1)."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, what
    assert np.array_equal(np.isnan(a), np.isnan(e)), "%s: NaN at %s, torch at %s" % (
        what, np.argwhere(np.isnan(a)).tolist(), np.argwhere(np.isnan(e)).tolist())
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5, equal_nan=True, err_msg=what)


def check_all_modes(model, x, ref, what):
    assert_same(model.forward(x), ref, what + " forward")
    s = model.stream(batch_size=x.shape[0])
    steps = np.stack([s.forward_step(np.ascontiguousarray(x[:, :, t])) for t in range(x.shape[2])], axis=2)
    assert_same(steps, ref, what + " steps")


ACTIVATIONS = [
    nn.ReLU(), nn.ReLU6(), nn.Sigmoid(), nn.Tanh(), nn.SiLU(), nn.Mish(), nn.Hardswish(), nn.Hardsigmoid(), nn.SELU(),
    nn.LogSigmoid(), nn.Softsign(), nn.Tanhshrink(), nn.GELU(), nn.GELU(approximate="tanh"), nn.ELU(0.7), nn.CELU(0.5),
    nn.LeakyReLU(0.2), nn.Hardtanh(-0.5, 2.0), nn.Threshold(0.1, 20.0), nn.RReLU(0.1, 0.3), nn.Hardshrink(0.3),
    nn.Softshrink(0.5), nn.Softplus(), nn.Softplus(2.0, 5.0), nn.Identity(), nn.Dropout(0.5),
]


@pytest.mark.parametrize("act", ACTIVATIONS, ids=[repr(a) for a in ACTIVATIONS])
def test_activation_special_values(tmp_path, act):
    """Each element-wise activation module on NaN, ±inf, ±0 and large values: as torch 1.13 (which keeps NaN in
    ReLU/Hardtanh/LeakyReLU/Threshold, but maps Softshrink(NaN) to 0)."""
    x = special_clip(batch=2)
    model = export_load(act, tmp_path, input_shape=(x.shape[1],))
    with torch.no_grad():
        ref = act.eval()(torch.from_numpy(x)).numpy()
    check_all_modes(model, x, ref, repr(act))


def test_softshrink_nan_is_zero_as_torch_1_13(tmp_path):
    """torch 1.13's softshrink kernel returns scalar_t(0) inside the band and for NaN (later torch
    versions keep NaN); continual-c follows the torch it is tested against."""
    x = np.array([[[np.nan], [0.2], [-0.2], [1.0]]], np.float32)
    ref = F.softshrink(torch.from_numpy(x), 0.5).numpy()
    model = export_load(nn.Softshrink(0.5), tmp_path, input_shape=(4,))
    assert_same(model.forward(x), ref, "softshrink")
    assert ref[0, 0, 0] == 0.0 and model.forward(x)[0, 0, 0] == 0.0


LAMBDA_BUILTINS = {
    "identity": lambda t: t, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "exp": torch.exp,
    "log": torch.log, "abs": torch.abs, "neg": torch.neg, "square": torch.square, "sqrt": torch.sqrt,
    "sin": torch.sin, "cos": torch.cos,
}


@pytest.mark.parametrize("name", sorted(LAMBDA_BUILTINS))
def test_lambda_builtin_special_values(tmp_path, name):
    """Lambda's built-ins use the shared formulas: NaN, ±inf and ±0 as torch."""
    x = special_clip()
    net = {"type": "Lambda", "name": "", "function": name, "takes_time": False}
    model = continual_c.load(write_model(os.path.join(str(tmp_path), "m.safetensors"), net, frame_shape=(x.shape[1],)))
    ref = LAMBDA_BUILTINS[name](torch.from_numpy(x)).numpy()
    check_all_modes(model, x, ref, "Lambda(%s)" % name)


def test_lambda_relu_keeps_nan(tmp_path):
    """Regression: Lambda("relu") mapped NaN to 0; torch.relu keeps it."""
    net = {"type": "Lambda", "name": "", "function": "relu", "takes_time": False}
    model = continual_c.load(write_model(os.path.join(str(tmp_path), "m.safetensors"), net, frame_shape=(3,)))
    x = np.array([[[np.nan, 1.0], [-1.0, np.nan], [2.0, -0.0]]], np.float32)
    y = model.forward(x)
    assert np.isnan(y[0, 0, 0]) and np.isnan(y[0, 1, 1])
    assert_same(y, torch.relu(torch.from_numpy(x)).numpy(), "Lambda(relu)")


def test_rnn_relu_keeps_nan(tmp_path):
    """Regression: the relu RNN's nonlinearity mapped NaN to 0; torch keeps it (and it then reaches
    every later step through the hidden state)."""
    seed(7)
    rnn = nn.RNN(3, 4, num_layers=2, nonlinearity="relu").eval()
    x = np.random.randn(2, 3, 5).astype(np.float32)
    x[0, 1, 2] = np.nan
    model = export_load(rnn, tmp_path, input_shape=(3,))
    t = nn.RNN(3, 4, num_layers=2, nonlinearity="relu", batch_first=True).eval()
    t.load_state_dict(rnn.state_dict())
    with torch.no_grad():
        ref = t(torch.from_numpy(x).permute(0, 2, 1))[0].permute(0, 2, 1).numpy()
    assert np.isnan(ref[0, :, 2:]).all() and not np.isnan(ref[1]).any() and not np.isnan(ref[0, :, :2]).any()
    check_all_modes(model, x, ref, "RNN(relu)")
