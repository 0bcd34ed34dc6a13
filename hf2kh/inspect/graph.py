"""The layer graph: what `hf2kh inspect` records about a model, as plain typed dataclasses.

JSON schema (`SCHEMA_VERSION` is bumped on any incompatible change; readers must check it):

    {
      "schema_version": 1,
      "model_type": str, "architectures": [str], "model_class": str,
      "config": {...},                       # config.to_dict(), JSON-safe
      "sample_input": {"input_ids": [b, t], "attention_mask": [b, t]},
      "parameters": [{"name", "shape", "dtype", "module"}],    # == named_parameters()
      "tied": [{"name", "target"}],          # extra names of a shared tensor -> its canonical name
      "buffers": [{"name", "shape", "dtype", "module"}],
      "modules": [{"path", "class_name", "class_module", "num_params", "param_names",
                   "children", "attributes", "calls"}],  # == named_modules(); "" = root
      "calls": [{"index", "kind", "target", "scope", "inputs", "outputs", "constants"}],
      "values": [{"id", "shape", "dtype", "source"}],
      "block_groups": [{"container", "indices", "class_name", "variants", "shared"}]
    }

`calls` is the recorded sample forward in execution order. `kind` is "module" (a submodule's
forward: `target` is its path) or "function" (a torch function or tensor method: `target` is its
name). `scope` is the path of the innermost module running when the call was made, so the
functional code between a block's children (residual adds, rotary, scaling, masks) is the list of
"function" calls whose scope is the block. `inputs`/`outputs` are value ids; a value's `source`
is "input:<name>", "param:<name>", "buffer:<name>", "call:<index>" or "external".
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ParamInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    module: str


@dataclass(frozen=True)
class TiedParam:
    name: str
    target: str


@dataclass
class ModuleNode:
    path: str
    class_name: str
    class_module: str
    num_params: int
    param_names: list[str]
    children: list[str]
    attributes: dict[str, Any]
    calls: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Value:
    id: int
    shape: tuple[int, ...]
    dtype: str
    source: str


@dataclass
class Call:
    index: int
    kind: str  # "module" | "function"
    target: str
    scope: str
    inputs: list[int]
    outputs: list[int]
    constants: list[str] = field(default_factory=list)


@dataclass
class BlockVariant:
    indices: list[int]
    differences: list[str]


@dataclass
class BlockGroup:
    """Blocks `container.0`, `container.1`, ...; or, when `shared`, the one module `container`
    called once per layer (ALBERT's block shared by all layers), `indices` its calls in order."""

    container: str
    indices: list[int]
    class_name: str
    variants: list[BlockVariant]
    shared: bool = False

    @property
    def identical(self) -> bool:
        return len(self.variants) == 1

    def block(self, i: int) -> str:
        """The module path of layer `i`."""
        return self.container if self.shared else f"{self.container}.{i}"


@dataclass
class LayerGraph:
    model_type: str
    architectures: list[str]
    model_class: str
    config: dict[str, Any]
    sample_input: dict[str, list[int]]
    parameters: list[ParamInfo]
    tied: list[TiedParam]
    buffers: list[ParamInfo]
    modules: list[ModuleNode]
    calls: list[Call]
    values: list[Value]
    block_groups: list[BlockGroup]
    schema_version: int = SCHEMA_VERSION

    # -- lookups -------------------------------------------------------------------------------
    def module(self, path: str) -> ModuleNode:
        for node in self.modules:
            if node.path == path:
                return node
        raise KeyError(path)

    def value(self, value_id: int) -> Value:
        return self._values_by_id()[value_id]

    def _values_by_id(self) -> dict[int, Value]:
        cache = self.__dict__.get("_value_cache")
        if cache is None or len(cache) != len(self.values):
            cache = {v.id: v for v in self.values}
            self.__dict__["_value_cache"] = cache
        return cache

    # -- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not f.name.startswith("_")
        }
        data = {"schema_version": data.pop("schema_version"), **data}
        return data

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerGraph:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"layer graph schema {version}, this hf2kh reads {SCHEMA_VERSION}")
        groups = [
            BlockGroup(
                container=g["container"],
                indices=g["indices"],
                class_name=g["class_name"],
                variants=[BlockVariant(**v) for v in g["variants"]],
                shared=g.get("shared", False),
            )
            for g in data["block_groups"]
        ]
        return cls(
            model_type=data["model_type"],
            architectures=data["architectures"],
            model_class=data["model_class"],
            config=data["config"],
            sample_input=data["sample_input"],
            parameters=[_param(p) for p in data["parameters"]],
            tied=[TiedParam(**t) for t in data["tied"]],
            buffers=[_param(p) for p in data["buffers"]],
            modules=[ModuleNode(**m) for m in data["modules"]],
            calls=[Call(**c) for c in data["calls"]],
            values=[
                Value(v["id"], tuple(v["shape"]), v["dtype"], v["source"]) for v in data["values"]
            ],
            block_groups=groups,
        )


def _param(p: dict[str, Any]) -> ParamInfo:
    return ParamInfo(p["name"], tuple(p["shape"]), p["dtype"], p["module"])


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)
