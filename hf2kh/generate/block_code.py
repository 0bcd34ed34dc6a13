"""The decoder block's code, printed from its steps (`torch.fx`'s `Graph.python_code` in small).

Each component contributes the lines that build its layers; each step becomes one statement of
`call()`: `h = self.self_attention_layernorm.call(x)`, `x = x + attention`, ... The block template
only places these lines.

A block invokes its own sublayers through their `call()`: the block's `__call__` has already
built them, converted the inputs and opened the dtype policy's autocast scope, and skipping
Keras' per-call bookkeeping (about 90 us a call on the torch backend, 11 calls per block, once the
largest overhead of a cached decoding step) makes generation about 1.5x faster. Keras' own
`LayerNormalization` is the exception: it opts out of autocasting, which only its own `__call__`
honours.
"""

from __future__ import annotations

from hf2kh.components import mlp as mlp_component
from hf2kh.components import moe as moe_component
from hf2kh.ir import Add, Attention, Let, Mlp, Moe, Norm, NormKind, Scale

SHAPE = "decoder_sequence_shape"


class BlockCode:
    def __init__(self, ctx):
        self.ctx = ctx
        self.block = ctx.block
        # the argument of `build()`; encoder blocks have no key/value cache
        self.shape = "encoder_sequence_shape" if ctx.encoder else SHAPE
        self.cached = not ctx.encoder

    @staticmethod
    def _keras_layer_norm(component) -> bool:
        """Whether `component` is a Keras `LayerNormalization` (called through `__call__`)."""
        return isinstance(component.spec, Norm) and component.spec.kind is not NormKind.RMS

    def invoke(self, name: str) -> str:
        """The expression that calls sublayer `name` (without its arguments): `self.name.call`,
        or `self.name` for a Keras `LayerNormalization` (see the module's docstring)."""
        if self._keras_layer_norm(self.block.component(name)):
            return f"self.{name}"
        return f"self.{name}.call"

    @property
    def keeps_call(self) -> bool:
        """Whether some sublayer (a Keras `LayerNormalization`) is called through `__call__`."""
        return any(self._keras_layer_norm(c) for c in self.block.components)

    # -- build() -------------------------------------------------------------------------------
    @property
    def build_lines(self) -> list[str]:
        lines: list[str] = []
        for component in self.block.components:
            spec = component.spec
            if isinstance(spec, Norm):
                layer = self.ctx.norm_layer(
                    spec, "self.layer_norm_epsilon", component.name, "self.dtype_policy"
                )
                built = [
                    f"self.{component.name} = {layer}",
                    f"self.{component.name}.build({self.shape})",
                ]
                if component.name in self.ctx.optional_norms:  # not in every layer
                    built = [
                        f"self.{component.name} = None",
                        f"if self.use_{component.name}:",
                        *(f"    {line}" for line in built),
                    ]
                lines += built
            elif isinstance(spec, Attention):
                lines += self._attention_build(component.name)
            elif isinstance(spec, (Mlp, Moe)):
                lines += self._feedforward_build(component.name)
        return lines

    def _feedforward_build(self, name: str) -> list[str]:
        """The dense MLP's layers, the mixture of experts, or (layers differing in it) either,
        as `use_sparse_moe` says."""
        ctx = self.ctx
        moe = []
        if ctx.moe is not None:
            moe = moe_component.build_lines(
                ctx.moe, ctx.prefix, name, self.shape, ctx.mixed_feedforward
            )
        if not ctx.mixed_feedforward:
            return moe or self._mlp_build(ctx.mlp)
        dense = self._mlp_build(ctx.mlp)
        return [
            "if self.use_sparse_moe:",
            *(f"    {line}" for line in moe),
            "else:",
            *(f"    {line}" for line in dense),
        ]

    def _attention_build(self, name: str) -> list[str]:
        ctx = self.ctx
        args = ["num_query_heads", "num_key_value_heads", "head_dim", *ctx.attention_extra_fields]
        lines = [f"self.{name} = {ctx.prefix}Attention("]
        lines += [f"    {a}=self.{a}," for a in args]
        if ctx.rope is not None:
            rotary = [f"{ctx.prefix}RotaryEmbedding("]
            rotary += [f"    {ctx.rope_arg(f)}=self.{f}," for f in ctx.rope_fields]
            rotary += ["    dtype=self.dtype_policy,", ")"]
            if ctx.rope_per_layer:  # a layer without rope gets no rotary embedding
                rotary = ["(", *(f"    {r}" for r in rotary), "    if self.use_rope"]
                rotary += ["    else None", ")"]
            lines.append(f"    rotary_embedding={rotary[0]}")
            lines += [f"    {r}" for r in rotary[1:-1]] + [f"    {rotary[-1]},"]
        lines += [
            "    kernel_initializer=self.kernel_initializer,",
            "    dtype=self.dtype_policy,",
            f'    name="{name}",',
            ")",
            f"self.{name}.build({self.shape})",
        ]
        return lines

    def _mlp_build(self, mlp: Mlp) -> list[str]:
        layers = mlp_component.LAYERS
        lines = []
        if mlp.gated:
            lines += [
                f'self.{layers["gate"]} = self._dense(self.intermediate_dim, "{layers["gate"]}")',
                f"self.{layers['gate']}.build({self.shape})",
            ]
        lines += [
            f'self.{layers["up"]} = self._dense(self.intermediate_dim, "{layers["up"]}")',
            f"self.{layers['up']}.build({self.shape})",
            f'self.{layers["down"]} = self._dense(self.hidden_dim, "{layers["down"]}")',
            f"self.{layers['down']}.build((None, None, self.intermediate_dim))",
        ]
        return lines

    # -- call() --------------------------------------------------------------------------------
    @property
    def call_lines(self) -> list[str]:
        lines = []
        for step in self.block.steps:
            if isinstance(step, Add):
                lines.append(f"{step.out} = {step.inputs[0]} + {step.inputs[1]}")
                continue
            if isinstance(step, Scale):
                lines.append(f"{step.out} = {step.input} * self.{step.name}")
                continue
            spec = self.block.component(step.component).spec
            (source,) = step.inputs
            call = self.invoke(step.component)
            if isinstance(spec, Attention) and spec.relative is not None:
                lines += [
                    f"{step.out} = {call}(",
                    f"    {source}, attention_mask=mask, relative_embeddings=relative_embeddings",
                    ")",
                ]
            elif isinstance(spec, Attention) and not self.cached:
                lines.append(f"{step.out} = {call}({source}, attention_mask=mask)")
            elif isinstance(spec, Attention):
                lines += [
                    f"{step.out} = {call}(",
                    f"    {source}, attention_mask=mask, cache=cache, "
                    "cache_update_index=cache_update_index",
                    ")",
                    "if cache is not None:",
                    f"    {step.out}, cache = {step.out}",
                ]
            elif isinstance(spec, (Mlp, Moe)) and self.ctx.mixed_feedforward:
                lines += [
                    "if self.use_sparse_moe:",
                    f"    {step.out} = {call}({source})",
                    "else:",
                    f"    {step.out} = self._feedforward({source})",
                ]
            elif isinstance(spec, Mlp):
                lines.append(f"{step.out} = self._feedforward({source})")
            elif step.component in self.ctx.optional_norms:
                lines.append(
                    f"{step.out} = {call}({source}) if self.use_{step.component} else {source}"
                )
            else:
                lines.append(f"{step.out} = {call}({source})")
        return lines

    @property
    def output(self) -> str:
        return self.block.output

    @property
    def feedforward_lines(self) -> list[str]:
        mlp = self.ctx.mlp
        layers = mlp_component.LAYERS
        if mlp is None:  # a mixture of experts is its own layer
            return []
        if mlp.gated:
            gate = mlp_component.expression(mlp, f"self.{layers['gate']}.call(x)")
            return [
                f"gate = {gate}",
                f"return self.{layers['down']}.call(gate * self.{layers['up']}.call(x))",
            ]
        hidden = mlp_component.expression(mlp, f"self.{layers['up']}.call(x)")
        return [f"x = {hidden}", f"return self.{layers['down']}.call(x)"]

    # -- docs ----------------------------------------------------------------------------------
    @property
    def step_text(self) -> list[str]:
        """The steps as one line each, for the block's docstring."""
        text = []
        for step in self.block.steps:
            if isinstance(step, Let):
                text.append(f"{step.out} = {step.component}({', '.join(step.inputs)})")
            elif isinstance(step, Scale):
                text.append(f"{step.out} = {step.input} * {step.name}")
            else:
                text.append(f"{step.out} = {' + '.join(step.inputs)}")
        return text

    @property
    def mlp_text(self) -> str:
        mlp = self.ctx.mlp
        routed = "sum of the routed experts' down(act(gate(x)) * up(x))"
        if mlp is None:
            return routed
        if self.ctx.mixed_feedforward:
            act = mlp.activation.value
            return f"down({act}(gate(x)) * up(x)) (with use_sparse_moe: the {routed})"
        act = mlp.activation.value
        return f"down({act}(gate(x)) * up(x))" if mlp.gated else f"down({act}(up(x)))"
