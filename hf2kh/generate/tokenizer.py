"""Hugging Face tokenizer files -> KerasHub tokenizer assets and class, giving HF's ids.

Three steps, each a pure function of its inputs:

1. `read_tokenizer_spec(checkpoint_dir)` decides, from evidence, what the checkpoint's tokenizer
   does. The evidence is the pipeline that transformers really runs: the checkpoint is loaded with
   `AutoTokenizer` (local files, no remote code) and its `backend_tokenizer` is read as
   `tokenizer.json` (model, normalizer, pre-tokenizer, added tokens). That matters because
   transformers 5 rebuilds the pipeline of classes such as `LlamaTokenizer`, `Qwen2Tokenizer` or
   `GPT2Tokenizer` in code and ignores most of `tokenizer.json`; the files alone can mislead. When
   `AutoTokenizer` cannot load the directory, `tokenizer.json` itself is the evidence. The bos/eos
   that `tokenizer(text)` adds are measured by encoding a probe with and without special tokens.
   `model_type` is never consulted. The kind follows from the model and pre-tokenizer:
   `WordPiece` -> "wordpiece"; `BPE` with a `ByteLevel` pre-tokenizer -> "byte_bpe"; `Unigram`, or
   `BPE` with byte fallback / `Metaspace` / "▁" -> "sentencepiece".
2. `write_assets(checkpoint_dir, spec, assets_dir)` writes the files KerasHub presets carry
   (`assets/tokenizer/`): `vocabulary.json` + `merges.txt` (byte BPE), `vocabulary.spm`
   (SentencePiece), `vocabulary.txt` (WordPiece).
3. `build_keras_tokenizer(spec, assets_dir)` returns a `keras_hub.tokenizers.*` subclass instance
   loaded from those assets. The subclass source is rendered from `templates/tokenizer_*.py.jinja`
   (`tokenizer_module_source`), the same source a generated model package ships, so what is tested
   here is what users get. The templates import only keras_hub, numpy, `tokenizers`,
   `sentencepiece` (and TensorFlow when present), never hf2kh.

Why subclasses: the stock KerasHub tokenizers are not exact for these checkpoints.

- `BytePairTokenizer` pre-tokenizes with one hard-coded regex: Llama 3's on the Python path and a
  GPT-2-like one inside `tf.data`. GPT-2 keeps digit runs whole (`12345`), Llama 3 cuts them in
  threes, Qwen2 into single digits; contractions are case-insensitive only in the latter two; Qwen2
  also NFC-normalizes. The subclass keeps the vocabulary, merges, assets and `detokenize()` and, in
  its public `tokenize()`, runs the `tokenizers` library configured as the checkpoint's own
  pipeline: `Split(split_pattern, "isolated")` + `ByteLevel(use_regex=False)`, or
  `ByteLevel(use_regex=True)` (GPT-2's regex) when `split_pattern` is None, plus the optional
  Unicode normalizer, `ignore_merges` and the added tokens with their lstrip/rstrip flags. This is
  how KerasHub's own Python path works (it, too, drives `tokenizers`), only with the right regex.
- `SentencePieceTokenizer` hands the whole text to SentencePiece, which reads "<s>" or "<bos>" in
  text as characters and always adds its dummy prefix. HF cuts added tokens out first and prepends
  "▁" per `Metaspace.prepend_scheme` ("first": only on the piece at offset 0 and not if it already
  starts with a space). The subclass does exactly those two steps and lets SentencePiece encode
  each piece with its dummy prefix switched off (decoding still uses it).
- `WordPieceTokenizer` case-folds ("ß" -> "ss"), keeps U+00A0/U+3000 inside words, splits on
  zero-width characters instead of removing them and caps words at 100 bytes rather than 100
  characters. The subclass tokenizes with `BertNormalizer` + `BertPreTokenizer` + `WordPiece`.

Inside `tf.data`/`tf.function` each subclass runs the same Python code through `tf.py_function`
(as KerasHub's `MistralTekkenTokenizer` does), so graph and eager ids agree.

`vocabulary.spm` is always built from the pipeline transformers runs, which covers SentencePiece
models that exist only as `tokenizer.json` (Unigram, or BPE with byte fallback and `Metaspace`) and
`.model` files that transformers reads differently from SentencePiece (transformers 5 turns any
`.model` read by `LlamaTokenizer`/`GemmaTokenizer` into BPE merges, even a Unigram one). Unigram
scores are copied; BPE pieces are scored by the rank of the first merge that produces them
(SentencePiece BPE merges the best-scored piece first) and pieces no merge produces are UNUSED;
piece types and trainer fields come from the checkpoint's `.model` where it agrees.

Known limits (the spec's `notes` name those a checkpoint hits; none is hit by the test fixtures):

- SentencePiece BPE may join any two adjacent symbols that form a vocabulary piece; HF BPE joins
  only listed merges, and ranks different splits of one piece apart. Identical for merges derived
  from a SentencePiece model (they list every split), not guaranteed for a BPE trained elsewhere.
- SentencePiece-style BPE with `ignore_merges`; BPE dropout (ported as no dropout).
- A SentencePiece-style model with only some of the 256 byte pieces (SentencePiece then cannot
  fall back to bytes at all).
- Added tokens with `normalized=True` in a SentencePiece-style model whose normalizer changes them
  (matched in the raw text); `single_word` added tokens in a Unigram model (HF's Unigram can still
  pick the piece inside a word, SentencePiece cannot).
- A `Precompiled` normalizer is copied into the `.spm` but not covered by tests.
- Pipelines of other shapes (several `Split`s, `WhitespaceSplit` + `Metaspace` as in T5, `Strip`,
  lowercasing outside BERT, ...) raise `UnsupportedModelError` naming the step.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hf2kh.errors import SourceError, UnsupportedModelError

TEMPLATES_DIR = Path(__file__).parent / "templates"

_TEMPLATES = {
    "byte_bpe": "tokenizer_byte_bpe.py.jinja",
    "sentencepiece": "tokenizer_sentencepiece.py.jinja",
    "wordpiece": "tokenizer_wordpiece.py.jinja",
}
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
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
_SPACE_MARK = "\u2581"


@dataclass(frozen=True)
class TokenizerSpec:
    """What a checkpoint's tokenizer does, as far as a KerasHub tokenizer must reproduce it."""

    kind: str  # "byte_bpe" | "sentencepiece" | "wordpiece"
    keras_base: str  # public keras_hub.tokenizers.* class the generated class derives from
    bos_token: str | None
    eos_token: str | None
    pad_token: str | None
    unk_token: str | None
    add_bos: bool  # what HF's tokenizer(text) adds by default
    add_eos: bool
    special_tokens: tuple[str, ...]  # added/special tokens, by id: matched in text, never split
    lowercase: bool  # wordpiece only
    split_pattern: str | None  # byte BPE pre-tokenizer regex; None = GPT-2's byte-level regex
    asset_files: tuple[str, ...]  # names written by write_assets
    # -- details of the pipeline (each maps to one constructor argument of the generated class)
    unicode_normalization: str | None = None  # byte BPE: "NFC" | "NFKC" | "NFD" | "NFKD"
    add_prefix_space: bool = False  # byte BPE
    ignore_merges: bool = False  # byte BPE
    prepend_scheme: str = "never"  # sentencepiece: "never" | "first" | "always" | "legacy"
    split_on_whitespace: bool = False  # sentencepiece: Metaspace(split=True)
    model_type: str | None = None  # sentencepiece: "bpe" | "unigram"
    drop_unknown: bool = False  # sentencepiece: HF drops unknown characters (no unk, no bytes)
    strip_accents: bool = False  # wordpiece
    split_on_cjk: bool = True  # wordpiece
    clean_text: bool = True  # wordpiece
    max_input_chars_per_word: int = 100  # wordpiece
    suffix_indicator: str = "##"  # wordpiece
    # (token, lstrip, rstrip, single_word, normalized) for added tokens with non-default options
    added_token_options: tuple[tuple[str, bool, bool, bool, bool], ...] = ()
    vocabulary_size: int = 0  # largest id + 1, added tokens included
    notes: tuple[str, ...] = ()  # anything that is not reproduced exactly
    # How the original decodes: {"pipeline": <`tokenizers` decoder JSON>,
    # "clean_up_tokenization_spaces": bool} (the latter is transformers' post-processing).
    decoder: str | None = None

    def keras_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of the generated tokenizer class (assets come separately)."""
        options = {
            token: {"lstrip": ls, "rstrip": rs, "single_word": sw, "normalized": nm}
            for token, ls, rs, sw, nm in self.added_token_options
        }
        if self.kind == "byte_bpe":
            return {
                "split_pattern": self.split_pattern,
                "unicode_normalization": self.unicode_normalization,
                "ignore_merges": self.ignore_merges,
                "add_prefix_space": self.add_prefix_space,
                "unsplittable_tokens": list(self.special_tokens),
                "added_token_options": options or None,
                "decoder": self.decoder,
            }
        if self.kind == "sentencepiece":
            return {
                "unsplittable_tokens": list(self.special_tokens),
                "prepend_scheme": self.prepend_scheme,
                "split_on_whitespace": self.split_on_whitespace,
                "added_token_options": options or None,
                "drop_unknown": self.drop_unknown,
                "decoder": self.decoder,
            }
        return {
            "lowercase": self.lowercase,
            "strip_accents": self.strip_accents,
            "split_on_cjk": self.split_on_cjk,
            "clean_text": self.clean_text,
            "max_input_chars_per_word": self.max_input_chars_per_word,
            "suffix_indicator": self.suffix_indicator,
            "oov_token": self.unk_token,
            "special_tokens": list(self.special_tokens),
            "special_tokens_in_strings": True,
            "added_token_options": options or None,
            "decoder": self.decoder,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Reading the checkpoint
# --------------------------------------------------------------------------------------------


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


def _sentencepiece_details(view: _HFView, notes: list[str]) -> dict:
    model = view.backend["model"]
    where = view.directory
    norms = _flatten(view.backend.get("normalizer"), "normalizers")
    pre = _flatten(view.backend.get("pre_tokenizer"), "pretokenizers")
    prepend_scheme = "never"
    split_on_whitespace = False
    spaces_replaced = False
    for norm in norms:
        kind = norm.get("type")
        if kind == "Replace" and (norm.get("pattern") or {}).get("String") == " ":
            if norm.get("content") != _SPACE_MARK:
                raise UnsupportedModelError(f"{where}: normalizer replaces spaces by {norm!r}.")
            spaces_replaced = True
        elif kind == "Prepend" and norm.get("prepend") == _SPACE_MARK:
            prepend_scheme = "legacy"
        elif kind == "Precompiled":
            notes.append(
                "The Precompiled (SentencePiece charsmap) normalizer is copied into the model; "
                "whitespace it creates is not seen by the prepend rule."
            )
        else:
            raise UnsupportedModelError(
                f"{where}: SentencePiece-style normalizer {kind!r} ({norm}) is not supported."
            )
    for step in pre:
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
        elif (
            kind == "Split" and (step.get("pattern") or {}).get("String") == " " and spaces_replaced
        ):
            continue  # splits on " " after " " became "▁": nothing to split (Gemma)
        else:
            raise UnsupportedModelError(
                f"{where}: SentencePiece-style pre-tokenizer {kind!r} ({step}) is not supported."
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


# --------------------------------------------------------------------------------------------
# Assets
# --------------------------------------------------------------------------------------------


def write_assets(checkpoint_dir: Path, spec: TokenizerSpec, assets_dir: Path) -> None:
    """Write the tokenizer's files in KerasHub's preset layout into `assets_dir`."""
    view = _load_view(Path(checkpoint_dir))
    out = Path(assets_dir)
    out.mkdir(parents=True, exist_ok=True)
    if spec.kind == "byte_bpe":
        _write_byte_bpe(view, out)
    elif spec.kind == "sentencepiece":
        (out / "vocabulary.spm").write_bytes(sentencepiece_proto(view, spec))
    elif spec.kind == "wordpiece":
        tokens = _id_ordered_tokens(view)
        for token in tokens:
            if not token or token != token.rstrip() or "\n" in token:
                raise UnsupportedModelError(
                    f"{view.directory}: WordPiece token {token!r} cannot be stored one per line "
                    "in vocabulary.txt (KerasHub strips trailing whitespace)."
                )
        (out / "vocabulary.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    else:
        raise ValueError(f"unknown tokenizer kind {spec.kind!r}")


def _id_ordered_tokens(view: _HFView) -> list[str]:
    vocab = _vocab_ids(view)
    by_id: dict[int, str] = {}
    for token, index in vocab.items():
        by_id.setdefault(index, token)
    size = max(by_id) + 1 if by_id else 0
    missing = [i for i in range(size) if i not in by_id]
    if missing:
        raise UnsupportedModelError(
            f"{view.directory}: the vocabulary has no token for ids {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}; KerasHub needs contiguous ids."
        )
    return [by_id[i] for i in range(size)]


def _merge_pairs(model: dict) -> list[tuple[str, str]]:
    pairs = []
    for merge in model.get("merges") or []:
        if isinstance(merge, str):
            parts = merge.split(" ")
        else:
            parts = list(merge)
        if len(parts) != 2:
            raise UnsupportedModelError(f"merge rule {merge!r} is not a pair of tokens.")
        pairs.append((parts[0], parts[1]))
    return pairs


def _write_byte_bpe(view: _HFView, out: Path) -> None:
    vocab = _vocab_ids(view)
    pairs = _merge_pairs(view.backend["model"])
    for a, b in pairs:
        if " " in a or " " in b:
            raise UnsupportedModelError(
                f"{view.directory}: merge ({a!r}, {b!r}) contains a space; merges.txt cannot "
                "hold it."
            )
    ordered = dict(sorted(vocab.items(), key=lambda item: item[1]))
    (out / "vocabulary.json").write_text(json.dumps(ordered, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("".join(f"{a} {b}\n" for a, b in pairs), encoding="utf-8")


def sentencepiece_proto(view_or_dir: _HFView | Path, spec: TokenizerSpec) -> bytes:
    """A serialized SentencePiece `ModelProto` that encodes like the HF pipeline.

    Built from the effective HF model (ids, Unigram scores or BPE merges, byte fallback); the
    checkpoint's `tokenizer.model`, when present, contributes piece types and trainer fields.
    The normalizer is identity unless HF has a Precompiled one; `add_dummy_prefix` is set when HF
    prepends "▁" (the generated tokenizer applies HF's exact prepend rule itself when encoding).
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    view = view_or_dir if isinstance(view_or_dir, _HFView) else _load_view(Path(view_or_dir))
    piece_type = pb.ModelProto.SentencePiece.Type
    model = view.backend["model"]
    added = {a["id"]: a for a in view.backend.get("added_tokens") or []}
    tokens = _id_ordered_tokens(view)
    is_unigram = model.get("type") == "Unigram"
    # SentencePiece refuses byte_fallback without all 256 byte pieces (see the spec's notes).
    byte_pieces = sum(1 for t in tokens if _BYTE_PIECE.fullmatch(t))
    byte_fallback = bool(model.get("byte_fallback")) and byte_pieces >= 256

    base = None
    model_path = view.directory / "tokenizer.model"
    if model_path.is_file():
        base = pb.ModelProto()
        try:
            base.ParseFromString(model_path.read_bytes())
        except Exception:  # noqa: BLE001 - e.g. a tiktoken file named tokenizer.model
            base = None
    base_types = {}
    if base is not None:
        for index, piece in enumerate(base.pieces):
            if index < len(tokens) and piece.piece == tokens[index]:
                base_types[index] = piece.type

    if is_unigram:
        scores = {i: float(item[1]) for i, item in enumerate(model["vocab"])}
        unk_id = model.get("unk_id")
    else:
        first_rank: dict[str, int] = {}
        for rank, (a, b) in enumerate(_merge_pairs(model)):
            first_rank.setdefault(a + b, rank)
        vocab_ids = _vocab_ids(view)
        scores = {vocab_ids[t]: -float(r + 1) for t, r in first_rank.items() if t in vocab_ids}
        unk_token = model.get("unk_token") or spec.unk_token
        unk_id = vocab_ids.get(unk_token) if unk_token else None
    if unk_id is None and base is not None and base.trainer_spec.unk_id < len(tokens):
        unk_id = base.trainer_spec.unk_id
    if unk_id is None:
        raise UnsupportedModelError(
            f"{view.directory}: the SentencePiece-style model has no unknown token; a "
            "SentencePiece model needs one."
        )

    proto = pb.ModelProto()
    if base is not None:
        proto.trainer_spec.CopyFrom(base.trainer_spec)
    for index, token in enumerate(tokens):
        piece = proto.pieces.add()
        piece.piece = token
        piece.score = scores.get(index, 0.0)
        if index == unk_id:
            piece.type = piece_type.UNKNOWN
        elif index in added:
            kept = base_types.get(index)
            if kept in (piece_type.CONTROL, piece_type.USER_DEFINED):
                piece.type = kept
            else:
                piece.type = (
                    piece_type.CONTROL if added[index]["special"] else piece_type.USER_DEFINED
                )
        elif byte_fallback and _BYTE_PIECE.fullmatch(token):
            piece.type = piece_type.BYTE
        elif not is_unigram and len(token) > 1 and index not in scores:
            piece.type = piece_type.UNUSED  # no merge produces it: HF BPE never emits it
        else:
            piece.type = piece_type.NORMAL
        if piece.type != piece_type.NORMAL:
            piece.score = 0.0

    trainer = proto.trainer_spec
    trainer.model_type = pb.TrainerSpec.UNIGRAM if is_unigram else pb.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = byte_fallback
    trainer.unk_id = unk_id
    trainer.unk_piece = tokens[unk_id]
    for role, token in (("bos", spec.bos_token), ("eos", spec.eos_token), ("pad", spec.pad_token)):
        index = tokens.index(token) if token in tokens else -1
        if index >= 0 and proto.pieces[index].type != piece_type.CONTROL:
            index = -1
        if index == unk_id:
            index = -1
        setattr(trainer, f"{role}_id", index)
        if index >= 0:
            setattr(trainer, f"{role}_piece", token)
    if len({i for i in (trainer.bos_id, trainer.eos_id, trainer.pad_id) if i >= 0}) < sum(
        i >= 0 for i in (trainer.bos_id, trainer.eos_id, trainer.pad_id)
    ):
        trainer.pad_id = -1  # SentencePiece wants distinct ids (e.g. pad == eos)

    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    # Kept for SentencePiece's own decoding (it strips the dummy "▁" again) and for plain
    # SentencePiece users; the generated tokenizer switches it off for encoding.
    normalizer.add_dummy_prefix = spec.prepend_scheme != "never"
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    for norm in _flatten(view.backend.get("normalizer"), "normalizers"):
        if norm.get("type") == "Precompiled" and norm.get("precompiled_charsmap"):
            normalizer.name = "hf_precompiled"
            normalizer.precompiled_charsmap = base64.b64decode(norm["precompiled_charsmap"])
    return proto.SerializeToString()


# --------------------------------------------------------------------------------------------
# The KerasHub tokenizer
# --------------------------------------------------------------------------------------------


def tokenizer_module_source(
    spec: TokenizerSpec,
    class_name: str,
    header: str = "",
    register_package: str | None = None,
) -> str:
    """Python source of a module defining `class_name(keras_hub.tokenizers.<keras_base>)`.

    `header` is put first (e.g. the "generated by hf2kh" comment); `register_package`, when
    given, registers the class as Keras-serializable under that package name. Construct the class
    with `spec.keras_kwargs()` and load the assets written by `write_assets`.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        keep_trailing_newline=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
    )
    template = env.get_template(_TEMPLATES[spec.kind])
    return template.render(
        class_name=class_name, header=header.rstrip(), register_package=register_package
    )


_MODULE_COUNTER = [0]


def load_tokenizer_class(spec: TokenizerSpec, class_name: str = "HFTokenizer"):
    """Render the template for `spec.kind`, import it as a module and return the class."""
    source = tokenizer_module_source(spec, class_name)
    _MODULE_COUNTER[0] += 1
    module_name = f"hf2kh_generated_tokenizer_{_MODULE_COUNTER[0]}"
    module_spec = importlib.util.spec_from_loader(module_name, loader=None)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    exec(compile(source, f"<{module_name}>", "exec"), module.__dict__)  # noqa: S102
    return getattr(module, class_name)


def build_keras_tokenizer(spec: TokenizerSpec, assets_dir: Path, **kwargs):
    """A `keras_hub.tokenizers.<spec.keras_base>` subclass instance loaded from `assets_dir`.

    It returns the ids of HF's `tokenizer(text, add_special_tokens=False)`; bos/eos are left to
    the preprocessor, as in KerasHub (`spec.add_bos` / `spec.add_eos` say what HF adds).
    Extra `kwargs` (e.g. `sequence_length`, `dtype`) go to the constructor.
    """
    cls = load_tokenizer_class(spec)
    tokenizer = cls(**{**spec.keras_kwargs(), **kwargs})
    missing = [name for name in spec.asset_files if not (Path(assets_dir) / name).is_file()]
    if missing:
        raise SourceError(f"{assets_dir}: tokenizer assets {missing} are missing.")
    tokenizer.load_assets(str(assets_dir))
    return tokenizer


# --------------------------------------------------------------------------------------------
# Sample corpus for verification
# --------------------------------------------------------------------------------------------

_CORPUS = (
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "It's 12345 and 3.14, they'd say; we'll see, YOU'RE RIGHT, I'M sure it'S fine.",
    "Café naïve résumé façade, São Paulo, Zürich; Ångström. Straße, Größe, ΟΔΟΣ.",
    "Decomposed accents: e\u0301 a\u0300 n\u0303 u\u0308 (NFC and NFD differ).",
    "中文测试：你好，世界！日本語のテキスト。한국어 텍스트입니다.",
    "Emoji 😀🎉👍🏽 family 👨\u200d👩\u200d👧 flags 🇺🇸🇯🇵 heart ❤️ done.",
    "   leading spaces, runs    of     spaces, trailing   ",
    "tabs\tand\t\ttabs\nnew\nlines\n\n\nblank lines\r\nand windows\r\n",
    "def square(x: int) -> int:\n    return x ** 2  # power\n\n\nclass A:\n    pass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }  /* C */ if (x && !y || z) return;",
    'const s = `${a}+${b}`; console.log(s === "3"); // done',
    "Numbers: 0 7 42 123 1234 12345 123456 3.14159 -2.5e-10 1,000,000 0x1F 007",
    "Mixed123abc ABC123 a1b2c3 2024-01-31T12:00:00Z v1.2.3",
    "Punctuation!!! ??? ... --- ((brackets)) [[x]] {{y}} <tag attr='1'/> @#$%^&*",
    "Greek Καλημέρα κόσμε, Cyrillic Привет мир, Arabic مرحبا بالعالم, Hebrew שלום.",
    "Special spaces: a\u00a0b\u2009c\u3000d zero\u200bwidth soft\u00adhyphen end",
    "Controls: \x07bell \x1b[0m escape and \ufffd replacement and \ue000 private use",
    "Ligatures ﬁ ﬂ, fullwidth ＡＢＣ１２３, superscript x² and circled ①.",
    "ALLCAPS WORDS and lowercase and MiXeD CaSe and SHOUTING'S END",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D",
    "URLs https://example.com/path?q=1&r=2#frag and e-mails a.b@c.de",
    "Supercalifragilisticexpialidocious " + "abc" * 40,
    "ไม่มีการเว้นวรรคในภาษาไทยเลยแม้แต่นิดเดียวครับผมคิดว่านะครับ",
    "Unknown script: ᚠᛇᚻ᛫ᛒᛦᚦ and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math and 𪜀 rare CJK.",
    "",
    " ",
    "\n",
    "a",
    "  x",
    "9",
)

# Special-token strings common in real checkpoints: embedded in text, they must be recognized only
# when the tokenizer has them (elsewhere they are ordinary characters).
_COMMON_SPECIALS = (
    "<|endoftext|>",
    "<s>",
    "</s>",
    "<unk>",
    "<pad>",
    "<bos>",
    "<eos>",
    "<mask>",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "<start_of_turn>",
    "<|im_start|>",
)


def tokenizer_test_corpus(special_tokens=()) -> list[str]:
    """Texts for comparing a port's token ids with HF's.

    Unicode (accents, composed and decomposed, CJK, emoji with joiners, rare scripts), whitespace
    runs, tabs, newlines, CRLF, numbers, source code, odd spaces and control characters, empty and
    tiny strings, a very long word, and special tokens embedded in sentences: the common ones and
    each of `special_tokens` (at the start, in the middle with and without spaces, at the end,
    doubled).
    """
    texts = list(_CORPUS)
    texts.append("Before <|endoftext|> after, <s> and </s>, [SEP] and [CLS] and <bos> here.")
    texts.append("<s>Starts with one. <mask> and <start_of_turn>user\nhi<eos>")
    for token in dict.fromkeys([*_COMMON_SPECIALS, *special_tokens]):
        texts.extend(
            [
                f"Hello {token} world",
                f"{token}Hello",
                f" {token} x",
                f"end{token}",
                f"{token}{token} twice\n{token}",
            ]
        )
    return texts
