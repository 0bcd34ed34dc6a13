"""source: resolve `<repo>` to local files (config, weights, tokenizer) and read them safely.

ckpt = open_checkpoint("owner/name")          # or a local directory in HF layout
tensor_index(ckpt)                             # name -> TensorInfo, from headers only
for name, tensor in iter_tensors(ckpt): ...    # one tensor at a time, shard by shard
"""

from hf2kh.source.checkpoint import Checkpoint, load_config, open_checkpoint
from hf2kh.source.weights import TensorInfo, check_shapes, iter_tensors, tensor_index

__all__ = [
    "Checkpoint",
    "TensorInfo",
    "check_shapes",
    "iter_tensors",
    "load_config",
    "open_checkpoint",
    "tensor_index",
]
