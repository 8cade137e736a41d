"""Utility modules of the reference: Skip, Reshape, the closures (Add, Multiply, Constant, Zero, One,
Identity) and Lambda (a built-in function, a functor module, or a Python callback given at load), in all
three modes."""
import numpy as np
import pytest
import torch
from torch import nn

import continual_c
from co_helpers import co_steps, co_steps_clip
from helpers import assert_close, check_modes, export_load, seed, to_np

co = pytest.importorskip("continual")


def _fw(net, x):
    net.eval()
    with torch.no_grad():
        return net(x)


# ---- Skip ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3])
def test_skip(tmp_path, n):
    """Skip(n): forward drops the first n frames; steps emit nothing for n steps, then every frame unchanged."""
    seed(400)
    net = co.Skip(n)
    x = torch.randn(2, 3, 8, 2)
    model = export_load(net, tmp_path, input_shape=(3, 2))
    assert model.temporal == {"receptive_field": 1, "delay": 0, "stride": 1, "padding": 0}
    assert continual_c.to_network(net)[0] == {"type": "Skip", "name": "", "steps": n}
    check_modes(model, x, x[:, :, n:], delay=n)
    theirs = co_steps(net, x)
    assert [t is None for t in theirs] == [True] * n + [False] * (8 - n)


def test_skip_in_sequential_after_conv(tmp_path):
    """Sequential(conv k3 p1, Skip(2), conv k3): Skip counts the outputs of the conv."""
    seed(401)
    net = co.Sequential(co.Conv1d(2, 3, 3, padding=1), co.Skip(2), co.Conv1d(3, 2, 3))
    x = torch.randn(2, 2, 10)
    model = export_load(net, tmp_path, input_shape=(2,))
    ref = _fw(net, x)
    theirs = co_steps(net, x)
    check_modes(model, x, ref, steps_oracle=lambda k: theirs[k - 1])


def test_skip_before_strided_conv(tmp_path):
    """Sequential(Skip(2), conv k3 s2 p1): the conv's phase starts with its first input (step 3), so output j
    comes at step 4 + 2j; the Sequential's delay property does not count Skip's Nones (Q28, as the reference)."""
    seed(411)
    net = co.Sequential(co.Skip(2), co.Conv1d(2, 3, 3, stride=2, padding=1))
    x = torch.randn(2, 2, 13)
    model = export_load(net, tmp_path, input_shape=(2,))
    assert model.delay == net.delay == 1
    ref = _fw(net, x)
    check_modes(model, x, ref, delay=3)
    theirs = co_steps(net, x)
    assert [t is not None for t in theirs] == [n >= 4 and n % 2 == 0 for n in range(1, 14)]


# ---- Reshape -------------------------------------------------------------------------------------------
def test_reshape_flatten_frame(tmp_path):
    """Reshape(B, C*H) of (B, C, H) frames; clips (B, C, T, H) -> (B, C*H, T)."""
    net = co.Sequential(co.Conv2d(2, 3, (3, 1), padding=(1, 0)), co.Reshape(2, -1), co.Conv1d(12, 2, 3, padding=1))
    seed(402)
    x = torch.randn(2, 2, 9, 4)
    model = export_load(net, tmp_path)  # no frame_shape: see test_reshape_with_recorded_frame_shape
    assert continual_c.to_network(net)[0]["children"][1] == {"type": "Reshape", "name": "1", "shape": [2, -1],
                                                             "contiguous": False}
    ref = _fw(net, x)
    assert ref.shape == (2, 2, 9)
    check_modes(model, x, ref)


def test_reshape_split_channels(tmp_path):
    """Reshape(B, 2, 3, 2) of (B, 6, 2) frames (contiguous=True): clips (B, 6, T, 2) -> (B, 2, T, 3, 2)."""
    seed(403)
    net = co.Reshape((3, 2, 3, 2), contiguous=True)
    x = torch.randn(3, 6, 5, 2)
    model = export_load(net, tmp_path)
    ref = _fw(net, x)
    assert ref.shape == (3, 2, 5, 3, 2)
    check_modes(model, x, ref)
    s = model.stream(3, (6, 2))
    assert s.output_shape == (3, 2, 3, 2)
    with torch.no_grad():
        assert_close(s.forward_step(to_np(x[:, :, 0])), net.forward_step(x[:, :, 0]), 0, "step vs co")


