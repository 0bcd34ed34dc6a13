"""A position-dependent query scale: `query * (1 + beta * log(1 + floor(position / length)))`
(Llama 4's attention temperature tuning, kept by Ministral 3): 1 inside the first `length`
positions, growing slowly past them.

Recognized from the dataflow and on numbers. In the dataflow: ops inside the attention that feed
its query operand but read none of its projections (they compute from the position ids the block
received). On numbers: the attention runs with its q/k projections giving every position the same
output, once at the recorded positions and once with the position ids moved far on (the rotary
tables the block received stay as they are); the query operand's ratio between the two runs must
be the candidate's factor at the moved positions over the factor at the recorded ones. The
candidates pair every float and every integer of the config's rope parameters (no name is read).
Emitted as a few lines of the attention layer, after the rotary embedding.
"""

from __future__ import annotations

import torch

from hf2kh.components.base import Arg
from hf2kh.errors import UnsupportedModelError
from hf2kh.ir import QueryTemperature
from hf2kh.recognize import attention_probe
from hf2kh.recognize.graph_view import GraphView

# What computing the factor from the position ids calls.
OPS = {"floor", "log", "log1p", "div", "truediv", "__truediv__", "add", "__add__", "__radd__"}
OPS |= {"mul", "__mul__", "__rmul__", "float", "to", "__getitem__"}

# The constructor arguments holding it.
BETA_ARG = "query_temperature_beta"
LENGTH_ARG = "query_temperature_length"

_MOVES = (1, 3, 7)  # multiples of a candidate's length the positions are moved by


def position_chain(G: GraphView, own, query: int, projections: list[str]) -> list:
    """The attention's own calls that feed the query operand `query` without reading any of its
    projections' outputs (computed from the positions alone)."""
    outs = [G.out(p) for p in projections]
    return [
        c
        for c in own
        if c.kind == "function"
        and c.outputs
        and G.derives(query, c.outputs[0])
        and not any(G.derives(c.outputs[0], o) for o in outs)
    ]


def recognize(
    G: GraphView, attn: str, sources: list[str], head_dim: int, config, evidence: list[str]
) -> QueryTemperature:
    """The query temperature of attention `attn`, whose q/k projections are `sources`."""
    block = attention_probe.block_of(G, attn)
    kwargs = G.block_inputs[block][1]
    if not isinstance(kwargs.get("position_ids"), torch.Tensor):
        raise UnsupportedModelError(
            f"{attn}: the query is scaled by something computed without its projections, and "
            "the block receives no position ids to probe it with"
        )
    base = _query_norms(G, attn, sources, head_dim, 0)
    positions = kwargs["position_ids"].reshape(-1)[: base.shape[0]].double()
    tried = []
    for beta, length in _candidates(config):
        tried.append(f"beta {beta:g}, length {length}")
        if all(
            _matches(
                _query_norms(G, attn, sources, head_dim, m * length) / base,
                _factor(positions + m * length, beta, length) / _factor(positions, beta, length),
            )
            for m in _MOVES
        ):
            found = QueryTemperature(beta=beta, length=length)
            evidence.append(
                f"{attn}: queries scaled by 1 + {beta:g} * log(1 + floor(position / {length})) "
                "(dataflow from the position ids, probed at moved positions)"
            )
            return found
    raise UnsupportedModelError(
        f"{attn}: the query is scaled by a function of the positions that matches none of the "
        f"known references ({'; '.join(tried) or 'no candidates in the rope parameters'}); it "
        "needs the op-by-op fallback, which this version of hf2kh does not emit"
    )


def at_probe_positions(G: GraphView, attn: str, t: QueryTemperature) -> torch.Tensor:
    """The factor at each position of the probe runs (`attention_probe.run`), to divide out of
    their query operand."""
    kwargs = G.block_inputs[attention_probe.block_of(G, attn)][1]
    positions = kwargs["position_ids"].reshape(-1)[: kwargs["position_ids"].shape[-1]].double()
    return _factor(positions, t.beta, t.length)


def _candidates(config) -> list[tuple[float, int]]:
    params = getattr(config, "rope_parameters", None) or {}
    sets = [v for v in params.values() if isinstance(v, dict)] or [params]
    found = []
    for p in sets:
        floats = [v for v in p.values() if isinstance(v, float)]
        ints = [v for v in p.values() if isinstance(v, int) and not isinstance(v, bool) and v > 0]
        found += [(b, n) for b in floats for n in ints if (b, n) not in found]
    return found


def _factor(positions: torch.Tensor, beta: float, length: int) -> torch.Tensor:
    return 1 + beta * torch.log(1 + torch.floor(positions / length))


def _query_norms(G, attn: str, sources: list[str], head_dim: int, move: int) -> torch.Tensor:
    """The query operand's size at each position (one sequence), with every position given the
    same projections' output and the position ids moved on by `move`."""

    def same(out: torch.Tensor) -> torch.Tensor:
        return out[:, :1].expand_as(out).clone()

    def moved(kwargs: dict) -> dict:
        return {**kwargs, "position_ids": kwargs["position_ids"] + move}

    run = attention_probe.run(G, attn, replace={s: same for s in sources}, kwargs_fn=moved)
    query = run.query.detach().double()
    axis = max(a for a in range(query.ndim - 1) if query.shape[a] == run.length)
    rows = query.movedim(axis, -2).reshape(-1, run.length, head_dim)
    return rows.pow(2).sum(-1).sqrt().mean(0)


def _matches(observed: torch.Tensor, expected: torch.Tensor) -> bool:
    return float((observed - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def args(t: QueryTemperature) -> list[Arg]:
    return [
        Arg(BETA_ARG, t.beta, "float. Query temperature: 1 + beta * log(1 + floor(p / length))."),
        Arg(LENGTH_ARG, t.length, "int. Query temperature: positions per step of the log."),
    ]


def describe(t: QueryTemperature) -> str:
    return f"query temperature 1 + {t.beta:g} * log(1 + floor(position / {t.length}))"
