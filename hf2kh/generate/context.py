"""The template context: names and constructor arguments derived from a model spec.

Templates only print what this module decides, so every choice about which arguments a generated
class takes (and therefore what `get_config()` saves) lives here, in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hf2kh.recognize.spec import ModelSpec

ACTIVATIONS = {
    "silu": "ops.silu({x})",
    "gelu": "ops.gelu({x}, approximate=False)",
    "gelu_approximate": "ops.gelu({x}, approximate=True)",
    "relu": "ops.relu({x})",
}

# Backbone/block argument -> rotary layer argument.
ROPE_ARGS = {
    "rope_max_wavelength": "max_wavelength",
    "rope_rotary_dim": "rotary_dim",
    "rope_scaling_factor": "scaling_factor",
    "rope_low_freq_factor": "low_freq_factor",
    "rope_high_freq_factor": "high_freq_factor",
    "rope_original_max_position_embeddings": "original_max_position_embeddings",
}

BASE_FIELDS = [
    "vocabulary_size",
    "num_layers",
    "num_query_heads",
    "num_key_value_heads",
    "hidden_dim",
    "intermediate_dim",
    "head_dim",
    "layer_norm_epsilon",
]

DOCS = {
    "attention_scale": "float. Multiplies the attention scores (not head_dim**-0.5 here).",
    "query_key_norm_epsilon": "float. Epsilon of the per-head query/key RMS norms.",
    "rope_max_wavelength": "float. Rotary base (theta).",
    "rope_rotary_dim": "int. Features of each head that are rotated.",
    "rope_scaling_factor": "float. Rotary frequency scaling factor.",
    "rope_low_freq_factor": "float. Llama 3 rope scaling: low-frequency factor.",
    "rope_high_freq_factor": "float. Llama 3 rope scaling: high-frequency factor.",
    "rope_original_max_position_embeddings": "int. Llama 3 rope scaling: original context.",
    "sliding_window": "int. Tokens each position attends to, itself included.",
    "max_sequence_length": "int. Rows of the learned position embedding.",
    "embedding_scale": "float. Multiplies the token embeddings.",
}


@dataclass
class Context:
    spec: ModelSpec
    tokenizer: Any  # hf2kh.generate.tokenizer.TokenizerSpec
    preset_path: str = ""
    num_params: int = 0

    # -- names ---------------------------------------------------------------------------------
    @property
    def package(self) -> str:
        return self.spec.name

    @property
    def prefix(self) -> str:
        return self.spec.class_prefix

    @property
    def import_prefix(self) -> str:
        """Absolute imports inside the package (`from my_model.my_model_backbone import ...`)."""
        return f"{self.package}."

    @property
    def norm(self):
        return self.spec.norm

    @property
    def norm_class(self) -> str:
        return f"{self.prefix}LayerNorm"

    @property
    def needs_layernorm_file(self) -> bool:
        return self.spec.norm.kind == "rms" or self.spec.attention.qk_norm is not None

    # -- constructor arguments -----------------------------------------------------------------
    @property
    def custom_scale(self) -> bool:
        a = self.spec.attention
        return not math.isclose(a.scale, a.head_dim**-0.5, rel_tol=1e-9)

    @property
    def attention_extra_fields(self) -> list[str]:
        fields = []
        if self.custom_scale:
            fields.append("attention_scale")
        if self.spec.attention.qk_norm is not None:
            fields.append("query_key_norm_epsilon")
        return fields

    @property
    def rope_fields(self) -> list[str]:
        rope = self.spec.rope
        if rope is None:
            return []
        fields = ["rope_max_wavelength", "rope_rotary_dim"]
        if rope.scaling != "none":
            fields.append("rope_scaling_factor")
        if rope.scaling == "llama3":
            fields += [
                "rope_low_freq_factor",
                "rope_high_freq_factor",
                "rope_original_max_position_embeddings",
            ]
        return fields

    @property
    def rotary_fields(self) -> list[str]:
        return [ROPE_ARGS[f] for f in self.rope_fields]

    @property
    def rope_arg_names(self) -> dict[str, str]:
        return ROPE_ARGS

    @property
    def block_extra_fields(self) -> list[str]:
        fields = self.attention_extra_fields + self.rope_fields
        if self.spec.attention.sliding_window:
            fields.append("sliding_window")
        return fields

    @property
    def block_fields(self) -> list[str]:
        return [f for f in BASE_FIELDS if f not in ("vocabulary_size", "num_layers")] + (
            self.block_extra_fields
        )

    @property
    def extra_backbone_fields(self) -> list[str]:
        fields = list(self.block_extra_fields)
        if self.spec.embedding.position == "learned":
            fields.append("max_sequence_length")
        if self.spec.embedding.scale:
            fields.append("embedding_scale")
        return fields

    @property
    def extra_backbone_docs(self) -> list[tuple[str, str]]:
        return [(f, DOCS[f]) for f in self.extra_backbone_fields]

    @property
    def backbone_fields(self) -> list[str]:
        return BASE_FIELDS + self.extra_backbone_fields

    @property
    def backbone_config(self) -> dict[str, Any]:
        """The constructor arguments of this checkpoint's backbone, from the spec."""
        s, a, r = self.spec, self.spec.attention, self.spec.rope
        values: dict[str, Any] = {
            "vocabulary_size": s.embedding.vocab_size,
            "num_layers": s.num_layers,
            "num_query_heads": a.num_query_heads,
            "num_key_value_heads": a.num_key_value_heads,
            "hidden_dim": s.embedding.hidden_dim,
            "intermediate_dim": s.mlp.intermediate_dim,
            "head_dim": a.head_dim,
            "layer_norm_epsilon": s.norm.epsilon,
            "attention_scale": a.scale,
            "query_key_norm_epsilon": a.qk_norm.epsilon if a.qk_norm else None,
            "sliding_window": a.sliding_window,
            "max_sequence_length": s.embedding.max_positions,
            "embedding_scale": s.embedding.scale,
        }
        if r is not None:
            values.update(
                {
                    "rope_max_wavelength": r.theta,
                    "rope_rotary_dim": r.rotary_dim,
                    "rope_scaling_factor": r.factor,
                    "rope_low_freq_factor": r.low_freq_factor,
                    "rope_high_freq_factor": r.high_freq_factor,
                    "rope_original_max_position_embeddings": r.original_max_position_embeddings,
                }
            )
        return {f: values[f] for f in self.backbone_fields}

    def activation_expr(self, x: str) -> str:
        return ACTIVATIONS[self.spec.mlp.activation].format(x=x)

    @property
    def tokenizer_config(self) -> dict[str, Any]:
        return self.tokenizer.keras_kwargs()

    @property
    def preset_description(self) -> str:
        s = self.spec
        return f"{s.num_layers}-layer decoder ported from {s.source} ({s.hf_model_class}) by hf2kh."

    @property
    def small_backbone_config(self) -> dict[str, Any]:
        """A tiny backbone with this model's features, for fast unit tests."""
        config = dict(self.backbone_config)
        groups = config["num_query_heads"] // config["num_key_value_heads"]
        kv_heads = min(config["num_key_value_heads"], 2)
        head_dim = 8
        config.update(
            vocabulary_size=128,
            num_layers=2,
            num_key_value_heads=kv_heads,
            num_query_heads=kv_heads * groups,
            hidden_dim=32,
            intermediate_dim=64,
            head_dim=head_dim,
        )
        if "rope_rotary_dim" in config:
            fraction = self.spec.rope.rotary_dim / self.spec.attention.head_dim
            config["rope_rotary_dim"] = max(2, int(head_dim * fraction) // 2 * 2)
        if "attention_scale" in config:
            config["attention_scale"] = head_dim**-0.5 * 0.5
        if "embedding_scale" in config:
            config["embedding_scale"] = 32**0.5
        if config.get("max_sequence_length"):
            config["max_sequence_length"] = min(config["max_sequence_length"], 64)
        if config.get("sliding_window"):
            config["sliding_window"] = min(config["sliding_window"], 4)
        return config
