"""Reading the checkpoint: the tokenizer pipeline transformers runs -> `TokenizerSpec`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf2kh.errors import SourceError, UnsupportedModelError
from hf2kh.generate.tokenizer.spec import Framing, TokenizerSpec

_KERAS_BASES = {
    "byte_bpe": "BytePairTokenizer",
    "sentencepiece": "SentencePieceTokenizer",
    "wordpiece": "WordPieceTokenizer",
}
_ASSET_FILES = {
    "byte_bpe": ("vocabulary.json", "merges.txt"),
    "sentencepiece": ("vocabulary.spm",),
    "wordpiece": ("vocabulary.txt",),
}
_UNICODE_FORMS = ("NFC", "NFKC", "NFD", "NFKD")
_SPACE_MARK = "\u2581"
# Normalizers a SentencePiece-style tokenizer may run on the text (ALBERT: quote Replaces, NFKD,
# StripAccents, Lowercase, Precompiled; XLM-R: Precompiled): the generated tokenizer runs HF's
# own normalizer with the `tokenizers` library.
_TEXT_NORMALIZERS = (
    "Replace",
    "NFC",
    "NFD",
    "NFKC",
    "NFKD",
    "StripAccents",
    "Lowercase",
    "Precompiled",
    "Strip",
)


@dataclass
class _HFView:
    """The tokenizer as transformers runs it."""

    backend: dict  # the effective `tokenizers` pipeline, in tokenizer.json form
    hf: Any  # the transformers tokenizer, or None when AutoTokenizer cannot load the directory
    config: dict  # tokenizer_config.json (+ special_tokens_map.json), {} when absent
    directory: Path


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: cannot read it as JSON ({exc}).") from exc


def _load_view(checkpoint_dir: Path) -> _HFView:
    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise SourceError(f"{directory}: not a directory; pass a checkpoint directory.")
    config = {**_read_json(directory / "special_tokens_map.json")}
    config.update(_read_json(directory / "tokenizer_config.json"))
    hf = None
    failure = ""
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(
            str(directory), trust_remote_code=False, local_files_only=True
        )
    except Exception as exc:  # noqa: BLE001 - any failure falls back to tokenizer.json
        failure = f"{type(exc).__name__}: {exc}".splitlines()[0]
    backend_obj = getattr(hf, "backend_tokenizer", None) if hf is not None else None
    if backend_obj is not None:
        backend = json.loads(backend_obj.to_str())
    elif (directory / "tokenizer.json").is_file():
        backend = _read_json(directory / "tokenizer.json")
        hf = None
    else:
        why = f" (transformers: {failure})" if failure else ""
        raise SourceError(
            f"{directory}: no tokenizer that can be read: transformers cannot load it and there is "
            f"no tokenizer.json{why}. Add the tokenizer files of the checkpoint."
        )
    if not isinstance(backend.get("model"), dict):
        raise SourceError(f"{directory}: tokenizer pipeline has no model section.")
    return _HFView(backend=backend, hf=hf, config=config, directory=directory)


def _flatten(component: dict | None, list_key: str) -> list[dict]:
    """A normalizer / pre-tokenizer as a flat list (`Sequence`s unrolled, None -> [])."""
    if not component:
        return []
    if component.get("type") == "Sequence":
        out: list[dict] = []
        for item in component.get(list_key) or []:
            out.extend(_flatten(item, list_key))
        return out
    return [component]


def _token_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("content")
    return str(value)


def _vocab_ids(view: _HFView) -> dict[str, int]:
    """token -> id over the model vocabulary and the added tokens."""
    model = view.backend["model"]
    vocab = model.get("vocab")
    if isinstance(vocab, dict):
        ids = dict(vocab)
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        ids = {}
        for index, item in enumerate(vocab):
            ids.setdefault(item[0] if isinstance(item, list | tuple) else item, index)
    else:
        raise SourceError(f"{view.directory}: tokenizer model has no vocabulary.")
    for added in view.backend.get("added_tokens") or []:
        ids[added["content"]] = added["id"]
    return ids


def _encoder(view: _HFView):
    """`encode(text, add_special_tokens) -> list[int]` as HF's `tokenizer(text)` does it."""
    if view.hf is not None:
        hf = view.hf

        def encode(text: str, add_special_tokens: bool) -> list[int]:
            return list(hf(text, add_special_tokens=add_special_tokens)["input_ids"])

        return encode
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(json.dumps(view.backend))

    def encode(text: str, add_special_tokens: bool) -> list[int]:
        return list(backend.encode(text, add_special_tokens=add_special_tokens).ids)

    return encode


