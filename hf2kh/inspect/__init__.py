"""inspect: the exact layer graph of a checkpoint's model (see `graph.py` for the JSON schema)."""

from hf2kh.inspect.build import build_graph, instantiate, sample_inputs
from hf2kh.inspect.graph import SCHEMA_VERSION, LayerGraph

__all__ = ["SCHEMA_VERSION", "LayerGraph", "build_graph", "instantiate", "sample_inputs"]
