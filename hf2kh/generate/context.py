"""The template context: names and constructor arguments derived from the model IR.

Templates only print what this module and the component emitters decide, so every choice about
which arguments a generated class takes (and therefore what `get_config()` saves) lives in Python,
not in template conditionals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from hf2kh.components import alibi as alibi_component
from hf2kh.components import attention as attention_component
from hf2kh.components import classifier_head, head_transform
from hf2kh.components import mlp as mlp_component
from hf2kh.components import moe as moe_component
from hf2kh.components import norm as norm_component
from hf2kh.components import rope as rope_component
from hf2kh.components import scale as scale_component
from hf2kh.components import softcap as softcap_component
from hf2kh.components.base import Arg, merge_args
from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.block_code import BlockCode
from hf2kh.ir import (
    Attention,
    Let,
    Mlp,
    ModelIR,
    Moe,
    Norm,
    NormKind,
    Positions,
    Scale,
    Task,
)

# The task class suffix of each task (`<Prefix>CausalLM`...), KerasHub's names.
TASK_CLASSES = {
    Task.CAUSAL_LM: "CausalLM",
    Task.MASKED_LM: "MaskedLM",
    Task.TEXT_CLASSIFIER: "TextClassifier",
    Task.BASE: "Backbone",  # no task class: the backbone is what the checkpoint has
}

BLOCK_SIZES = (
    "num_query_heads",
    "num_key_value_heads",
    "hidden_dim",
    "intermediate_dim",
    "head_dim",
    "layer_norm_epsilon",
)


@dataclass
class Context:
    ir: ModelIR
    tokenizer: Any  # hf2kh.generate.tokenizer.TokenizerSpec
    preset_path: str = ""
    num_params: int = 0
    # a bare encoder's sentence-transformers pooling (hf2kh.generate.sentence_pooling), if any
    sentence_pooling: Any = None

    def __post_init__(self) -> None:
        # Block types that differ only in constructor values (Gemma 3's rope theta per layer
        # type) are one block class, each layer built with its own values (`per_layer_args`).
        # A block type without some norm steps of another (ModernBERT's first layer does not
        # normalize the attention's input) is that block with those norms left out
        # (`use_<norm>`, `optional_norms`).
        shapes = {
            _without_values(_with_norms_of(b, self.block), self.rope) for b in self.ir.block_types
        }
        if len(shapes) != 1:
            raise UnsupportedModelError(
                f"{len(self.ir.block_types)} structurally different block types; "
                "emitting more than one block class is not supported yet"
            )

    # -- names ---------------------------------------------------------------------------------
    @property
    def spec(self) -> ModelIR:
        return self.ir

    @property
    def package(self) -> str:
        return self.ir.name

    @property
    def prefix(self) -> str:
        return self.ir.class_prefix

    @property
    def import_prefix(self) -> str:
        """Absolute imports inside the package (`from my_model.my_model_backbone import ...`)."""
        return f"{self.package}."

    @property
    def block(self):
        """The block type the block class is printed from: the one with the most steps (the
        others are it with some norms left out, `optional_norms`)."""
        return max(self.ir.block_types, key=lambda b: len(b.steps))

    @property
    def optional_norms(self) -> list[str]:
        """Norm layers of the block that some layers do not have (`use_<name>` says which)."""
        present = [{c.name for c in b.components} for b in self.ir.block_types]
        return [
            c.name
            for c in self.block.components
            if isinstance(c.spec, Norm) and not all(c.name in names for names in present)
        ]

    @property
    def attention(self) -> Attention:
        return self.block.attention

    @property
    def relative(self):
        """The attention's disentangled relative-position terms (DeBERTa), or None."""
        return self.attention.relative

    @property
    def attention_component(self):
        return next(c for c in self.block.components if isinstance(c.spec, Attention))

    def _feedforwards(self, kind: type) -> list:
        """The components of type `kind` of every block type, in order."""
        return [c for b in self.ir.block_types for c in b.components if isinstance(c.spec, kind)]

    @property
    def mlp(self) -> Mlp | None:
        return next((c.spec for c in self._feedforwards(Mlp)), None)

    @property
    def moe(self) -> Moe | None:
        return next((c.spec for c in self._feedforwards(Moe)), None)

    @property
    def mixed_feedforward(self) -> bool:
        """Some layers have a dense MLP, others a mixture of experts (`use_sparse_moe`)."""
        return self.mlp is not None and self.moe is not None

    @property
    def moe_hf_class(self) -> str:
        return self._feedforwards(Moe)[0].hf_class

    def moe_activation(self, x: str) -> str:
        return mlp_component.EXPRESSIONS[self.moe.activation].format(x=x)

    @property
    def moe_doc(self) -> list[str]:
        return moe_component.doc(self.moe)

    def moe_shared_activation(self, x: str) -> str:
        return mlp_component.EXPRESSIONS[self.moe.shared.activation].format(x=x)

    @property
    def rope(self):
        """The model's rope (the first block type's that has one)."""
        return next((b.attention.rope for b in self.ir.block_types if b.attention.rope), None)

    @property
    def rope_per_layer(self) -> bool:
        """Some layers rotate queries and keys and others do not (Cohere 2, SmolLM3)."""
        return self.rope is not None and any(b.attention.rope is None for b in self.ir.block_types)

    @property
    def norms(self) -> list[Norm]:
        found = [c.spec for c in self.block.components if isinstance(c.spec, Norm)]
        if self.ir.head.final_norm is not None:
            found.append(self.ir.head.final_norm)
        if self.ir.stem.embedding_norm is not None:
            found.append(self.ir.stem.embedding_norm)
        return found

    @property
    def norm(self) -> Norm:
        """The RMS norm the package's norm layer implements (every RMS norm of the model)."""
        rms = [n for n in [*self.norms, self.attention.qk_norm] if n and n.kind is NormKind.RMS]
        if len({n.scale_offset for n in rms}) > 1:
            raise UnsupportedModelError("RMS norms with and without the (1 + w) form in one model")
        return rms[0] if rms else self.norms[0]

    @property
    def norm_class(self) -> str:
        return norm_component.rms_class(self.prefix)

    @property
    def needs_layernorm_file(self) -> bool:
        return any(n.kind is NormKind.RMS for n in self.norms) or self.attention.qk_norm is not None

    def norm_layer(self, norm: Norm, epsilon: str, name: str, dtype: str) -> str:
        return norm_component.layer_code(norm, self.prefix, epsilon, name, dtype)

    @property
    def final_norm_layer(self) -> str:
        norm = self.ir.head.final_norm
        return self.norm_layer(norm, "layer_norm_epsilon", "sequence_output_layernorm", "dtype")

    @property
    def embedding_norm_layer(self) -> str:
        norm = self.ir.stem.embedding_norm
        return self.norm_layer(norm, "layer_norm_epsilon", "embeddings_layernorm", "dtype")

    @property
    def backbone_rms_norm(self) -> bool:
        """The backbone itself builds an RMS norm (final or embedding norm)."""
        norms = [self.ir.head.final_norm, self.ir.stem.embedding_norm]
        return any(n is not None and n.kind is NormKind.RMS for n in norms)

    @property
    def alibi(self):
        """The ALiBi emitter (`components.alibi`: FUNCTION, METHOD, CALL, DOC) when the model's
        attention has ALiBi, else None."""
        return alibi_component if self.attention.alibi is not None else None

    @cached_property
    def block_code(self) -> BlockCode:
        return BlockCode(self)

    @property
    def hf_norm_class(self) -> str:
        norms = [c for c in self.block.components if isinstance(c.spec, Norm)]
        return norms[0].hf_class if norms else "LayerNorm"

    # -- the task: causal LM (decoder blocks) or masked LM (encoder blocks) ----------------------
    @property
    def encoder(self) -> bool:
        return self.ir.head.task is not Task.CAUSAL_LM

    @property
    def block_module(self) -> str:
        return f"{self.package}_{'encoder' if self.encoder else 'decoder'}"

    @property
    def block_class(self) -> str:
        return f"{self.prefix}{'Encoder' if self.encoder else 'Decoder'}Block"

    @property
    def bare(self) -> bool:
        """A bare encoder: no task class, the backbone and a preprocessor for its inputs."""
        return self.ir.head.task is Task.BASE

    @property
    def text_tasks(self) -> list[str]:
        """The tasks whose text preprocessors the package has (a bare encoder's inputs come from
        the classifier's preprocessor, which packs texts without labels)."""
        return ["text_classifier"] if self.bare else [self.ir.head.task.value]

    @property
    def task_module(self) -> str:
        if self.bare:
            return f"{self.package}_backbone"
        return f"{self.package}_{self.ir.head.task.value}"

    @property
    def task_class(self) -> str:
        return self.prefix + TASK_CLASSES[self.ir.head.task]

    @property
    def preprocessor_module(self) -> str:
        return f"{self.package}_{self.text_tasks[0]}_preprocessor"

    @property
    def preprocessor_class(self) -> str:
        return self.prefix + TASK_CLASSES[Task(self.text_tasks[0])] + "Preprocessor"

    @property
    def segments(self) -> bool:
        """The backbone takes `segment_ids` (token types; a table of one row is a constant)."""
        stem = self.ir.stem
        return stem.hf_token_types is not None and stem.type_vocab_size > 1

    @property
    def task_args(self) -> list[Arg]:
        """Constructor arguments of the task class beyond `backbone` and `preprocessor`."""
        head = self.ir.head
        if head.task is Task.TEXT_CLASSIFIER:
            return classifier_head.args(head.num_classes, tuple(head.labels))
        if head.task is Task.MASKED_LM and head.transform is not None:
            return head_transform.args(head.transform)
        return []

    @property
    def backbone_head_transform(self) -> bool:
        """`token_logits()` applies the head's dense transform (a causal LM's: ModernBERT's
        decoder, `norm(activation(dense(h)))` before the tied vocabulary projection)."""
        transform = self.ir.head.transform
        if not self.token_logits or transform is None:
            return False
        if transform.dim != self.ir.stem.hidden_dim or self.projected_embeddings:
            raise UnsupportedModelError(
                f"{transform.hf_dense}: a causal LM head transform to {transform.dim} features "
                "with projected embeddings is not supported yet"
            )
        return True

    @property
    def head_transform_code(self) -> str:
        """`token_logits()`'s statement applying the transform to `hidden_states`."""
        transform = self.ir.head.transform
        dense = f"self.{head_transform.BACKBONE_DENSE}(hidden_states)"
        activated = mlp_component.EXPRESSIONS[transform.activation].format(x=dense)
        return f"hidden_states = self.{head_transform.BACKBONE_NORM}({activated})"

    @property
    def head_activation_function(self) -> tuple[str, str] | None:
        """(name, body) of the masked-LM head's activation when keras has no name for it."""
        transform = self.ir.head.transform
        if transform is None or self.ir.head.task is not Task.MASKED_LM:
            return None
        found = head_transform.activation_function(transform)
        return (found[0], found[1].format(x="x")) if found else None

    @property
    def bias_free_head(self) -> bool:
        """The masked-LM head's dense or norm has no bias: the package subclasses KerasHub's
        `MaskedLMHead`, which has both."""
        transform = self.ir.head.transform
        return (
            self.ir.head.task is Task.MASKED_LM
            and transform is not None
            and not (transform.dense_bias and transform.norm.bias)
        )

    @property
    def masked_lm_head_class(self) -> str:
        if self.bias_free_head:
            return f"{self.prefix}MaskedLMHead"
        return "keras_hub.layers.MaskedLMHead"

    # -- constructor arguments -----------------------------------------------------------------
    @property
    def custom_scale(self) -> bool:
        return attention_component.custom_scale(self.attention)

    @property
    def qkv_biased(self) -> bool:
        return attention_component.qkv_biased(self.attention)

    @property
    def projection_params(self) -> str:
        return attention_component.projection_params(self.attention)

    def projection_args(self, role: str) -> str:
        return attention_component.projection_args(self.attention, role)

    @property
    def attention_softcap(self) -> str:
        arg = f"self.{attention_component.SOFTCAP_ARG}"
        return softcap_component.expression("scores", arg)

    @property
    def final_logit_softcap(self) -> str:
        return softcap_component.expression("logits", "self.final_logit_softcap")

    @property
    def attention_extra_fields(self) -> list[str]:
        base = {"num_query_heads", "num_key_value_heads", "head_dim"}
        return [a.name for a in attention_component.args(self.attention) if a.name not in base]

    @property
    def rope_args(self) -> list[Arg]:
        return rope_component.args(self.rope) if self.rope else []

    @property
    def rope_fields(self) -> list[str]:
        return [a.name for a in self.rope_args]

    @property
    def rotary_fields(self) -> list[str]:
        return [rope_component.layer_arg(f) for f in self.rope_fields]

    def rope_arg(self, field: str) -> str:
        return rope_component.layer_arg(field)

    @property
    def sliding_window(self) -> int | None:
        """The window of the windowed layers (None when no layer has one)."""
        windows = {o.sliding_window for o in self.ir.layer_options} - {None}
        return max(windows) if windows else None

    @property
    def per_layer_window(self) -> bool:
        """Some layers attend to a window and others to every earlier token."""
        return len({o.sliding_window for o in self.ir.layer_options}) > 1

    def _layer_args(self, i: int) -> list[Arg]:
        """Arguments of layer `i`'s block, in order: sizes, then each component's settings."""
        block = self.ir.block_type(i)
        attention = block.attention
        norms = [c.spec for c in block.components if isinstance(c.spec, Norm)]
        if self.ir.head.final_norm is not None:
            norms.append(self.ir.head.final_norm)
        if self.ir.stem.embedding_norm is not None:
            norms.append(self.ir.stem.embedding_norm)
        if self.ir.stem.relative_table_norm is not None:
            norms.append(self.ir.stem.relative_table_norm)
        mlp, moe = self.mlp, self.moe  # both, when some layers have one and some the other
        groups: list[list[Arg]] = [
            [Arg("hidden_dim", self.ir.stem.hidden_dim, "int. Width of the hidden states.")],
            mlp_component.args(mlp) if mlp is not None else [],
            moe_component.args(moe, beside_mlp=mlp is not None) if moe is not None else [],
            attention_component.args(attention),
        ]
        groups += [norm_component.args(n) for n in norms]
        groups.append(rope_component.args(attention.rope or self.rope) if self.rope else [])
        if self.rope_per_layer:
            doc = "bool. Whether the layer rotates queries and keys (rope)."
            groups.append([Arg("use_rope", attention.rope is not None, doc)])
        for name in self.optional_norms:
            doc = f"bool. Whether the layer has `{name}` (else that step passes its input on)."
            present = any(c.name == name for c in block.components)
            groups.append([Arg(f"use_{name}", present, doc)])
        for step in block.steps:
            if isinstance(step, Scale):
                groups.append(scale_component.args(step.name, step.input, step.factor))
        if self.mixed_feedforward:
            sparse = any(isinstance(c.spec, Moe) for c in block.components)
            doc = "bool. Whether the feedforward is the mixture of experts (else the dense MLP)."
            groups.append([Arg("use_sparse_moe", sparse, doc)])
        if self.sliding_window:
            window = self.ir.layer_options[i].sliding_window
            doc = "int. Tokens each position attends to, itself included."
            if self.per_layer_window:
                doc = "int or None. Tokens each position attends to, itself included (None: all)."
            groups.append([Arg("sliding_window", window, doc)])
        merged = merge_args(groups)
        # KerasHub's order for the sizes (as its Llama), then each component's settings
        sizes = [a for name in BLOCK_SIZES for a in merged if a.name == name]
        return sizes + [a for a in merged if a.name not in BLOCK_SIZES]

    @cached_property
    def per_layer_args(self) -> dict[str, list]:
        """Block arguments whose value differs between layers: name -> value of each layer."""
        layers = [{a.name: a.value for a in self._layer_args(i)} for i in range(self.ir.num_layers)]
        names = [a.name for a in self.block_args]
        if any(list(values) != names for values in layers):
            raise UnsupportedModelError("layers of one block class take different arguments")
        return {
            name: [values[name] for values in layers]
            for name in names
            if len({repr(values[name]) for values in layers}) > 1
        }

    @cached_property
    def block_args(self) -> list[Arg]:
        """Arguments of the block class (the values of the first layer)."""
        return self._layer_args(0)

    @property
    def block_call_args(self) -> list[tuple[str, str]]:
        """(argument, backbone expression) for building block `i`: a per-layer argument is the
        backbone's list of them (`sliding_windows[i]`)."""
        return [
            (a.name, f"{a.name}s[i]" if a.name in self.per_layer_args else a.name)
            for a in self.block_args
        ]

    @property
    def block_fields(self) -> list[str]:
        return [a.name for a in self.block_args]

    @property
    def block_extra_fields(self) -> list[str]:
        """Block arguments the backbone passes through by name (all but the sizes it names)."""
        return [f for f in self.block_fields if f != "hidden_dim"]

    @cached_property
    def backbone_args(self) -> list[Arg]:
        stem, head = self.ir.stem, self.ir.head
        args = [
            Arg("vocabulary_size", stem.vocab_size, "int. Size of the token vocabulary."),
            Arg(
                "num_layers",
                self.ir.num_layers,
                "int. Number of layers, each applying the one shared block."
                if self.ir.shared_block
                else "int. Number of decoder blocks.",
            ),
        ]
        for arg in self.block_args:
            values = self.per_layer_args.get(arg.name)
            if values is None:
                args.append(arg)
            else:
                _, _, doc = arg.doc.partition(". ")
                args.append(Arg(f"{arg.name}s", values, f"list, one per layer. {doc}"))
        if stem.hf_embedding_projection is not None:
            args.append(
                Arg(
                    "embedding_dim",
                    stem.embedding_dim,
                    "int. Width of the token embeddings, projected to `hidden_dim` for the blocks "
                    "and back for the language-model head.",
                )
            )
        if stem.hf_token_types is not None:
            args.append(
                Arg("num_segments", stem.type_vocab_size, "int. Rows of the segment embedding.")
            )
        if stem.positions is Positions.LEARNED:
            args.append(
                Arg(
                    "max_sequence_length",
                    stem.max_positions - stem.position_offset,
                    "int. Rows of the learned position embedding.",
                )
            )
        if stem.positions is Positions.COUNTED:
            args.append(
                Arg(
                    "max_sequence_length",
                    stem.max_positions - stem.position_padding_id - 1,
                    "int. Longest sequence the position embedding covers.",
                )
            )
            args.append(
                Arg(
                    "position_padding_id",
                    stem.position_padding_id,
                    "int. The pad token id: positions count the other tokens from "
                    "`position_padding_id + 1` on, padding reads row `position_padding_id`.",
                )
            )
        if stem.positions is Positions.SINUSOIDAL:
            args.append(
                Arg(
                    "sinusoid_base",
                    stem.sinusoid_base,
                    "float. Base of the fixed sinusoidal positions' frequencies.",
                )
            )
        if stem.embedding_scale:
            args.append(
                Arg(
                    "embedding_scale",
                    stem.embedding_scale,
                    "float. Multiplies the token embeddings.",
                )
            )
        if self.backbone_head_transform:
            args += head_transform.args(head.transform)[1:]  # the epsilon; the activation is code
        if head.logit_scale is not None:
            args += scale_component.logit_args(head.logit_scale)
        if head.softcap is not None:
            args += softcap_component.args(head.softcap, "final_logit_softcap", "Final logits")
        args.append(
            Arg(
                "tie_word_embeddings",
                # a classifier's or bare encoder's backbone has no LM head: no separate
                # reverse embedding
                head.tied or head.task in (Task.TEXT_CLASSIFIER, Task.BASE),
                "bool. Whether the language-model head reuses the token embedding matrix.",
            )
        )
        return args

    @property
    def backbone_fields(self) -> list[str]:
        return [a.name for a in self.backbone_args]

    @property
    def backbone_config(self) -> dict[str, Any]:
        """The constructor arguments of this checkpoint's backbone."""
        return {a.name: a.value for a in self.backbone_args}

    @property
    def max_positions(self) -> int | None:
        """Longest sequence the model's learned positions cover (None: no limit)."""
        stem = self.ir.stem
        if stem.positions is Positions.COUNTED:
            return stem.max_positions - stem.position_padding_id - 1
        return stem.max_positions - stem.position_offset if stem.max_positions else None

    @property
    def embed_args(self) -> str:
        """Arguments of `backbone.embed()` in a cached forward pass."""
        if self.ir.stem.positions in (Positions.LEARNED, Positions.SINUSOIDAL):
            return "token_ids, start_index=cache_update_index"
        return "token_ids"

    @property
    def projected_embeddings(self) -> bool:
        return self.ir.stem.hf_embedding_projection is not None

    @property
    def token_logits(self) -> bool:
        """The backbone has the LM head (`token_logits()`): a causal LM's, or a masked LM's whose
        head is the vocabulary projection alone (BertGeneration, EuroBERT: no dense transform)."""
        head = self.ir.head
        return not self.encoder or (head.task is Task.MASKED_LM and head.transform is None)

    @property
    def head_bias(self) -> bool:
        """The backbone adds the LM head's bias (a masked-LM head's transform holds its own)."""
        return self.ir.head.bias and self.token_logits

    def activation_expr(self, x: str) -> str:
        return mlp_component.expression(self.mlp, x)

    @property
    def tokenizer_config(self) -> dict[str, Any]:
        return self.tokenizer.keras_kwargs()

    @property
    def preset_description(self) -> str:
        ir = self.ir
        return (
            f"{ir.num_layers}-layer {'encoder' if self.encoder else 'decoder'} ported from "
            f"{ir.source} ({ir.hf_model_class}) by hf2kh."
        )

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
            fraction = self.rope.rotary_dim / self.attention.head_dim
            config["rope_rotary_dim"] = max(2, int(head_dim * fraction) // 2 * 2)
        if "attention_scale" in config:
            config["attention_scale"] = head_dim**-0.5 * 0.5
        if "embedding_scale" in config:
            config["embedding_scale"] = 32**0.5
        if config.get("max_sequence_length"):
            config["max_sequence_length"] = min(config["max_sequence_length"], 64)
        if config.get("sliding_window"):
            config["sliding_window"] = min(config["sliding_window"], 4)
        for name in self.per_layer_args:
            # two layers: the first layer's value and the first that differs from it
            values = config.pop(f"{name}s")
            other = next(v for v in values if repr(v) != repr(values[0]))
            values = [values[0], other]
            if name == "sliding_window":
                values = [min(v, 4) if v else v for v in values]
            config[f"{name}s"] = values
        return config


def _with_norms_of(block, full):
    """`block` as the block type `full` when it is `full` with some norm steps left out (each
    passing its input on); else `block` itself."""
    have = {c.name for c in block.components}
    dropped = {c.name for c in full.components if isinstance(c.spec, Norm)} - have
    if not dropped or not have <= {c.name for c in full.components}:
        return block
    renamed: dict[str, str] = {}
    steps = []
    for step in full.steps:
        inputs = getattr(step, "inputs", None)
        if isinstance(step, Let) and step.component in dropped:
            renamed[step.out] = renamed.get(step.inputs[0], step.inputs[0])
            continue
        if inputs is not None:
            step = dataclasses.replace(step, inputs=tuple(renamed.get(v, v) for v in inputs))
        else:
            step = dataclasses.replace(step, input=renamed.get(step.input, step.input))
        renamed.pop(step.out, None)
        steps.append(step)
    without = dataclasses.replace(
        full,
        components=tuple(c for c in full.components if c.name not in dropped),
        steps=tuple(steps),
    )
    return full if _without_values(without, None) == _without_values(block, None) else block


def _without_values(block, rope):
    """`block` with the values a constructor argument carries blanked (rope parameters; a layer
    without rope, `use_rope`, as one with the model's `rope`), so block types that differ only
    in them compare equal."""
    components = []
    for c in block.components:
        spec = c.spec
        # a dense MLP in some layers and a mixture of experts in others (GLM-4.5's first dense
        # layers): one block class that builds the one or the other (`use_sparse_moe`)
        if isinstance(spec, (Mlp, Moe)):
            c = dataclasses.replace(c, hf_class="", weights=())
            spec = None
        if isinstance(spec, Attention) and (spec.rope or rope) is not None:
            blank = dataclasses.replace(spec.rope or rope, theta=0.0)
            spec = dataclasses.replace(spec, rope=blank)
        components.append(dataclasses.replace(c, spec=spec))
    return dataclasses.replace(block, components=tuple(components))