def test_reshape_with_recorded_frame_shape(tmp_path):
    """Reshape(2, -1) in a file that records frame_shape (2, 4): loading must work (streams of batch 2 are fine;
    a batch-1 stream is what cannot be reshaped)."""
    net = co.Sequential(co.Conv2d(2, 3, (3, 1), padding=(1, 0)), co.Reshape(2, -1), co.Conv1d(12, 2, 3, padding=1))
    seed(402)
    x = torch.randn(2, 2, 9, 4)
    model = export_load(net, tmp_path, input_shape=(2, 4))
    check_modes(model, x, _fw(net, x))


# ---- closures -------------------------------------------------------------------------------------------
CLOSURES = [
    ("Add", lambda: co.Add(1.5), lambda x: x + 1.5, {"type": "Add", "constant": 1.5}),
    ("Add tensor", lambda: co.Add(torch.tensor(-2.0)), lambda x: x - 2.0, {"type": "Add", "constant": -2.0}),
    ("Multiply int", lambda: co.Multiply(3), lambda x: x * 3, {"type": "Multiply", "factor": 3.0}),
    ("Constant", lambda: co.Constant(0.25), lambda x: torch.full_like(x, 0.25), {"type": "Constant", "constant": 0.25}),
    ("Zero", lambda: co.Zero(), torch.zeros_like, {"type": "Zero"}),
    ("One", lambda: co.One(), torch.ones_like, {"type": "One"}),
    ("Identity", lambda: co.Identity(7, unused=1), lambda x: x, {"type": "Identity"}),
]


@pytest.mark.parametrize("make, fn, node", [pytest.param(m, f, n, id=i) for i, m, f, n in CLOSURES])
def test_closures(tmp_path, make, fn, node):
    net = co.Sequential(co.Conv1d(2, 3, 3, padding=1), make(), co.Conv1d(3, 2, 1))
    seed(404)
    x = torch.randn(2, 2, 7)
    got = continual_c.to_network(net)[0]["children"][1]
    assert got == dict(node, name="1")
    with torch.no_grad():
        ref = net[2](fn(net[0](x)))
        assert_close(_fw(net, x), ref, 1e-6, "co forward")
    model = export_load(net, tmp_path, input_shape=(2,))
    check_modes(model, x, ref)


@pytest.mark.no_lib
def test_closure_export_errors():
    with pytest.raises(continual_c.ExportError, match=r"constant is a tensor of shape \(3,\)"):
        continual_c.to_network(co.Add(torch.ones(3)))
    with pytest.raises(continual_c.ExportError, match=r"call-mode specific"):  # modes that compute differently
        continual_c.to_network(co.Lambda(forward_only_fn=torch.relu, forward_step_only_fn=torch.tanh,
                                         forward_steps_only_fn=torch.relu))
    # one function for every mode is that function
    assert continual_c.to_network(co.Lambda(forward_only_fn=torch.relu, forward_step_only_fn=torch.relu,
                                            forward_steps_only_fn=torch.relu))[0]["function"] == "relu"
    # an anonymous function is traced now; one that leaves the primitive set is named, with its line
    with pytest.raises(continual_c.ExportError, match=r"Lambda at '1'.*test_utility.py"):
        continual_c.export(co.Sequential(co.Identity(), co.Lambda(lambda x: torch.sort(x, dim=1)[0])),
                           "/dev/null", input_shape=(2,))


# ---- Lambda --------------------------------------------------------------------------------------------
BUILTINS = [
    (torch.exp, "exp", lambda x: x), (torch.log, "log", lambda x: x.abs() + 0.1), (torch.abs, "abs", lambda x: x),
    (torch.neg, "neg", lambda x: x), (torch.square, "square", lambda x: x), (torch.sqrt, "sqrt", lambda x: x.abs()),
    (torch.sin, "sin", lambda x: x), (torch.cos, "cos", lambda x: x),
]