def _added_framing(view: _HFView) -> tuple[list[int], list[int]]:
    """The ids `tokenizer(text)` puts before and after the text's own ids."""
    encode = _encoder(view)
    for probe in ("hello world", "a", "1"):
        plain = encode(probe, False)
        framed = encode(probe, True)
        if not plain:
            continue
        for start in range(len(framed) - len(plain) + 1):
            if framed[start : start + len(plain)] == plain:
                return framed[:start], framed[start + len(plain) :]
    raise UnsupportedModelError(
        f"{view.directory}: cannot tell which special tokens the tokenizer adds (the ids with "
        "special tokens do not contain the ids without them)."
    )


_PAIR_PROBES = (("hello world", "a b"), ("1", "the x"))


def _encode_pair(view: _HFView, first: str, second: str) -> tuple[list[int], list[int] | None]:
    """ids and token_type_ids (None when HF does not return them) of `tokenizer(first, second)`."""
    if view.hf is not None:
        out = view.hf(first, second)
        types = out.get("token_type_ids")
        return list(out["input_ids"]), None if types is None else list(types)
    from tokenizers import Tokenizer

    encoding = Tokenizer.from_str(json.dumps(view.backend)).encode(first, second)
    return list(encoding.ids), list(encoding.type_ids)


def _framing(view: _HFView, start: list[int], end: list[int], id_to_token) -> Framing | None:
    """Measure the pair layout; None when it is not `start a sep b end` with the packer's
    segment ids (the preprocessors refuse such a tokenizer; plain tokenization is unaffected)."""
    encode = _encoder(view)
    seps, with_types = set(), set()
    for first, second in _PAIR_PROBES:
        a, b = encode(first, False), encode(second, False)
        try:
            ids, types = _encode_pair(view, first, second)
        except Exception:  # noqa: BLE001 - a tokenizer without pairs has no pair layout
            return None
        head, tail = start + a, b + end
        if ids[: len(head)] != head or ids[len(ids) - len(tail) :] != tail:
            return None
        sep = ids[len(head) : len(ids) - len(tail)]
        if len(ids) != len(head) + len(sep) + len(tail):
            return None
        seps.add(tuple(sep))
        if types is not None and not any(types) and view.hf is None:
            types = None  # the `tokenizers` pipeline alone: all-zero type ids carry nothing
        if types is not None:
            packer_types = [0] * (len(head) + len(sep)) + [1] * len(tail)
            if types != packer_types:
                return None
        with_types.add(types is not None)
    if len(seps) != 1 or len(with_types) != 1:
        return None
    side = str(getattr(view.hf, "truncation_side", "right") or "right")
    return Framing(
        start=tuple(id_to_token[i] for i in start),
        sep=tuple(id_to_token[i] for i in seps.pop()),
        end=tuple(id_to_token[i] for i in end),
        segment_ids=with_types.pop(),
        truncation_side=side,
    )


def _special_attr(view: _HFView, name: str) -> str | None:
    if view.hf is not None:
        value = getattr(view.hf, name, None)
        if value is not None:
            return str(value)
        return None
    return _token_str(view.config.get(name))


def _added_token_options(view: _HFView) -> tuple[tuple[str, bool, bool, bool, bool], ...]:
    out = []
    for added in sorted(view.backend.get("added_tokens") or [], key=lambda a: a["id"]):
        flags = (
            bool(added.get("lstrip")),
            bool(added.get("rstrip")),
            bool(added.get("single_word")),
            bool(added.get("normalized")),
        )
        if any(flags):
            out.append((added["content"], *flags))
    return tuple(out)


