"""ALiBi: a linear position bias on the attention scores (Press et al., 2021; BLOOM, MPT).

Head h adds `slope_h * (key - query)` to its scores (any per-query constant drops out of the
softmax, so BLOOM's `slope_h * key` is the same bias). Recognized on numbers: the attention runs
on the arguments its block received (`attention_probe`) with a zero query operand, so what
reaches its softmax is only what is added to the scores (the mask and any position bias); each
head's bias over the unmasked keys must be a line in the key position whose slope is
`alibi_slopes(heads)`'s, the reference below, for every head (a head count that is not a power of
two takes the interleaved extra slopes). A bias that is not ALiBi's stops the port.

Emitted into the package's attention layer: `alibi_slopes` (this module's function, printed as
is) and a `_alibi_bias` method adding the bias to the scores, with the KV cache's positions.
"""

from __future__ import annotations

import inspect
import math

import torch

from hf2kh.errors import UnsupportedModelError
from hf2kh.ir import Alibi
from hf2kh.recognize import attention_probe, probes
from hf2kh.recognize.graph_view import GraphView

# Score entries at or below this are masked out (masks add float32's lowest value, or -inf).
MASKED = -1e8


def alibi_slopes(num_heads, max_bias=8.0):
    """ALiBi's per-head slopes: `2**(-max_bias / n)` to the powers 1..n for the largest power of
    two n <= num_heads; the remaining heads take every other slope of the sequence for 2n."""
    closest = 2 ** math.floor(math.log2(num_heads))
    base = 2.0 ** (-max_bias / closest)
    slopes = [base**power for power in range(1, closest + 1)]
    extra_base = 2.0 ** (-max_bias / (2 * closest))
    remaining = num_heads - closest
    slopes += [extra_base**power for power in range(1, 2 * remaining, 2)]
    return slopes


def recognize(G: GraphView, attn: str, evidence: list[str]) -> tuple[Alibi | None, dict]:
    """(the ALiBi of attention `attn` or None, the score product's scalar keyword arguments)."""
    run = attention_probe.run(G, attn, zero_query=True)
    logits = run.logits.float()
    length = run.length
    logits = logits.reshape(run.batch, -1, length, logits.shape[-1])[0]
    if logits.shape[-1] != length:
        raise UnsupportedModelError(f"{attn}: scores of {logits.shape[-1]} keys for {length}")
    heads = logits.shape[0]
    query = torch.arange(length)[:, None]
    key = torch.arange(length)[None, :]
    seen = (key <= query) & (logits > MASKED)  # (heads, query, key)
    # relative to each query's own position: a per-query constant leaves the softmax unchanged
    diagonal = logits.diagonal(dim1=-2, dim2=-1)[..., None]
    bias = torch.where(seen, logits - diagonal, torch.zeros(()))
    if float(bias.abs().max()) <= 1e-6:
        return None, run.product_kwargs
    distance = (key - query).float().expand(heads, length, length)
    slopes = torch.tensor(alibi_slopes(heads), dtype=torch.float32)[:, None, None]
    expected = torch.where(seen, slopes * distance, torch.zeros(()))
    probes.pick(
        f"{attn}: the bias added to its attention scores (a position-dependent bias)",
        bias,
        {"alibi": lambda: expected},
    )
    evidence.append(
        f"attention {attn}: ALiBi, {heads} heads, slopes "
        + ", ".join(f"{s:.4g}" for s in alibi_slopes(heads))
        + " (probed: the scores of a zero query)"
    )
    return Alibi(), run.product_kwargs


# -- emitted code ----------------------------------------------------------------------------------

FUNCTION = inspect.getsource(alibi_slopes)

METHOD = '''def _alibi_bias(self, query_length, key_length, start_index):
    """ALiBi: head u adds `slope_u * (key - query)` to its scores (`alibi_slopes`)."""
    slopes = ops.convert_to_tensor(alibi_slopes(self.num_query_heads), "float32")
    query_positions = ops.arange(query_length)[:, None] + start_index
    distance = ops.cast(ops.arange(key_length)[None, :] - query_positions, "float32")
    return slopes[:, None, None] * distance[None, :, :]
'''

CALL = "scores = scores + self._alibi_bias(ops.shape(query)[1], ops.shape(key)[1], start_index)"

DOC = "Before the softmax, head u adds ALiBi's `slope_u * (key - query)` to its scores."
