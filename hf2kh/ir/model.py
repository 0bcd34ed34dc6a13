"""The model IR: what a checkpoint's model computes, as data.

The contract between recognize and generate (DESIGN.md, "The model IR"). A model is a stem, a few
block types and a per-layer list of them, and a head. A block is a list of steps in the order the
model computes them, each `let out = component(inputs)` or `add`, over named values (`x` is the
block input). Llama and a post-norm OPT differ only in their step lists:

    llama:    h = input_norm(x); a = attention(h); x = x + a; h = mlp_norm(x); m = mlp(h); x = x + m
    opt-350m: a = attention(x); x = x + a; x = attention_norm(x); m = mlp(x); x = x + m; x = norm(x)

Components (norms, attention, MLPs) are typed frozen dataclasses; their recognizers, emitters and
weight rows live in `hf2kh.components`, one module per kind.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class NormKind(enum.Enum):
    RMS = "rms"
    LAYER = "layer"


class Activation(enum.Enum):
    SILU = "silu"
    GELU = "gelu"
    GELU_TANH = "gelu_approximate"
    RELU = "relu"
    RELU_SQUARED = "relu_squared"  # relu(x) ** 2 (Arcee, Nemotron)


class WeightLayout(enum.Enum):
    """How a projection stores its matrix: `Linear` (out, in) or GPT-2's `Conv1D` (in, out)."""

    LINEAR = "linear"
    CONV1D = "conv1d"


class QkvLayout(enum.Enum):
    """Separate q/k/v projections, or one fused projection and the order of its rows."""

    SEPARATE = "separate"
    BLOCKED = "blocked"  # [q | k | v]
    PER_HEAD = "per_head"  # [q_h | k_h | v_h] for each head h
    # [q_g1 .. q_gQ | k_g | v_g] for each key/value head g and its Q query heads (Falcon's new
    # decoder architecture); BLOCKED and PER_HEAD are its one-group and one-query-head cases
    GROUPED = "grouped"
    # `qkv_shards` shards, each holding its heads' q, k and v blocks in `qkv_order` (CodeGen's
    # model-parallel layout: 4 shards of [q | v | k])
    SHARDED = "sharded"


class RopeScaling(enum.Enum):
    NONE = "none"
    LINEAR = "linear"
    LLAMA3 = "llama3"
    # YaRN: frequencies blended between plain and divided by `factor` along a ramp between the
    # correction dimensions of `beta_fast` and `beta_slow` rotations; cos/sin times
    # `attention_factor`
    YARN = "yarn"


class RopeLayout(enum.Enum):
    """Which features rope rotates together: the two halves of the rotated part (Llama's
    `rotate_half`: feature i with i + rotary_dim / 2) or adjacent pairs (2i with 2i + 1: GPT-J,
    GLM, Cohere)."""

    HALF_SPLIT = "half_split"
    INTERLEAVED = "interleaved"


class Positions(enum.Enum):
    NONE = "none"  # rope or ALiBi inside attention
    LEARNED = "learned"
    # learned, at row `pad + cumsum(token_ids != pad)` (`pad` for padding): RoBERTa's positions
    # counted from the token ids, `Stem.position_padding_id` the pad
    COUNTED = "counted"
    # fixed sinusoids computed by the model, not stored: position p reads sin(p * r_k) for
    # k < d / 2, then cos(p * r_k), with r_k = `Stem.sinusoid_base ** (-2k / d)` (CTRL)
    SINUSOIDAL = "sinusoidal"


class EmbeddingNormInput(enum.Enum):
    """What the stem's embedding norm reads: the sum of the token embeddings and their positions
    and token types (BART, BLOOM, BERT), or the token embeddings alone, positions added to its
    output (BlenderbotSmall's `layernorm_embedding`)."""

    SUM = "sum"
    TOKENS = "tokens"


class NotRunReason(enum.Enum):
    """Why a module that holds parameters is not run by the port (its weights are declared
    unused with this reason, never dropped silently)."""

    # A second attention of the block, of the self-attention's structure, not called by the
    # recorded forward: a causal LM without encoder hidden states skips it
    CROSS_ATTENTION = "cross-attention: not run without encoder states"