@pytest.mark.parametrize("takes_time", [False, True])
@pytest.mark.parametrize("fn, name, prep", BUILTINS, ids=[b[1] for b in BUILTINS])
def test_lambda_builtin(tmp_path, fn, name, prep, takes_time):
    net = co.Lambda(fn, takes_time=takes_time)
    seed(405)
    x = prep(torch.randn(2, 3, 6, 2))
    assert continual_c.to_network(net)[0] == {"type": "Lambda", "name": "", "function": name, "takes_time": takes_time}
    model = export_load(net, tmp_path, input_shape=(3, 2))
    check_modes(model, x, _fw(net, x))


@pytest.mark.parametrize("act", [torch.relu, torch.sigmoid, torch.tanh])
def test_lambda_activation_functions(tmp_path, act):
    """Lambda(torch.relu / sigmoid / tanh) (exported as the activation node)."""
    net = co.Sequential(co.Conv1d(2, 2, 3, padding=1), co.Lambda(act))
    seed(406)
    x = torch.randn(2, 2, 7)
    model = export_load(net, tmp_path, input_shape=(2,))
    check_modes(model, x, _fw(net, x))


@pytest.mark.parametrize("functor", [lambda: nn.Sigmoid(), lambda: nn.PReLU(3, init=0.1), lambda: nn.Hardswish()],
                         ids=["Sigmoid", "PReLU", "Hardswish"])
def test_lambda_functor(tmp_path, functor):
    """co.Lambda(module): the module's tensors keep their state_dict names (`1.fn.weight`)."""
    seed(407)
    f = functor()
    if isinstance(f, nn.PReLU):
        with torch.no_grad():
            f.weight.uniform_(-1, 1)
    net = co.Sequential(co.Conv1d(2, 3, 3, padding=1), co.Lambda(f))
    x = torch.randn(2, 2, 7)
    model = export_load(net, tmp_path, input_shape=(2,))
    check_modes(model, x, _fw(net, x))


def clip_norm(x):
    """A frame-wise callback: each frame divided by 1 + its L1 norm over channels (not element-wise)."""
    x = np.asarray(x)
    return x / (1.0 + np.abs(x).sum(axis=1, keepdims=True))


def softsq(x):
    return np.log1p(np.asarray(x) ** 2)


def test_lambda_callback_frame_wise(tmp_path):
    """Lambda(fn) with a Python function given at load: forward applies it frame by frame (takes_time=False),
    steps to each frame; a stateful conv before it. Matches the reference in all modes."""
    seed(408)
    net = co.Sequential(co.Conv2d(2, 3, 3, padding=1), co.Lambda(lambda t: torch.from_numpy(clip_norm(t.numpy()))))
    net[1].fn.__name__ = "clip_norm"  # a named function, as the exporter needs
    x = torch.randn(2, 2, 8, 5)
    path = tmp_path / "lam.safetensors"
    continual_c.export(net, str(path), input_shape=(2, 5), callbacks=["clip_norm"])  # kept as a C callback
    assert continual_c.read_model_file(str(path))[0]["children"][1] == {
        "type": "Lambda", "name": "1", "function": "clip_norm", "takes_time": False}
    seen = []

    def cb(a):
        seen.append(a.shape)
        return clip_norm(a)

    model = continual_c.load(str(path), callbacks={"clip_norm": cb})
    check_modes(model, x, _fw(net, x))
    assert (2, 3, 5) in seen and all(len(s) == 3 for s in seen), "takes_time=False: the callback sees frames only"


def test_lambda_callback_takes_time(tmp_path):
    """takes_time=True: the callback gets the whole clip in forward and single frames in steps."""
    seed(409)

    def softsq_t(t):
        return torch.log1p(t ** 2)

    net = co.Sequential(co.Conv1d(2, 3, 3, padding=1), co.Lambda(softsq_t, takes_time=True))
    x = torch.randn(2, 2, 7)
    path = tmp_path / "lam2.safetensors"
    continual_c.export(net, str(path), input_shape=(2,), callbacks=[softsq_t])
    shapes = []

    def cb(a):
        shapes.append(a.shape)
        return softsq(a)

    model = continual_c.load(str(path), callbacks={"softsq_t": cb})
    check_modes(model, x, _fw(net, x))
    assert (2, 3, 7) in shapes and (2, 3) in shapes


