"""`TokenizerSpec`: what a checkpoint's tokenizer does, as read by `read_tokenizer_spec`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Framing:
    """How HF's `tokenizer(a)` and `tokenizer(a, b)` frame the text ids, as measured.

    One text: `start + a + end`; a pair: `start + a + sep + b + end` (BERT: `[CLS] a [SEP] b
    [SEP]`; RoBERTa: `<s> a </s></s> b </s>`), the layout of `keras_hub.layers.MultiSegmentPacker`.
    When `segment_ids` is set HF also returns `token_type_ids`: 0 up to and including `sep`, 1
    after it (what the packer writes). Too long inputs are cut on `truncation_side`, a pair by
    HF's `longest_first` rule.
    """

    start: tuple[str, ...]
    sep: tuple[str, ...]
    end: tuple[str, ...]
    segment_ids: bool
    truncation_side: str = "right"


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
    # sentencepiece: HF's normalizer as `tokenizers` JSON when it changes the text (lowercasing,
    # accents, Precompiled charsmap ...), run before the words are cut
    normalizer: str | None = None
    whitespace_split: bool = False  # sentencepiece: WhitespaceSplit before Metaspace
    strip_accents: bool = False  # wordpiece
    split_on_cjk: bool = True  # wordpiece
    clean_text: bool = True  # wordpiece
    max_input_chars_per_word: int = 100  # wordpiece
    suffix_indicator: str = "##"  # wordpiece
    # (token, lstrip, rstrip, single_word, normalized) for added tokens with non-default options
    added_token_options: tuple[tuple[str, bool, bool, bool, bool], ...] = ()
    vocabulary_size: int = 0  # largest id + 1, added tokens included
    mask_token: str | None = None
    # How HF frames one text and a pair (None: its pair layout is not `start a sep b end`).
    framing: Framing | None = None
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
            kwargs = {
                "unsplittable_tokens": list(self.special_tokens),
                "prepend_scheme": self.prepend_scheme,
                "split_on_whitespace": self.split_on_whitespace,
                "added_token_options": options or None,
                "drop_unknown": self.drop_unknown,
                "decoder": self.decoder,
            }
            if self.normalizer is not None:
                kwargs["normalizer"] = self.normalizer
            if self.whitespace_split:
                kwargs["whitespace_split"] = True
            return kwargs
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