@dataclass(frozen=True)
class Norm:
    kind: NormKind
    epsilon: float
    scale_offset: float = 0.0  # 1.0 for the Gemma form `x * (1 + w)`
    bias: bool = False
    scale: bool = True  # False: no learned weight (OLMo's non-affine LayerNorm)


@dataclass(frozen=True)
class Rope:
    theta: float
    rotary_dim: int  # == head_dim unless partial rotary
    scaling: RopeScaling = RopeScaling.NONE
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192
    layout: RopeLayout = RopeLayout.HALF_SPLIT
    beta_fast: float = 32.0  # YaRN
    beta_slow: float = 1.0  # YaRN
    attention_factor: float = 1.0  # YaRN: multiplies cos and sin
    truncate: bool = True  # YaRN: correction range rounded outwards to whole dimensions


@dataclass(frozen=True)
class QueryTemperature:
    """Queries multiplied by `1 + beta * log(1 + floor(position / length))` (Llama 4's attention
    temperature tuning, Ministral 3)."""

    beta: float
    length: int


@dataclass(frozen=True)
class Alibi:
    """ALiBi (Press et al., 2021): head h adds `slope_h * (key - query)` to its scores, the slopes
    a geometric sequence set by the head count (`hf2kh.components.alibi.slopes`)."""

    max_bias: float = 8.0


@dataclass(frozen=True)
class RelativePositions:
    """DeBERTa's disentangled attention terms, added to the content scores `q . k`: query `i`
    and key `j` read row `span + bucket(i - j)` (clipped to the `2 * span` rows) of the shared
    relative table the backbone hands every layer. Content-to-position adds `q_i . pk_r` (`pk`:
    the table's rows through the key projection, or a separate position-key one), position-to-
    content `k_j . pq_r'` at `r' = span - bucket(i - j)` (`pq`: through the query projection, or a
    separate position-query one). Every term is divided by `sqrt(head_dim * (1 + terms))`.
    `bucket(d)` is `d` while `|d| < buckets // 2`, else log-spaced up to `max_distance`; with
    `buckets` 0, `d` itself."""

    span: int
    buckets: int
    max_distance: int
    content_to_position: bool
    position_to_content: bool
    shared_projections: bool  # the table goes through the content key / query projections
    position_key_bias: bool = True  # a separate position-key projection's bias
    position_query_bias: bool = True


@dataclass(frozen=True)
class Attention:
    num_query_heads: int
    num_key_value_heads: int
    head_dim: int
    query_bias: bool
    key_bias: bool
    value_bias: bool
    output_bias: bool
    scale: float
    qkv_layout: QkvLayout = QkvLayout.SEPARATE
    qkv_weight_layout: WeightLayout = WeightLayout.LINEAR
    qkv_shards: int = 1  # SHARDED: how many shards
    qkv_order: str = "qkv"  # SHARDED: the order of the q, k, v blocks inside a shard
    output_weight_layout: WeightLayout = WeightLayout.LINEAR
    rope: Rope | None = None
    qk_norm: Norm | None = None
    qk_norm_per_head: bool = True  # False: over all heads at once (OLMo 2's q_norm(q_proj(x)))
    causal: bool = True
    softcap: float | None = None  # scores become `softcap * tanh(scores / softcap)` (Gemma 2)
    alibi: Alibi | None = None  # a linear position bias on the scores instead of rope
    query_temperature: QueryTemperature | None = None
    relative: RelativePositions | None = None  # disentangled relative-position terms (DeBERTa)


@dataclass(frozen=True)
class Mlp:
    gated: bool
    activation: Activation
    intermediate_dim: int
    bias: bool
    weight_layout: WeightLayout = WeightLayout.LINEAR


class MoeScoring(enum.Enum):
    """How the router turns its logits into expert scores: a softmax over the experts, or each
    expert's own sigmoid."""

    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"


class ChoiceBias(enum.Enum):
    """Where a per-expert correction bias (DeepSeek-V3's `e_score_correction_bias`) is added
    when choosing the experts (only for choosing: the weights are the unbiased scores)."""

    NONE = "none"
    SCORES = "scores"  # to the scores (GLM-4.5, MiniMax-M2)
    LOGITS = "logits"  # to the router logits (Kolibri)


