"""Modules of a block that hold parameters but are not run by the recorded forward.

A decoder of an encoder-decoder family (BART, Marian, Whisper, ...) loaded as a causal LM keeps
its cross-attention: a second attention in each block, with its own norm, that HF's forward calls
only when it is given encoder hidden states. A causal LM is not, so the recorded forward never
calls them and the port computes exactly what HF does without them. Their weights are then
declared unused with the reason (`NotRunReason`), found by evidence: the module is never called
and its parameters are those of the block's (called) self-attention, names and shapes, except
the input width of its projections (the encoder's width may differ). A never-called norm of the
hidden width beside it is that branch's norm. Any other never-called module is left alone here,
and the weight audit names its tensors as unused.
"""

from __future__ import annotations

from hf2kh.ir import Attention, Component, NotRun, NotRunReason
from hf2kh.recognize.graph_view import GraphView


def recognize(
    G: GraphView,
    block: str,
    components: tuple[Component, ...],
    hidden_dim: int,
    evidence: list[str],
) -> tuple[NotRun, ...]:
    """The block's never-called parameter-holding modules that are a cross-attention branch."""
    uncalled = _uncalled_subtrees(G, block)
    if not uncalled:
        return ()
    attention = next(c for c in components if isinstance(c.spec, Attention))
    own = _relative_shapes(G, f"{block}.{attention.hf_paths[0]}")
    attentions = [p for p in uncalled if _same_structure(own, _relative_shapes(G, p))]
    if not attentions:
        return ()
    norms = [
        p
        for p in uncalled
        if p not in attentions
        and G.is_norm(p)
        and all(s == (hidden_dim,) for s in G.subtree_params(p).values())
    ]
    found = [*attentions, *norms]
    evidence.append(
        f"{block}: {', '.join(found)} hold parameters but are never called; "
        f"{', '.join(attentions)} has the parameters of the self-attention "
        f"{attention.hf_paths[0]}: {NotRunReason.CROSS_ATTENTION.value} (declared unused)"
    )
    return tuple(NotRun(p[len(block) + 1 :], NotRunReason.CROSS_ATTENTION) for p in found)


def _uncalled_subtrees(G: GraphView, block: str) -> list[str]:
    """The outermost modules under `block` that hold parameters and are never called."""
    found: list[str] = []
    for node in G.g.modules:
        path = node.path
        if not path.startswith(f"{block}.") or any(path.startswith(f"{f}.") for f in found):
            continue
        if not node.calls and G.subtree_params(path) and not _called_inside(G, path):
            found.append(path)
    return found


def _called_inside(G: GraphView, path: str) -> bool:
    return any(n.calls for n in G.g.modules if n.path.startswith(f"{path}."))


def _relative_shapes(G: GraphView, path: str) -> dict[str, tuple[int, ...]]:
    return {n[len(path) + 1 :]: tuple(s) for n, s in G.subtree_params(path).items()}


def _same_structure(reference: dict, candidate: dict) -> bool:
    """The same parameter names and shapes; a matrix may read another input width."""
    if not reference or reference.keys() != candidate.keys():
        return False
    return all(
        a == b or (len(a) == 2 and len(b) == 2 and a[0] == b[0])
        for a, b in ((reference[k], candidate[k]) for k in reference)
    )
