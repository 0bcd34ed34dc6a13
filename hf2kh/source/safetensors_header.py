"""Read and validate a safetensors header without touching tensor data.

Layout: 8 bytes little-endian u64 `n`, `n` bytes of JSON (`{name: {dtype, shape, data_offsets}}`
plus an optional `__metadata__`), then the tensor bytes. The checks mirror the `safetensors`
library's own, so a file that passes here also opens with `safe_open`; failures name the file and
say what to do.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from hf2kh.errors import SourceError

MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors library enforces

# safetensors dtype -> (canonical name, bits per element; None where the packing is exotic)
DTYPES: dict[str, tuple[str, int | None]] = {
    "BOOL": ("bool", 8),
    "U8": ("uint8", 8),
    "I8": ("int8", 8),
    "U16": ("uint16", 16),
    "I16": ("int16", 16),
    "U32": ("uint32", 32),
    "I32": ("int32", 32),
    "U64": ("uint64", 64),
    "I64": ("int64", 64),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "F32": ("float32", 32),
    "F64": ("float64", 64),
    "C64": ("complex64", 64),
    "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E5M2": ("float8_e5m2", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "F4": ("float4_e2m1fn_x2", None),
    "F6_E2M3": ("float6_e2m3", None),
    "F6_E3M2": ("float6_e3m2", None),
}


@dataclass(frozen=True)
class HeaderEntry:
    name: str
    shape: tuple[int, ...]
    dtype: str  # canonical name, e.g. "float32", "bfloat16"
    begin: int
    end: int


def _corrupt(path: Path, what: str) -> SourceError:
    return SourceError(
        f"{path} is not a valid safetensors file ({what}); re-download or re-save the checkpoint"
    )


def _truncated(path: Path, what: str) -> SourceError:
    return SourceError(
        f"{path} is truncated ({what}); the download or save was interrupted, re-download or "
        "re-save the checkpoint"
    )


def read_header(path: Path) -> list[HeaderEntry]:
    """Parse and validate the header of `path`; return its tensors in file order."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise _truncated(path, f"{size} bytes, shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", prefix)
            if n == 0 or n > MAX_HEADER_BYTES:
                raise _corrupt(path, f"header length {n} is out of range")
            if 8 + n > size:
                raise _truncated(path, f"header of {n} bytes but the file has only {size} bytes")
            raw = handle.read(n)
    except OSError as error:
        raise SourceError(
            f"cannot read {path}: {error.strerror or error}; check the file"
        ) from error
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _corrupt(path, f"header is not valid JSON: {error}") from error
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        entries.append(_entry(path, name, info))
    data_size = size - 8 - n
    entries.sort(key=lambda e: (e.begin, e.end))
    offset = 0
    for entry in entries:
        if entry.begin != offset:
            raise _corrupt(
                path, f"tensor '{entry.name}' data does not start where the previous ends"
            )
        offset = entry.end
    if offset > data_size:
        raise _truncated(
            path, f"header describes {offset} bytes of tensor data but only {data_size} are present"
        )
    if offset < data_size:
        raise _corrupt(path, f"{data_size - offset} bytes after the last tensor")
    return entries


def _entry(path: Path, name: str, info: object) -> HeaderEntry:
    if not isinstance(info, dict):
        raise _corrupt(path, f"entry '{name}' is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPES:
        raise _corrupt(path, f"tensor '{name}' has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _corrupt(path, f"tensor '{name}' has invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise _corrupt(path, f"tensor '{name}' has invalid data_offsets {offsets!r}")
    canonical, bits = DTYPES[dtype]
    if bits is not None:
        nbytes = math.prod(shape) * bits // 8
        if offsets[1] - offsets[0] != nbytes:
            raise _corrupt(
                path,
                f"tensor '{name}' spans {offsets[1] - offsets[0]} bytes but {dtype}{shape} "
                f"needs {nbytes}",
            )
    return HeaderEntry(name, tuple(shape), canonical, offsets[0], offsets[1])
