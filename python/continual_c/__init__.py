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

The exporter needs only torch (the `continual` package is optional); the runtime part needs the
shared library ($CONTINUAL_LIB, else <repo>/build/libcontinual.so), loaded on first use.
"""
from ._export import ExportError, export, read_model_file, read_safetensors, to_network, write_safetensors
from ._binding import Error, Model, Stream, library, library_available, library_path, load, load_memory
from ._export_transformer import ContinualAttention, ContinualTransformerEncoder, transformer_encoder

__version__ = "0.1.0"

__all__ = [
    "export", "to_network", "ExportError", "write_safetensors", "read_safetensors", "read_model_file",
    "Error", "Model", "Stream", "load", "load_memory", "library", "library_available", "library_path",
    "ContinualAttention", "ContinualTransformerEncoder", "transformer_encoder",
]
