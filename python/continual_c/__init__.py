"""continual_c: export PyTorch Continual Inference Networks to continual-c model files, and run
them through libcontinual (ctypes).

    import continual_c
    continual_c.export(net, "net.safetensors", input_shape=(3, 16, 16))
    model = continual_c.load("net.safetensors")
    y = model.forward(clip)                 # (B, C, T, *S) -> what torch.nn gives
    s = model.stream(batch_size=1)
    y_t = s.forward_step(frame)             # (B, C, *S) -> output frame or None

    # torch.nn transformers need the window length (and, for attention, which kind):
    enc = continual_c.transformer_encoder(nn_encoder, sequence_len=64)
    att = continual_c.ContinualAttention(nn_mha, sequence_len=64, kind="retroactive")

Installed with `pip install ./python` (from the repository root) the package carries the library
and the `continual` command; the exporter needs torch (the `continual` package only to export
continual modules). The library is looked for at $CONTINUAL_LIB, then inside the package, then at
<repo>/build/libcontinual.so; it is loaded on first use. Inputs are float32 (float64 is narrowed
with a PrecisionWarning, non-float dtypes are refused); `out=` writes into a caller's array.
"""
from ._binding import (Error, Model, MultiStream, PrecisionWarning, Stream, library, library_available,
                       library_path, library_version, load, load_memory)
from ._cli import cli_path

# The exporter needs torch; the runtime part (load, Model, Stream, the `continual` command) does
# not. So the exporter's names are imported on first use (PEP 562): `import continual_c` stays
# quick and works without torch.
_LAZY = {
    "export": "._export", "to_network": "._export", "ExportError": "._export",
    "write_safetensors": "._export", "read_safetensors": "._export", "read_model_file": "._export",
    "ContinualAttention": "._export_transformer", "ContinualTransformerEncoder": "._export_transformer",
    "transformer_encoder": "._export_transformer",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


try:
    from ._version import __version__  # written into the wheel by its build
except ImportError:  # a source checkout: the header beside it
    from ._header_version import header_version as _header_version
    try:
        __version__ = _header_version()
    except (OSError, ValueError):
        __version__ = "0+unknown"

__all__ = [
    "__version__", "export", "to_network", "ExportError", "write_safetensors", "read_safetensors", "read_model_file",
    "Error", "PrecisionWarning", "Model", "Stream", "MultiStream", "load", "load_memory", "library", "library_available",
    "library_path", "library_version", "cli_path",
    "ContinualAttention", "ContinualTransformerEncoder", "transformer_encoder",
]