def _classify(view: _HFView) -> str:
    model = view.backend["model"]
    model_type = model.get("type")
    pre = _flatten(view.backend.get("pre_tokenizer"), "pretokenizers")
    norms = _flatten(view.backend.get("normalizer"), "normalizers")
    if model_type == "WordPiece":
        return "wordpiece"
    if model_type == "Unigram":
        return "sentencepiece"
    if model_type == "BPE":
        if any(p.get("type") == "ByteLevel" for p in pre):
            return "byte_bpe"
        spm_like = (
            model.get("byte_fallback")
            or any(p.get("type") == "Metaspace" for p in pre)
            or any(n.get("content") == _SPACE_MARK for n in norms)
            or any(n.get("type") == "Prepend" for n in norms)
        )
        if spm_like:
            return "sentencepiece"
        raise UnsupportedModelError(
            f"{view.directory}: a BPE tokenizer that is neither byte-level nor SentencePiece-style "
            f"(pre-tokenizer {[p.get('type') for p in pre]}); hf2kh cannot port it yet."
        )
    raise UnsupportedModelError(
        f"{view.directory}: tokenizer model {model_type!r} is not supported (BPE, Unigram and "
        "WordPiece are)."
    )


def read_tokenizer_spec(checkpoint_dir: Path) -> TokenizerSpec:
    """Read what the checkpoint's tokenizer does, from the pipeline transformers runs."""
    view = _load_view(Path(checkpoint_dir))
    kind = _classify(view)
    vocab = _vocab_ids(view)
    id_to_token = {i: t for t, i in vocab.items()}
    prefix, suffix = _added_framing(view)
    for where, ids in (("before", prefix), ("after", suffix)):
        if len(ids) > 1:
            raise UnsupportedModelError(
                f"{view.directory}: the tokenizer adds {len(ids)} tokens {where} the text "
                f"({[id_to_token.get(i) for i in ids]}); only a single bos/eos is supported."
            )
    bos = id_to_token[prefix[0]] if prefix else _special_attr(view, "bos_token")
    eos = id_to_token[suffix[0]] if suffix else _special_attr(view, "eos_token")
    added = sorted(view.backend.get("added_tokens") or [], key=lambda a: a["id"])
    notes: list[str] = []
    common = dict(
        kind=kind,
        keras_base=_KERAS_BASES[kind],
        bos_token=bos,
        eos_token=eos,
        pad_token=_special_attr(view, "pad_token"),
        unk_token=_special_attr(view, "unk_token"),
        add_bos=bool(prefix),
        add_eos=bool(suffix),
        special_tokens=tuple(a["content"] for a in added),
        asset_files=_ASSET_FILES[kind],
        added_token_options=_added_token_options(view),
        vocabulary_size=max(vocab.values()) + 1 if vocab else 0,
        mask_token=_special_attr(view, "mask_token"),
        framing=_framing(view, prefix, suffix, id_to_token),
    )
    if view.backend["model"].get("dropout"):
        notes.append("BPE dropout is set; the port tokenizes deterministically (no dropout).")
    if kind == "byte_bpe":
        details = _byte_bpe_details(view)
    elif kind == "sentencepiece":
        details = _sentencepiece_details(view, notes)
    else:
        details = _wordpiece_details(view)
        if common["unk_token"] is None:
            common["unk_token"] = view.backend["model"].get("unk_token")
    decoder = view.backend.get("decoder")
    clean_up = bool(getattr(view.hf, "clean_up_tokenization_spaces", False))
    decoder_json = (
        json.dumps(
            {"pipeline": decoder, "clean_up_tokenization_spaces": clean_up}, ensure_ascii=False
        )
        if decoder
        else None
    )
    return TokenizerSpec(**common, **details, notes=tuple(notes), decoder=decoder_json)


