"""Resolve a Hugging Face hub id to a local snapshot directory.

Only the files a port needs are fetched: `config.json`, safetensors weights and their index,
tokenizer files, and (only when asked for) pickled `pytorch_model*.bin` weights or the repo's own
`*.py` code. The normal HF cache is used. `HF_HUB_OFFLINE` (and `HF_HOME` / `HF_HUB_CACHE`) are read
when the function is called, not when `huggingface_hub` was imported, so late settings are obeyed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors
from huggingface_hub.utils import validate_repo_id

from hf2kh.errors import SourceError

CONFIG_FILES = ("config.json", "generation_config.json")

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "spm.model",
    "tokenizer.tiktoken",
    "chat_template.jinja",
    "chat_template.json",
)

SAFETENSORS_PATTERNS = ("model.safetensors", "model.safetensors.index.json", "model-*.safetensors")
PICKLE_PATTERNS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin")
REMOTE_CODE_PATTERNS = ("*.py",)

_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}


def is_repo_id(text: str) -> bool:
    """Whether `text` is a syntactically valid hub id (`name` or `owner/name`)."""
    if not text or text.startswith((".", "/", "~")) or "\\" in text:
        return False
    try:
        validate_repo_id(text)
    except (hub_errors.HFValidationError, ValueError):
        return False
    return True


def hub_offline() -> bool:
    """`HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE` as set now (else the import-time value)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name)
        if value:
            return value.strip().lower() in _TRUE
    return bool(hub_constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> str:
    """The HF hub cache directory as the environment says now."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(name)
        if value:
            return os.path.expanduser(os.path.expandvars(value))
    home = os.environ.get("HF_HOME")
    if home:
        return os.path.join(os.path.expanduser(os.path.expandvars(home)), "hub")
    return hub_constants.HF_HUB_CACHE


def download_snapshot(
    repo_id: str,
    *,
    revision: str | None,
    token: str | None,
    patterns: tuple[str, ...],
) -> tuple[Path, str | None]:
    """Fetch the files matching `patterns` from `repo_id`; return (snapshot dir, commit sha).

    Every failure becomes a one-line `SourceError`.
    """
    token = token or os.environ.get("HF_TOKEN") or None
    offline = hub_offline()
    where = f"'{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    try:
        path = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            token=token,
            cache_dir=hub_cache_dir(),
            local_files_only=offline,
            allow_patterns=list(patterns),
        )
    except hub_errors.IncompleteSnapshotError as error:
        raise SourceError(
            f"the cached copy of hub repo {where} is incomplete and the hub cannot be reached"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}; re-run with network access to "
            "complete the download"
        ) from error
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled) as error:
        if offline:
            raise SourceError(
                f"{where} is not a local directory and is not in the HF cache ({hub_cache_dir()}), "
                "and HF_HUB_OFFLINE is set; download it once with network access, unset "
                "HF_HUB_OFFLINE, or pass a local checkpoint directory"
            ) from error
        raise SourceError(
            f"{where} is not a local directory, is not in the HF cache, and the Hugging Face hub "
            "cannot be reached; check the network connection or pass a local checkpoint directory"
        ) from error
    except hub_errors.GatedRepoError as error:
        raise SourceError(
            f"hub repo '{repo_id}' is gated; accept its terms at https://huggingface.co/{repo_id} "
            "and pass --token (or set HF_TOKEN) for an account that has access"
        ) from error
    except hub_errors.RevisionNotFoundError as error:
        raise SourceError(
            f"revision '{revision}' does not exist in hub repo '{repo_id}'; check --revision"
        ) from error
    except hub_errors.RepositoryNotFoundError as error:
        raise SourceError(
            f"'{repo_id}' is neither a local directory nor a hub repo you can access; check the "
            "path or id, and for a private repo pass --token (or set HF_TOKEN)"
        ) from error
    except hub_errors.HfHubHTTPError as error:
        raise SourceError(
            f"downloading hub repo {where} failed: {one_line(error)}; check --token / HF_TOKEN "
            "and try again"
        ) from error
    except (OSError, ValueError) as error:
        raise SourceError(
            f"downloading hub repo {where} failed: {one_line(error)}; check the network "
            "connection, or set HF_HUB_OFFLINE=1 to use the HF cache only"
        ) from error
    except Exception as error:  # network library errors (httpx) do not share a base with OSError
        if type(error).__module__.split(".")[0] not in {"httpx", "httpcore", "httpx2", "requests"}:
            raise
        raise SourceError(
            f"downloading hub repo {where} failed: {one_line(error)}; check the network "
            "connection, or set HF_HUB_OFFLINE=1 to use the HF cache only"
        ) from error
    snapshot = Path(path)
    sha = snapshot.name if _COMMIT_SHA.match(snapshot.name) else None
    if sha is None and revision and _COMMIT_SHA.match(revision):
        sha = revision
    return snapshot, sha


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """An exception message collapsed to one short line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