def test_lambda_callback_errors(tmp_path):
    def twice(t):
        return t * 2

    net = co.Lambda(twice)
    path = tmp_path / "lam3.safetensors"
    continual_c.export(net, str(path), input_shape=(2,), callbacks=["twice"])
    with pytest.raises(continual_c.Error) as e:
        continual_c.load(str(path))
    assert e.value.status_name == "CO_ERR_NETWORK" and "twice" in e.value.message
    bad = continual_c.load(str(path), callbacks={"twice": lambda a: a[:, :1]})
    with pytest.raises(continual_c.Error, match="shape"):
        bad.forward(np.ones((1, 2, 3), np.float32))
    ok = continual_c.load(str(path), callbacks={"twice": lambda a: torch.from_numpy(a) * 2})  # torch results too
    np.testing.assert_array_equal(ok.forward(np.ones((1, 2, 3), np.float32)), 2 * np.ones((1, 2, 3)))
    # callbacks outlive the Model object while a stream uses it
    s = ok.stream(1, (2,))
    del ok
    import gc

    gc.collect()
    np.testing.assert_array_equal(s.forward_step(np.ones((1, 2), np.float32)), [[2, 2]])


def test_closures_reference_steps(tmp_path):
    """All closures in one chain, against the reference's steps and forward_steps."""
    seed(410)
    net = co.Sequential(co.Conv1d(2, 2, 3, padding=1), co.Multiply(-0.5), co.Add(0.25), co.Lambda(torch.exp),
                        co.BroadcastReduce(co.Identity(), co.Constant(2.0), reduce="mul"), co.Lambda(torch.log))
    x = torch.randn(1, 2, 6)
    model = export_load(net, tmp_path, input_shape=(2,))
    theirs = co_steps(net, x)
    check_modes(model, x, _fw(net, x), steps_oracle=lambda n: theirs[n - 1])
    s = model.stream(1, (2,))
    assert_close(s.forward_steps(to_np(x), pad_end=True), co_steps_clip(net, x, pad_end=True), 1e-5, "pad_end vs co")


def test_lambda_of_softmax_acts_per_frame(tmp_path):
    """co.Lambda(nn.Softmax(dim=-1)) applies softmax to each (B, C) frame, so over the channels: exported with the
    dim counted in the clip (1), forward and steps equal the reference's."""
    seed(640)
    net = co.Sequential(co.Conv1d(3, 4, 3, padding=1), co.Lambda(nn.Softmax(dim=-1)))
    x = torch.randn(2, 3, 7)
    model = export_load(net, tmp_path, input_shape=(3,))
    with torch.no_grad():
        ref = net.forward(x)
    assert_close(model.forward(x), ref, 1e-6, "forward")
    check_modes(model, x, ref)


def test_delay_large_frames_chunked_and_threaded(tmp_path):
    """A Delay on frames above the threading threshold (20 x 48 x 48 floats per item, not a whole
    number of copy chunks) moves its ring chunk by chunk, on the stream's threads: the input of 2
    steps ago, the same bits at 1 and 3 threads, and batch 1 inside batch 3."""
    seed(12)
    model = export_load(co.Sequential(co.Delay(2)), tmp_path, input_shape=(20, 47, 49))
    x = torch.randn(3, 20, 6, 47, 49).numpy()
    y1 = model.stream(3).forward_steps(x)
    y3 = model.stream(3, threads=3).forward_steps(x)
    assert np.array_equal(y1, y3)
    assert np.array_equal(y1, x[:, :, :y1.shape[2]])
    assert np.array_equal(model.stream(1).forward_steps(np.ascontiguousarray(x[2:3])), y1[2:3])
    check_modes(model, torch.from_numpy(x[:1]), torch.from_numpy(x[:1]), tol=0)
