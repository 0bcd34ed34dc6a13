"""`model_ir.json`: the IR as versioned JSON, and back.

Dataclasses become objects with a `"type"` tag (the class name) so unions (`Step`, a component's
spec) read back unambiguously; enums become their values. `IR_VERSION` is bumped on any
incompatible change; readers check it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any

from hf2kh.ir import model

IR_VERSION = 1

_CLASSES = {
    cls.__name__: cls
    for cls in vars(model).values()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls)
}


def to_dict(ir: model.ModelIR) -> dict[str, Any]:
    return {"ir_version": IR_VERSION, **_plain(ir)}


def write_json(ir: model.ModelIR, path: Path) -> None:
    path.write_text(json.dumps(to_dict(ir), indent=1) + "\n")


def from_dict(data: dict[str, Any]) -> model.ModelIR:
    version = data.get("ir_version")
    if version != IR_VERSION:
        raise ValueError(f"model IR version {version}, this hf2kh reads {IR_VERSION}")
    return _build(model.ModelIR, {k: v for k, v in data.items() if k != "ir_version"})


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        fields = {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {"type": type(obj).__name__, **fields}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [_plain(x) for x in obj]
    return obj


def _build(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls, vars(model))
    kwargs = {
        f.name: _value(hints[f.name], data[f.name])
        for f in dataclasses.fields(cls)
        if f.name in data
    }
    return cls(**kwargs)


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict) and "type" in value:
        cls = _CLASSES[value["type"]]
        return _build(cls, {k: v for k, v in value.items() if k != "type"})
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        enums = [a for a in options if isinstance(a, type) and issubclass(a, enum.Enum)]
        return enums[0](value) if enums else _value(options[0], value)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], v) for v in value)
        return tuple(_value(a, v) for a, v in zip(args, value, strict=True))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    return value
