"""Build the layer graph of a checkpoint's model from its config, on the `meta` device."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any
from unittest import mock

import torch

from hf2kh.errors import UnsupportedModelError
from hf2kh.inspect.blocks import group_blocks
from hf2kh.inspect.graph import LayerGraph, ModuleNode, ParamInfo, TiedParam
from hf2kh.inspect.record import Recording, record_forward

SAMPLE_BATCH = 2
SAMPLE_LENGTH = 8


def model_class_for(config, trust_remote_code: bool = False):
    """The transformers class named by `config.architectures`, else the task-less AutoModel.

    Only used to instantiate the checkpoint's own model; recognition never reads the name.
    """
    import transformers

    for arch in config.architectures or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code and auto_map:
        from transformers import AutoModel, AutoModelForCausalLM

        if "AutoModelForCausalLM" in auto_map:
            return AutoModelForCausalLM
        return AutoModel
    from transformers import AutoModel

    return AutoModel


def instantiate(
    config, device: str = "meta", dtype: torch.dtype | None = None, trust_remote_code=False
):
    """The model built from `config` on `device` (no weights are read)."""
    cls = model_class_for(config, trust_remote_code)
    # Eager attention: its matmuls, scaling, mask and softmax are recorded as separate calls, and
    # it is the float32 reference transformers itself tests against.
    kwargs: dict[str, Any] = {"attn_implementation": "eager"}
    if device == "meta":
        # Mixture-of-experts blocks: transformers 5 defaults `experts_implementation` to
        # "grouped_mm", and `integrations.moe._can_use_grouped_mm` rules that kernel out only on
        # cpu/cuda, so on `meta` it calls `torch.nn.functional.grouped_mm`, whose meta kernel
        # repeats the CUDA kernel's check and rejects float32 ("Expected inputs of BF16 type").
        # The "eager" loop cannot run on `meta` either: it asks which experts were hit
        # (`nonzero`, a data-dependent shape). "batched_mm" gathers each token's top-k expert
        # weights and multiplies them with `bmm`: the same function, with shapes that do not depend
        # on the routing, so it runs on `meta` in any dtype.
        kwargs["experts_implementation"] = "batched_mm"
        # `_from_config` writes these choices onto the config it is given; keep the caller's
        # config (which later builds the float32 reference) as it was.
        config = copy.deepcopy(config)
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    try:
        with torch.device(device):
            if hasattr(cls, "from_config"):
                model = cls.from_config(config, **kwargs)
            else:
                model = cls._from_config(config, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure here means transformers cannot build it
        raise UnsupportedModelError(
            f"transformers cannot build {cls.__name__} from this config: {_one_line(exc)}"
        ) from exc
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def sample_inputs(config, device: str = "meta") -> dict[str, torch.Tensor]:
    """A small padded batch; values do not matter on `meta`, only shapes."""
    shape = (SAMPLE_BATCH, SAMPLE_LENGTH)
    vocab = int(getattr(config, "vocab_size", 2) or 2)
    ids = (torch.arange(SAMPLE_BATCH * SAMPLE_LENGTH) % max(vocab - 1, 1) + 1).reshape(shape)
    mask = torch.ones(shape, dtype=torch.long)
    mask[1, : SAMPLE_LENGTH // 4] = 0  # left padding in the second row
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def build_graph(config, trust_remote_code: bool = False) -> LayerGraph:
    """Instantiate on `meta`, walk modules and parameters, record a sample forward."""
    return build_graph_and_model(config, trust_remote_code)[0]


# A model whose sample forward cannot run on `meta` (data-dependent code: `.item()`, `nonzero`,
# a cache it queries) is recorded on the CPU instead, with random weights, when it is at most this
# many parameters (1.2 GB in float32); a larger one is refused with the meta device's error.
CPU_FALLBACK_MAX_PARAMS = 300_000_000


def build_graph_and_model(config, trust_remote_code: bool = False):
    """The layer graph and the meta-device model (for probes), the graph recorded from the same
    model on `meta`, or on the CPU when its forward cannot run on `meta` and it is small."""
    # float32 whatever the config's dtype (a bfloat16 config builds a bfloat16 model, whose
    # probes would compute rotary tables and norms in bfloat16): the reference is float32
    model = instantiate(config, "meta", torch.float32, trust_remote_code=trust_remote_code)
    inputs = sample_inputs(config, "meta")
    try:
        with _meta_mask_checks():
            recording, _ = record_forward(model, inputs)
    except Exception as exc:  # noqa: BLE001 - a model whose forward cannot run on meta
        meta_error = (
            f"the sample forward of {type(model).__name__} failed on the meta device: "
            f"{_one_line(exc)}"
        )
        size = sum(p.numel() for p in model.parameters())
        if size > CPU_FALLBACK_MAX_PARAMS:
            raise UnsupportedModelError(
                f"{meta_error} (too large, {size:,} parameters, to record on the CPU instead)"
            ) from exc
        return _record_on_cpu(model, config, trust_remote_code, meta_error), model
    return graph_from_model(model, config, inputs, recording), model


def _record_on_cpu(meta_model, config, trust_remote_code: bool, meta_error: str) -> LayerGraph:
    """The layer graph recorded from the model built on the CPU with random weights: the same
    modules, parameters and dataflow as on `meta`, where data-dependent code can run."""
    torch.manual_seed(0)
    model = instantiate(config, "cpu", torch.float32, trust_remote_code=trust_remote_code)
    inputs = sample_inputs(config, "cpu")
    try:
        with torch.no_grad():
            recording, _ = record_forward(model, inputs)
    except Exception as exc:  # noqa: BLE001 - a model whose forward cannot run at all
        raise UnsupportedModelError(f"{meta_error}; on the CPU: {_one_line(exc)}") from exc
    graph = graph_from_model(model, config, inputs, recording)
    expected = {(n, tuple(p.shape)) for n, p in meta_model.named_parameters()}
    if {(p.name, p.shape) for p in graph.parameters} != expected:
        raise UnsupportedModelError(f"{meta_error}; on the CPU it builds other parameters")
    return graph


def _meta_mask_checks():
    """Answer transformers' "can the padding mask be skipped?" check without reading data.

    Bidirectional (encoder) masks call `padding_mask.all()` and branch on it, which cannot be
    evaluated on `meta`. The sample batch is padded (see `sample_inputs`), so on a real device the
    answer is "no": the mask is built, as it is here.
    """
    import transformers.masking_utils as masking

    if not hasattr(masking, "_ignore_bidirectional_mask_sdpa"):
        return contextlib.nullcontext()
    return mock.patch.object(
        masking, "_ignore_bidirectional_mask_sdpa", lambda *args, **kwargs: False
    )


def graph_from_model(model, config, inputs, recording: Recording) -> LayerGraph:
    parameters = [
        ParamInfo(name, tuple(p.shape), _dtype(p), name.rpartition(".")[0])
        for name, p in model.named_parameters()
    ]
    canonical: dict[int, str] = {}
    tied: list[TiedParam] = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in canonical and canonical[id(p)] != name:
            tied.append(TiedParam(name, canonical[id(p)]))
        canonical.setdefault(id(p), name)
    buffers = [
        ParamInfo(name, tuple(b.shape), _dtype(b), name.rpartition(".")[0])
        for name, b in model.named_buffers()
    ]
    modules: list[ModuleNode] = []
    calls_by_module: dict[str, list[int]] = {}
    for call in recording.calls:
        if call.kind == "module":
            calls_by_module.setdefault(call.target, []).append(call.index)
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        modules.append(
            ModuleNode(
                path=path,
                class_name=type(module).__name__,
                class_module=type(module).__module__,
                num_params=sum(p.numel() for p in module.parameters()),
                param_names=[f"{prefix}{n}" for n, _ in module.named_parameters(recurse=False)],
                children=[f"{prefix}{n}" for n, _ in module.named_children()],
                attributes=_scalar_attributes(module),
                calls=calls_by_module.get(path, []),
            )
        )
    graph = LayerGraph(
        model_type=getattr(config, "model_type", ""),
        architectures=list(getattr(config, "architectures", None) or []),
        model_class=type(model).__name__,
        config=_json_safe(config.to_dict()),
        sample_input={k: list(v.shape) for k, v in inputs.items()},
        parameters=parameters,
        tied=tied,
        buffers=buffers,
        modules=modules,
        calls=recording.calls,
        values=recording.values,
        block_groups=[],
    )
    graph.block_groups = group_blocks(graph)
    return graph


def _scalar_attributes(module: torch.nn.Module) -> dict[str, Any]:
    """Plain scalar settings a module keeps (eps, head counts, window, attention type...)."""
    found: dict[str, Any] = {}
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        if isinstance(value, (bool, int, float, str)) or value is None:
            found[key] = value
    return found


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _json_safe(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=repr))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
