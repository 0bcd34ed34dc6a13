"""The model spec: what a checkpoint's model computes, as recognized from its layer graph.

Every field is backed by evidence (parameter shapes, recorded dataflow, module settings, numeric
probes); `evidence` keeps a human-readable line for each decision so a port can be audited.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NormSpec:
    kind: str  # "rms" | "layer"
    epsilon: float
    scale_offset: float = 0.0  # 1.0 for Gemma-style (1 + w) RMSNorm
    bias: bool = False  # LayerNorm with a bias (center)


@dataclass(frozen=True)
class RopeSpec:
    theta: float
    rotary_dim: int  # == head_dim unless partial rotary
    scaling: str = "none"  # "none" | "linear" | "llama3"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class AttentionSpec:
    num_query_heads: int
    num_key_value_heads: int
    head_dim: int
    query_bias: bool
    key_bias: bool
    value_bias: bool
    output_bias: bool
    scale: float
    qk_norm: NormSpec | None = None
    sliding_window: int | None = None
    fused_qkv: bool = False  # one projection producing q, k, v
    # Row order of a fused projection: "blocked" [q | k | v], or "per_head" [q_h | k_h | v_h]
    # for each head h (split on a (heads, 3 * head_dim) view).
    fused_layout: str = "blocked"


@dataclass(frozen=True)
class MlpSpec:
    gated: bool
    activation: str  # keras-side name: "silu" | "gelu" | "gelu_approximate" | "relu"
    intermediate_dim: int
    bias: bool


@dataclass(frozen=True)
class EmbeddingSpec:
    vocab_size: int
    hidden_dim: int
    scale: float | None = None  # multiply token embeddings (Gemma: sqrt(hidden_dim))
    position: str = "rope"  # "rope" | "learned"
    max_positions: int | None = None  # learned positions only
    tie_word_embeddings: bool = True


@dataclass(frozen=True)
class WeightRef:
    """Where one role's tensor lives in the HF checkpoint (block tensors use `{i}`)."""

    hf_name: str
    layout: str  # "linear" (out, in) | "conv1d" (in, out) | "vector" | "embedding"


@dataclass
class ModelSpec:
    name: str  # python package name, e.g. "tiny_llama"
    class_prefix: str  # e.g. "TinyLlama"
    source: str  # repo id or directory
    revision: str | None
    task: str  # "causal_lm"
    hf_model_class: str
    hf_block_class: str
    hf_attention_class: str
    hf_mlp_class: str
    hf_norm_class: str
    num_layers: int
    embedding: EmbeddingSpec
    rope: RopeSpec | None
    block_layout: str  # "sequential" | "parallel"
    norm: NormSpec
    attention: AttentionSpec
    mlp: MlpSpec
    final_norm: bool
    weights: dict[str, WeightRef]  # role -> HF tensor (roles: see hf2kh.generate.weight_map)
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    evidence: list[str] = field(default_factory=list)

    @property
    def block_prefix(self) -> str:
        return self.weights["block"].hf_name
