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

SentencePiece-style encoders (ALBERT, XLM-R: `WhitespaceSplit` + `Metaspace`, a `Precompiled`
normalizer, ALBERT's lowercasing and accent stripping) run HF's own normalizer with the
`tokenizers` library on the text between added tokens, cut it into words at whitespace, prepend
"▁" to each word and let SentencePiece (its own normalizer off) encode them.

Encoders also need HF's framing of one text and a pair (`[CLS] a [SEP] b [SEP]`,
`<s> a </s></s> b </s>`): `TokenizerSpec.framing` is measured from `tokenizer(a, b)`, and
`preprocessor.py` renders the generated segment packer (HF's `longest_first` pair truncation) and
the masked-LM and classifier preprocessors.

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
- Pipelines of other shapes (several `Split`s, `WhitespaceSplit` + `Metaspace` with a prepend
  scheme other than "always" as in T5, a text normalizer together with space replacement, ...)
  raise `UnsupportedModelError` naming the step.
"""

from __future__ import annotations

from hf2kh.generate.tokenizer.assets import write_assets
from hf2kh.generate.tokenizer.corpus import tokenizer_test_corpus
from hf2kh.generate.tokenizer.read import read_tokenizer_spec
from hf2kh.generate.tokenizer.source import build_keras_tokenizer, tokenizer_module_source
from hf2kh.generate.tokenizer.spec import Framing, TokenizerSpec

__all__ = [
    "Framing",
    "TokenizerSpec",
    "build_keras_tokenizer",
    "read_tokenizer_spec",
    "tokenizer_module_source",
    "tokenizer_test_corpus",
    "write_assets",
]
