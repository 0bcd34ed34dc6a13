"""Open a checkpoint: a local directory in HF layout, or a hub id fetched into the HF cache.

`open_checkpoint` checks everything a port relies on up front (config, remote code, weight files and
their headers) and raises `SourceError` with one actionable line for every expected failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hf2kh.errors import SourceError
from hf2kh.source import hub
from hf2kh.source.weights import (
    NO_WEIGHTS,
    SAFETENSORS_INDEX,
    SAFETENSORS_SINGLE,
    find_weights,
)

if TYPE_CHECKING:
    import transformers


@dataclass(frozen=True)
class Checkpoint:
    repo: str  # what the user passed (dir or hub id)
    path: Path  # local directory holding the files
    revision: str | None  # resolved commit sha for hub ids, None for local dirs
    config: dict  # parsed config.json
    model_type: str
    weight_files: tuple[Path, ...]  # safetensors files (single or all shards), or .bin when allowed
    weight_format: str  # "safetensors" or "pickle" ("none" when opened with need_weights=False)
    tokenizer_files: tuple[Path, ...]  # the tokenizer files that exist, see hub.TOKENIZER_FILES
    trust_remote_code: bool


def open_checkpoint(
    repo: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    need_weights: bool = True,
) -> Checkpoint:
    """Resolve `repo` (local directory or hub id) and validate it; see the module docstring."""
    repo = str(repo)
    local = Path(repo).expanduser()
    if repo and local.exists():
        if not local.is_dir():
            raise SourceError(
                f"{repo} is a file, not a checkpoint directory; pass the directory that holds "
                "config.json and the weights"
            )
        if revision is not None:
            raise SourceError(
                f"--revision applies to hub ids, but {repo} is a local directory; drop --revision "
                "or pass a hub id"
            )
        path, sha, label = local, None, repo
        config = read_config(path, label)
        check_remote_code(config, trust_remote_code=trust_remote_code, label=label)
        weight_files, weight_format = (
            find_weights(path, allow_pickle=allow_pickle, label=label)
            if need_weights
            else ((), NO_WEIGHTS)
        )
    elif hub.is_repo_id(repo):
        path, sha, config, weight_files, weight_format = _open_hub(
            repo,
            revision=revision,
            token=token,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            need_weights=need_weights,
        )
    else:
        raise SourceError(
            f"path '{repo}' does not exist (and it is not a valid hub id); pass an existing "
            "checkpoint directory or a hub id like 'owner/name'"
        )
    return Checkpoint(
        repo=repo,
        path=path,
        revision=sha,
        config=config,
        model_type=config["model_type"],
        weight_files=weight_files,
        weight_format=weight_format,
        tokenizer_files=tuple(
            path / name for name in hub.TOKENIZER_FILES if (path / name).is_file()
        ),
        trust_remote_code=trust_remote_code,
    )


def _open_hub(
    repo: str,
    *,
    revision: str | None,
    token: str | None,
    allow_pickle: bool,
    trust_remote_code: bool,
    need_weights: bool,
) -> tuple[Path, str | None, dict, tuple[Path, ...], str]:
    """Fetch in stages (config first), so nothing large is downloaded for a checkpoint we refuse."""
    patterns = hub.CONFIG_FILES + hub.TOKENIZER_FILES
    if trust_remote_code:
        patterns += hub.REMOTE_CODE_PATTERNS
    path, sha = hub.download_snapshot(repo, revision=revision, token=token, patterns=patterns)
    label = f"hub repo '{repo}'" + (f" @ {sha[:12]}" if sha else "")
    config = read_config(path, label)
    check_remote_code(config, trust_remote_code=trust_remote_code, label=label)
    if not need_weights:
        return path, sha, config, (), NO_WEIGHTS
    pinned = sha or revision
    path, _ = hub.download_snapshot(
        repo, revision=pinned, token=token, patterns=hub.SAFETENSORS_PATTERNS
    )
    if not (path / SAFETENSORS_SINGLE).is_file() and not (path / SAFETENSORS_INDEX).is_file():
        if not allow_pickle:
            raise SourceError(
                f"{label} has no safetensors weights (model.safetensors or "
                "model.safetensors.index.json); if it has only pytorch_model.bin, pass "
                "--allow-pickle if you trust it (loaded with torch.load(weights_only=True))"
            )
        path, _ = hub.download_snapshot(
            repo, revision=pinned, token=token, patterns=hub.PICKLE_PATTERNS
        )
    weight_files, weight_format = find_weights(path, allow_pickle=allow_pickle, label=label)
    return path, sha, config, weight_files, weight_format


def read_config(path: Path, label: str) -> dict:
    """Parse `config.json` and check that it names a `model_type`."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise SourceError(
            f"{label} has no config.json; pass a Hugging Face transformers checkpoint (the "
            "directory save_pretrained writes)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SourceError(
            f"{config_path} is not valid JSON ({error.msg} at line {error.lineno} column "
            f"{error.colno}); fix or re-download it"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(
            f"cannot read {config_path} ({hub.one_line(error)}); check the file"
        ) from error
    if not isinstance(config, dict):
        raise SourceError(f"{config_path} is not a JSON object; fix or re-download it")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise SourceError(
            f"{config_path} has no model_type, so transformers cannot tell which architecture "
            "it is; add the model_type the checkpoint was saved with, or pass a transformers "
            "checkpoint"
        )
    return config


def check_remote_code(config: dict, *, trust_remote_code: bool, label: str) -> None:
    """Refuse checkpoints that need their own Python code unless the user trusts them."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config["model_type"]
    known = model_type in CONFIG_MAPPING
    has_code = bool(config.get("auto_map"))
    if has_code and not trust_remote_code:
        raise SourceError(
            f"{label} ships its own model code (auto_map in config.json), which would run on "
            "this machine; pass --trust-remote-code if you trust it"
        )
    if not known and not has_code:
        import transformers

        raise SourceError(
            f"model_type '{model_type}' of {label} is not known to transformers "
            f"{transformers.__version__} and the checkpoint ships no code for it; upgrade "
            "transformers or check config.json"
        )


def load_config(ckpt: Checkpoint) -> transformers.PretrainedConfig:
    """The transformers config object, built from the checkpoint directory."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(ckpt.path), trust_remote_code=ckpt.trust_remote_code)
    except Exception as error:  # any failure here is about the checkpoint's config
        raise SourceError(
            f"transformers cannot build a config from {ckpt.path / 'config.json'} "
            f"({type(error).__name__}: {hub.one_line(error)}); fix config.json or upgrade "
            "transformers"
        ) from error
