"""Tokenizers for zoo checkpoints, trained locally with the `tokenizers` library (no download).

Two layouts, as real checkpoints ship them:

- `byte_bpe`: GPT-2 style byte-level BPE (`vocab.json`, `merges.txt`, `tokenizer.json`,
  `GPT2Tokenizer`), `<|endoftext|>` as bos/eos/unk; for causal LMs.
- `wordpiece`: BERT layout (`vocab.txt`, `tokenizer.json`, `BertTokenizer`) with
  `[PAD] [UNK] [CLS] [SEP] [MASK]`;
  for masked LMs.

`train(kind, out_dir)` writes one and returns the `Tokens` the config shrinker needs (vocabulary
size and special-token ids).
"""

from __future__ import annotations

import json
from pathlib import Path

from hf2kh.zoo.shrink import Tokens

VOCAB_SIZE = 512
KINDS = ("byte_bpe", "wordpiece")
TOKENS_FILE = "zoo_tokens.json"

_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "A tokenizer splits text into pieces; a model maps pieces to vectors.",
    "It's what they'd said: we'll see, you're right, I'm sure they've gone.",
    "Numbers such as 12345, 3.14, 2024-01-31 and 1,000,000 appear in reports.",
    "Hello, World! How are you today? Fine, thanks.",
    "The attention mechanism lets every token look at every other token.",
    "Transformers use residual connections, layer normalization and MLP blocks.",
    "  Leading spaces, trailing spaces,   and    runs of spaces matter.  ",
    "Tabs\tand\tnewlines\nare whitespace too.\n\nSo are blank lines.",
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i * i)\n",
    'import numpy as np\nx = np.zeros((3, 4), dtype="float32")\n',
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "Café, naïve, résumé, façade, São Paulo, Zürich, Ångström.",
    "Москва — столица России. Привет, мир!",
    "你好，世界。我们学习机器学习。",
    "Emoji: 😀 🎉 👍 🚀 ❤️",
]


def corpus() -> list[str]:
    """A few hundred deterministic lines of mixed text."""
    lines: list[str] = []
    for rep in range(8):
        for i, line in enumerate(_TEXT):
            lines.append(line)
            if (i + rep) % 3 == 0:
                lines.append(line.lower())
            if (i + rep) % 2 == 0:
                lines.append(f"{line} {rep * 13 + i}")
    return lines


def kind_for(task: str) -> str:
    return "wordpiece" if task == "masked_lm" else "byte_bpe"


def train(kind: str, out_dir: Path) -> Tokens:
    """Train a `kind` tokenizer into `out_dir` (plus `zoo_tokens.json`, read by `load_tokens`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "byte_bpe":
        tokens = _byte_bpe(out_dir)
    elif kind == "wordpiece":
        tokens = _wordpiece(out_dir)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; known: {', '.join(KINDS)}")
    _write_json(out_dir / TOKENS_FILE, {"vocab_size": tokens.vocab_size, "ids": tokens.ids})
    return tokens


def load_tokens(tokenizer_dir: Path) -> Tokens:
    data = json.loads((Path(tokenizer_dir) / TOKENS_FILE).read_text())
    return Tokens(data["vocab_size"], data["ids"])


def tokenizer_files(tokenizer_dir: Path) -> list[Path]:
    """The files a checkpoint carries (everything but the zoo's own note)."""
    return sorted(p for p in Path(tokenizer_dir).iterdir() if p.name != TOKENS_FILE)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _byte_bpe(out: Path) -> Tokens:
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    special = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[AddedToken(special, special=True, normalized=False)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    tok.model.save(str(out))  # vocab.json + merges.txt
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": special,
        "eos_token": special,
        "unk_token": special,
        "pad_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
    }
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json", {"bos_token": special, "eos_token": special})
    eos = tok.token_to_id(special)
    return Tokens(tok.get_vocab_size(), {"bos": eos, "eos": eos, "unk": eos, "pad": None})


_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _wordpiece(out: Path) -> Tokens:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=_BERT_SPECIALS,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    (out / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "clean_up_tokenization_spaces": True,
        "model_max_length": 512,
    }
    _write_json(out / "tokenizer_config.json", config)
    _write_json(
        out / "special_tokens_map.json",
        {k: config[k] for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")},
    )
    # also as tokenizer.json, for types whose tokenizer class reads only that (ModernBERT's
    # PreTrainedTokenizerFast)
    from transformers import BertTokenizer

    bert = BertTokenizer.from_pretrained(str(out), local_files_only=True)
    bert.backend_tokenizer.save(str(out / "tokenizer.json"))
    ids = {name.strip("[]").lower(): vocab[name] for name in _BERT_SPECIALS}
    ids.update(bos=ids["cls"], eos=ids["sep"])
    return Tokens(len(vocab), ids)