@dataclass(frozen=True)
class SharedExpert:
    """A gated MLP every token runs besides its routed experts, its output added to theirs;
    with `gated_output`, scaled first by `sigmoid(gate(x))` of a one-unit projection (Qwen2-MoE)."""

    intermediate_dim: int
    activation: Activation
    gated_output: bool = False


@dataclass(frozen=True)
class Moe:
    """A sparse mixture of gated-MLP experts: a bias-free router scores the `num_experts`
    experts (`scoring`); each token's `top_k` best (chosen on the scores, or on them plus a
    correction bias, and only among the experts of its `top_k_groups` best of `num_groups`
    groups) are weighted by their scores, renormalized to sum to 1 with `normalize_top_k`, times
    `routed_scale`. Each expert's fused gate/up rows are `[gate | up]`, or `[up | gate]` without
    `gate_first`. A shared expert, if any, adds its output."""

    num_experts: int
    top_k: int
    intermediate_dim: int
    activation: Activation
    normalize_top_k: bool
    gate_first: bool = True
    scoring: MoeScoring = MoeScoring.SOFTMAX
    choice_bias: ChoiceBias = ChoiceBias.NONE
    # a group's score is the sum of its two best experts' (biased) scores
    num_groups: int = 1
    top_k_groups: int = 1
    routed_scale: float = 1.0
    shared: SharedExpert | None = None
    # how the stacked expert tensors hold each matrix: `Linear` (out, in), or (in, out)
    expert_layout: WeightLayout = WeightLayout.LINEAR


ComponentSpec = Norm | Attention | Mlp | Moe


@dataclass(frozen=True)
class Component:
    """One component instance of a block: its Keras layer name, the HF module(s) it replaces
    (paths relative to the block; an MLP of sibling modules such as `fc1`/`fc2` has several),
    the HF projections it reads its weights from, by role, and what it computes."""

    name: str
    hf_paths: tuple[str, ...]
    hf_class: str
    spec: ComponentSpec
    weights: tuple[tuple[str, str], ...] = ()  # (role, HF module path relative to the block)


@dataclass(frozen=True)
class Let:
    """`out = component(*inputs)`."""

    out: str
    component: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Add:
    """`out = left + right`."""

    out: str
    inputs: tuple[str, str]


@dataclass(frozen=True)
class Scale:
    """`out = value * factor`, the factor a constructor argument `name` of the block (Granite's
    residual multiplier on each sublayer's output)."""

    out: str
    input: str
    factor: float
    name: str


Step = Let | Add | Scale


@dataclass(frozen=True)
class NotRun:
    """A module of the block (path relative to it) that holds parameters but is not called by
    the recorded forward, and why."""

    hf_path: str
    reason: NotRunReason


@dataclass(frozen=True)
class BlockType:
    hf_class: str
    components: tuple[Component, ...]
    steps: tuple[Step, ...]
    output: str = "x"
    not_run: tuple[NotRun, ...] = ()

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    @property
    def attention(self) -> Attention:
        return next(c.spec for c in self.components if isinstance(c.spec, Attention))


@dataclass(frozen=True)
class LayerOptions:
    """Settings that may differ between layers of one block type (GPT-Neo local/global)."""

    sliding_window: int | None = None


@dataclass(frozen=True)
class Stem:
    vocab_size: int
    hidden_dim: int
    hf_embedding: str
    positions: Positions = Positions.NONE
    hf_positions: str | None = None
    max_positions: int | None = None
    position_offset: int = 0  # rows skipped at the start of the table (OPT: 2)
    position_padding_id: int | None = None  # Positions.COUNTED: the pad id the count skips
    sinusoid_base: float | None = None  # Positions.SINUSOIDAL: the base of the frequencies
    embedding_scale: float | None = None
    # A norm of the (scaled, projected, position-summed) embeddings before the first block (BLOOM).
    embedding_norm: Norm | None = None
    hf_embedding_norm: str | None = None
    embedding_norm_input: EmbeddingNormInput = EmbeddingNormInput.SUM
    # Token embeddings narrower than the blocks, projected up (OPT-350m's `project_in`).
    embedding_dim: int | None = None
    hf_embedding_projection: str | None = None
    embedding_projection_bias: bool = False
    # The projection reads the embeddings after positions, token types and the embedding norm
    # (ELECTRA's `embeddings_project`), not the token embeddings alone (OPT-350m's `project_in`).
    project_last: bool = False
    # Token-type (segment) embeddings added to the token embeddings (BERT's `token_type_ids`).
    hf_token_types: str | None = None
    type_vocab_size: int | None = None
    # The relative-position table every block's attention reads (DeBERTa's
    # `encoder.rel_embeddings`), normalized first when `relative_table_norm` is set.
    hf_relative_table: str | None = None
    relative_table_norm: Norm | None = None
    hf_relative_table_norm: str | None = None
    # The embeddings are multiplied by the padding mask before the first block (DeBERTa).
    masked_embeddings: bool = False