def _byte_bpe_details(view: _HFView) -> dict:
    model = view.backend["model"]
    where = view.directory
    if model.get("byte_fallback"):
        raise UnsupportedModelError(f"{where}: byte-level BPE with byte_fallback is not supported.")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise UnsupportedModelError(f"{where}: byte-level BPE with {key}={model[key]!r}.")
    norms = _flatten(view.backend.get("normalizer"), "normalizers")
    if len(norms) > 1 or (norms and norms[0].get("type") not in _UNICODE_FORMS):
        raise UnsupportedModelError(
            f"{where}: byte-level BPE normalizer {[n.get('type') for n in norms]} is not "
            "supported (only one of NFC, NFKC, NFD, NFKD)."
        )
    pre = _flatten(view.backend.get("pre_tokenizer"), "pretokenizers")
    shape = [p.get("type") for p in pre]
    split_pattern = None
    if shape == ["ByteLevel"] and pre[0].get("use_regex", True):
        byte_level = pre[0]
    elif shape == ["Split", "ByteLevel"] and not pre[1].get("use_regex", True):
        split, byte_level = pre
        pattern = split.get("pattern") or {}
        if split.get("invert") or str(split.get("behavior")).lower() != "isolated":
            raise UnsupportedModelError(
                f"{where}: Split pre-tokenizer with behavior={split.get('behavior')!r}, "
                f"invert={split.get('invert')!r} is not supported (only isolated matches)."
            )
        split_pattern = pattern.get("Regex")
        if split_pattern is None:
            split_pattern = re.escape(pattern.get("String", ""))
    else:
        raise UnsupportedModelError(
            f"{where}: byte-level pre-tokenizer {shape} is not supported (ByteLevel with its "
            "regex, or one Split followed by ByteLevel)."
        )
    return dict(
        lowercase=False,
        split_pattern=split_pattern,
        unicode_normalization=norms[0]["type"] if norms else None,
        add_prefix_space=bool(byte_level.get("add_prefix_space")),
        ignore_merges=bool(model.get("ignore_merges")),
    )


def _replaces_spaces(norm: dict) -> bool:
    return norm.get("type") == "Replace" and (norm.get("pattern") or {}).get("String") == " "


