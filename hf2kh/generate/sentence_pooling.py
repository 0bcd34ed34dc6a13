"""A sentence-transformers checkpoint's pooling, read from its files, for the generated
`<name>_sentence_embedding.py`.

sentence-transformers stores its pipeline beside the transformer's files: `modules.json` lists
the modules in order (`Transformer`, then `Pooling` with its `1_Pooling/config.json`, then an
optional `Normalize`), and `sentence_bert_config.json` the length texts are truncated to. Only
what the generated function reproduces is accepted: one of mean, CLS or max pooling, then an
optional L2 normalization; any other module or pooling mode stops the port with one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hf2kh.errors import UnsupportedModelError

MODULES = "sentence_transformers.models."
# `1_Pooling/config.json` keys -> the generated function's mode
MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}
UNSUPPORTED_MODES = (
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


@dataclass(frozen=True)
class SentencePooling:
    mode: str  # "mean" | "cls" | "max"
    normalize: bool  # L2-normalized after pooling (a `Normalize` module)
    max_seq_length: int | None  # sentence-transformers truncates texts to this many tokens


def read_pooling(checkpoint_dir: Path) -> SentencePooling | None:
    """The checkpoint's sentence-transformers pooling, or None without a `modules.json`."""
    modules_file = checkpoint_dir / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _json(modules_file)
    kinds = [str(m.get("type", "")).removeprefix(MODULES) for m in modules]
    if not kinds or kinds[0] != "Transformer":
        raise UnsupportedModelError(f"modules.json does not start with a Transformer: {kinds}")
    allowed = (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"])
    if kinds not in allowed:
        raise UnsupportedModelError(
            f"sentence-transformers modules {kinds} in modules.json: only Transformer, Pooling "
            "and an optional Normalize are supported"
        )
    pooling_dir = checkpoint_dir / modules[1].get("path", "")
    config = _json(pooling_dir / "config.json")
    unsupported = [k for k in UNSUPPORTED_MODES if config.get(k)]
    if unsupported or config.get("include_prompt") is False:
        raise UnsupportedModelError(
            f"sentence-transformers pooling {unsupported or 'without the prompt'} in "
            f"{pooling_dir.name}/config.json: only mean, CLS or max pooling is supported"
        )
    modes = [mode for key, mode in MODES.items() if config.get(key)]
    if len(modes) != 1:
        raise UnsupportedModelError(
            f"{pooling_dir.name}/config.json asks for {len(modes)} pooling modes "
            f"({', '.join(modes) or 'none'}); exactly one is supported"
        )
    bert_config = checkpoint_dir / "sentence_bert_config.json"
    max_seq_length = _json(bert_config).get("max_seq_length") if bert_config.is_file() else None
    return SentencePooling(modes[0], kinds[-1] == "Normalize", max_seq_length)


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UnsupportedModelError(f"cannot read {path.name}: {e}") from None