class Task(enum.Enum):
    """What the checkpoint's head is for: next-token prediction with causal attention, or the
    tokens at masked positions of a bidirectional encoder."""

    CAUSAL_LM = "causal_lm"
    MASKED_LM = "masked_lm"
    TEXT_CLASSIFIER = "text_classifier"  # class logits from the first token (pooled or not)
    BASE = "base"  # a bare bidirectional encoder: the backbone's hidden states are the output


@dataclass(frozen=True)
class HeadTransform:
    """Dense, activation and norm between the final hidden states and the vocabulary projection
    (BERT's masked-LM `predictions.transform`); `dim` is the dense's width (the embeddings')."""

    hf_dense: str
    dim: int
    activation: Activation
    norm: Norm
    hf_norm: str
    dense_bias: bool = True  # False: the dense has no bias (ModernBERT's `head.dense`)


@dataclass(frozen=True)
class Head:
    hf_head: str | None  # None: Task.BASE, no head
    tied: bool
    bias: bool = False
    final_norm: Norm | None = None
    hf_final_norm: str | None = None
    # Final hidden states projected down to the embedding width (OPT-350m's `project_out`).
    hf_output_projection: str | None = None
    softcap: float | None = None  # logits become `softcap * tanh(logits / softcap)`
    logit_scale: float | None = None  # logits are multiplied by it (Granite, Cohere)
    transform: HeadTransform | None = None
    task: Task = Task.CAUSAL_LM
    # The parameter holding the head's bias when the head's own is tied to it (BERT's
    # `cls.predictions.bias`); None: `<hf_head>.bias`.
    hf_bias: str | None = None
    # Task.TEXT_CLASSIFIER: the pooler's dense (tanh) before `hf_head`, the class count and the
    # checkpoint's class names by id (`id2label`). Task.BASE: the bare model's pooler, which is
    # not ported (its weights are declared unused; the backbone outputs the hidden states);
    # Task.MASKED_LM: a pooler the model runs but the LM head does not read, likewise
    hf_pooler: str | None = None
    num_classes: int | None = None
    labels: tuple[str, ...] = ()
    # Task.TEXT_CLASSIFIER: the activation after the pooler's dense, a Keras activation name
    pooler_activation: str = "tanh"


@dataclass(frozen=True)
class ModelIR:
    name: str  # python package name, e.g. "tiny_llama"
    class_prefix: str  # e.g. "TinyLlama"
    source: str
    revision: str | None
    hf_model_class: str
    hf_block_container: str  # "model.layers": block i is f"{container}.{i}"
    stem: Stem
    block_types: tuple[BlockType, ...]
    layers: tuple[int, ...]  # block type of each layer
    layer_options: tuple[LayerOptions, ...]  # per layer
    head: Head
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    # One block module called once per layer (ALBERT): `hf_block_container` is that module's
    # path, every layer reads its one set of weights, and the port has one layer object too.
    shared_block: bool = False
    evidence: tuple[str, ...] = field(default=(), compare=False)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def block_path(self, i: int) -> str:
        return self.hf_block_container if self.shared_block else f"{self.hf_block_container}.{i}"

    def block_type(self, i: int) -> BlockType:
        return self.block_types[self.layers[i]]

    @property
    def attention(self) -> Attention:
        """The attention of the first block (sizes are shared by every block type)."""
        return self.block_types[0].attention