def _sentencepiece_details(view: _HFView, notes: list[str]) -> dict:
    model = view.backend["model"]
    where = view.directory
    norms = _flatten(view.backend.get("normalizer"), "normalizers")
    pre = _flatten(view.backend.get("pre_tokenizer"), "pretokenizers")
    prepend_scheme = "never"
    split_on_whitespace = False
    whitespace_split = False
    spaces_replaced = False
    text_norms = [
        n for n in norms if n.get("type") in _TEXT_NORMALIZERS and not _replaces_spaces(n)
    ]
    for norm in norms:
        kind = norm.get("type")
        if _replaces_spaces(norm):
            if norm.get("content") != _SPACE_MARK:
                raise UnsupportedModelError(f"{where}: normalizer replaces spaces by {norm!r}.")
            spaces_replaced = True
        elif kind == "Prepend" and norm.get("prepend") == _SPACE_MARK:
            prepend_scheme = "legacy"
        elif kind not in _TEXT_NORMALIZERS:
            raise UnsupportedModelError(
                f"{where}: SentencePiece-style normalizer {kind!r} ({norm}) is not supported."
            )
    if text_norms and (spaces_replaced or prepend_scheme == "legacy"):
        raise UnsupportedModelError(
            f"{where}: a normalizer that changes the text ({[n.get('type') for n in text_norms]}) "
            "together with space replacement or a Prepend is not supported."
        )
    for index, step in enumerate(pre):
        kind = step.get("type")
        if kind == "Metaspace":
            if step.get("replacement", _SPACE_MARK) != _SPACE_MARK:
                raise UnsupportedModelError(f"{where}: Metaspace replacement {step!r}.")
            scheme = step.get("prepend_scheme")
            if scheme is None:  # tokenizers < 0.14 wrote add_prefix_space
                scheme = "always" if step.get("add_prefix_space", True) else "never"
            if prepend_scheme == "legacy" and scheme != "never":
                raise UnsupportedModelError(f"{where}: both a Prepend normalizer and Metaspace.")
            if prepend_scheme != "legacy":
                prepend_scheme = scheme
            split_on_whitespace = bool(step.get("split", True))
        elif kind == "WhitespaceSplit" and index == 0:
            whitespace_split = True  # ALBERT, XLM-R: words cut at whitespace, which is dropped
        elif (
            kind == "Split" and (step.get("pattern") or {}).get("String") == " " and spaces_replaced
        ):
            continue  # splits on " " after " " became "▁": nothing to split (Gemma)
        else:
            raise UnsupportedModelError(
                f"{where}: SentencePiece-style pre-tokenizer {kind!r} ({step}) is not supported."
            )
    if whitespace_split and prepend_scheme != "always":
        raise UnsupportedModelError(
            f"{where}: WhitespaceSplit before Metaspace(prepend_scheme={prepend_scheme!r}) is not "
            "supported (only 'always', as in ALBERT and XLM-R)."
        )
    vocab = _vocab_ids(view)
    byte_pieces = sum(f"<0x{b:02X}>" in vocab for b in range(256))
    if model.get("byte_fallback") and 0 < byte_pieces < 256:
        notes.append(
            f"Only {byte_pieces} of 256 byte pieces: SentencePiece needs all of them for byte "
            "fallback, so characters HF would spell in bytes become unknown."
        )
    drop_unknown = False
    if model.get("type") == "BPE":
        # HF BPE with neither an unknown token nor byte pieces drops what it cannot encode.
        byte_fallback = model.get("byte_fallback") and byte_pieces == 256
        drop_unknown = not model.get("unk_token") and not byte_fallback
        if model.get("ignore_merges"):
            notes.append("BPE ignore_merges is not reproduced by SentencePiece BPE.")
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key):
                raise UnsupportedModelError(f"{where}: SentencePiece-style BPE with {key}.")
    added = view.backend.get("added_tokens") or []
    if model.get("type") == "Unigram" and any(a.get("single_word") for a in added):
        notes.append(
            "single_word added tokens: where HF declines to cut one out of a word, its Unigram "
            "model may still pick the piece; SentencePiece never does."
        )
    if any(a.get("normalized") for a in added) and norms:
        notes.append(
            "Added tokens with normalized=True are matched in the raw text, not the normalized."
        )
    return dict(
        lowercase=False,
        split_pattern=None,
        prepend_scheme=prepend_scheme,
        split_on_whitespace=split_on_whitespace,
        model_type="unigram" if model.get("type") == "Unigram" else "bpe",
        drop_unknown=drop_unknown,
        # the whole normalizer, run by the `tokenizers` library, when it changes the text
        normalizer=json.dumps(view.backend["normalizer"]) if text_norms else None,
        whitespace_split=whitespace_split,
    )


def _wordpiece_details(view: _HFView) -> dict:
    model = view.backend["model"]
    where = view.directory
    norms = _flatten(view.backend.get("normalizer"), "normalizers")
    pre = _flatten(view.backend.get("pre_tokenizer"), "pretokenizers")
    if [n.get("type") for n in norms] != ["BertNormalizer"]:
        raise UnsupportedModelError(
            f"{where}: WordPiece normalizer {[n.get('type') for n in norms]} is not supported "
            "(BertNormalizer is)."
        )
    if [p.get("type") for p in pre] != ["BertPreTokenizer"]:
        raise UnsupportedModelError(
            f"{where}: WordPiece pre-tokenizer {[p.get('type') for p in pre]} is not supported "
            "(BertPreTokenizer is)."
        )
    norm = norms[0]
    lowercase = bool(norm.get("lowercase", True))
    strip_accents = norm.get("strip_accents")
    return dict(
        lowercase=lowercase,
        split_pattern=None,
        strip_accents=lowercase if strip_accents is None else bool(strip_accents),
        split_on_cjk=bool(norm.get("handle_chinese_chars", True)),
        clean_text=bool(norm.get("clean_text", True)),
        max_input_chars_per_word=int(model.get("max_input_chars_per_word", 100)),
        suffix_indicator=model.get("continuing_subword_prefix") or "##",
    )
