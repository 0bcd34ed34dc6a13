"""HF tokenizer -> KerasHub tokenizer: the port gives exactly HF's ids.

Every fixture kind (byte-level BPE in GPT-2, Llama 3 and Qwen2 style; SentencePiece BPE and
Unigram laid out like Llama and Gemma, with and without byte fallback; WordPiece cased and
uncased) is trained locally, converted with `read_tokenizer_spec` / `write_assets` /
`build_keras_tokenizer`, and compared with `transformers.AutoTokenizer` on the whole
`tokenizer_test_corpus`, including the checkpoint's special tokens embedded in text.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from hf2kh.errors import SourceError, UnsupportedModelError
from hf2kh.generate.tokenizer import (
    Framing,
    TokenizerSpec,
    build_keras_tokenizer,
    read_tokenizer_spec,
    tokenizer_module_source,
    tokenizer_test_corpus,
    write_assets,
)
from tests.fixtures.real import real_checkpoint_dir
from tests.fixtures.tokenizers import (
    LLAMA3_SPLIT_PATTERN,
    LLAMA3_STYLE,
    QWEN2_SPLIT_PATTERN,
    train_byte_bpe,
    train_sentencepiece,
    train_sentencepiece_encoder,
    train_wordpiece,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
TASKS = ("masked_lm", "text_classifier")


def _train_roberta(out_dir) -> Path:
    """The roberta fixture's tokenizer: byte-level BPE declared as a RobertaTokenizer."""
    from tests.fixtures.factory import FIXTURES, train_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return train_tokenizer(FIXTURES["roberta"], out)


# name -> (trainer, kwargs, expected kind)
KINDS: dict[str, tuple] = {
    "bpe_gpt2": (train_byte_bpe, dict(style="gpt2"), "byte_bpe"),
    "bpe_gpt2_bos": (train_byte_bpe, dict(style="gpt2", add_bos=True), "byte_bpe"),
    "bpe_llama3": (
        train_byte_bpe,
        LLAMA3_STYLE,
        "byte_bpe",
    ),
    "bpe_qwen2": (
        train_byte_bpe,
        dict(
            style="qwen2",
            eos="<|endoftext|>",
            pad="<|endoftext|>",
            extra_special=("<|im_start|>", "<|im_end|>"),
        ),
        "byte_bpe",
    ),
    "bpe_roberta": (_train_roberta, {}, "byte_bpe"),
    "sp_llama_bpe": (train_sentencepiece, dict(style="llama", model_type="bpe"), "sentencepiece"),
    "sp_llama_unigram": (
        train_sentencepiece,
        dict(style="llama", model_type="unigram"),
        "sentencepiece",
    ),
    "sp_gemma_bpe": (train_sentencepiece, dict(style="gemma", model_type="bpe"), "sentencepiece"),
    "sp_gemma_unigram": (
        train_sentencepiece,
        dict(style="gemma", model_type="unigram"),
        "sentencepiece",
    ),
    "sp_llama_bpe_no_bytes": (
        train_sentencepiece,
        dict(style="llama", model_type="bpe", byte_fallback=False),
        "sentencepiece",
    ),
    "sp_gemma_unigram_no_bytes": (
        train_sentencepiece,
        dict(style="gemma", model_type="unigram", byte_fallback=False),
        "sentencepiece",
    ),
    "wordpiece_uncased": (train_wordpiece, dict(lowercase=True), "wordpiece"),
    "wordpiece_cased": (train_wordpiece, dict(lowercase=False), "wordpiece"),
    # SentencePiece Unigram encoders: WhitespaceSplit + Metaspace, Precompiled normalizer
    "sp_albert_unigram": (train_sentencepiece_encoder, dict(style="albert"), "sentencepiece"),
    "sp_xlmr_unigram": (train_sentencepiece_encoder, dict(style="xlmr"), "sentencepiece"),
    "sp_deberta_unigram": (train_sentencepiece_encoder, dict(style="deberta"), "sentencepiece"),
    # BERT's normalizer options as checkpoints set them in tokenizer_config.json
    "wordpiece_uncased_keep_accents": (
        train_wordpiece,
        dict(lowercase=True, strip_accents=False),
        "wordpiece",
    ),
    "wordpiece_cased_strip_accents": (
        train_wordpiece,
        dict(lowercase=False, strip_accents=True),
        "wordpiece",
    ),
    "wordpiece_no_cjk_split": (
        train_wordpiece,
        dict(lowercase=True, tokenize_chinese_chars=False),
        "wordpiece",
    ),
}
SP_KINDS = [name for name, (_, _, kind) in KINDS.items() if kind == "sentencepiece"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """`get(name, variant="")`: a trained tokenizer checkpoint directory, built once per module.

    variant "json_only": a copy saved by transformers with `tokenizer.model` deleted, so only
    `tokenizer.json` describes the SentencePiece model.
    """
    built: dict[tuple[str, str], Path] = {}

    def get(name: str, variant: str = "") -> Path:
        key = (name, variant)
        if key not in built:
            if variant == "":
                trainer, kwargs, _ = KINDS[name]
                built[key] = trainer(tmp_path_factory.mktemp(name), **kwargs)
            elif variant == "json_only":
                from transformers import AutoTokenizer

                out = tmp_path_factory.mktemp(f"{name}_json_only")
                AutoTokenizer.from_pretrained(get(name)).save_pretrained(out)
                (out / "tokenizer.model").unlink(missing_ok=True)
                assert (out / "tokenizer.json").is_file()
                built[key] = out
            else:
                raise KeyError(variant)
        return built[key]

    return get


def _convert(ckpt: Path, assets: Path, **kwargs):
    spec = read_tokenizer_spec(ckpt)
    write_assets(ckpt, spec, assets)
    return spec, build_keras_tokenizer(spec, assets, **kwargs)


def _hf(ckpt: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ckpt)


def _ids(keras_tokenizer, text: str) -> list[int]:
    return [int(i) for i in keras_tokenizer(text)]


def _assert_same_ids(hf, keras_tokenizer, texts):
    mismatches = []
    for text in texts:
        expected = hf(text, add_special_tokens=False)["input_ids"]
        got = _ids(keras_tokenizer, text)
        if got != expected:
            mismatches.append(
                f"{text!r}\n  hf:    {hf.convert_ids_to_tokens(expected)}"
                f"\n  keras: {hf.convert_ids_to_tokens(got)}"
            )
    assert not mismatches, f"{len(mismatches)}/{len(texts)} texts differ:\n" + "\n".join(
        mismatches[:5]
    )


@pytest.mark.parametrize(
    "name, variant",
    [(name, "") for name in KINDS] + [(name, "json_only") for name in SP_KINDS],
)
def test_ids_match_hf(checkpoint, tmp_path, name, variant):
    ckpt = checkpoint(name, variant)
    spec, keras_tokenizer = _convert(ckpt, tmp_path / "assets")
    assert spec.kind == KINDS[name][2]
    hf = _hf(ckpt)
    corpus = tokenizer_test_corpus(spec.special_tokens)
    assert any(t in text for t in spec.special_tokens for text in corpus)
    _assert_same_ids(hf, keras_tokenizer, corpus)


@pytest.mark.parametrize("name", list(KINDS))
def test_add_bos_eos_flags_reproduce_hf(checkpoint, tmp_path, name):
    ckpt = checkpoint(name)
    spec, keras_tokenizer = _convert(ckpt, tmp_path / "assets")
    hf = _hf(ckpt)
    bos = [keras_tokenizer.token_to_id(spec.bos_token)] if spec.add_bos else []
    eos = [keras_tokenizer.token_to_id(spec.eos_token)] if spec.add_eos else []
    for text in ["Hello world", "12345 and 3.14", "", "中文 😀"]:
        assert bos + _ids(keras_tokenizer, text) + eos == hf(text)["input_ids"], text


@pytest.mark.parametrize("name", list(KINDS))
def test_spec_reads_the_pipeline(checkpoint, tmp_path, name):
    spec = read_tokenizer_spec(checkpoint(name))
    assert (
        spec.keras_base
        == {
            "byte_bpe": "BytePairTokenizer",
            "sentencepiece": "SentencePieceTokenizer",
            "wordpiece": "WordPieceTokenizer",
        }[spec.kind]
    )
    assert spec.notes == ()
    write_assets(checkpoint(name), spec, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(spec.asset_files)
    expected = {
        "bpe_gpt2": dict(split_pattern=None, unicode_normalization=None, add_bos=False),
        "bpe_gpt2_bos": dict(add_bos=True, bos_token="<|endoftext|>"),
        "bpe_llama3": dict(
            split_pattern=LLAMA3_SPLIT_PATTERN,
            ignore_merges=True,
            add_bos=True,
            bos_token="<|begin_of_text|>",
            eos_token="<|end_of_text|>",
        ),
        "bpe_qwen2": dict(
            split_pattern=QWEN2_SPLIT_PATTERN, unicode_normalization="NFC", bos_token=None
        ),
        "bpe_roberta": dict(
            bos_token="<s>",
            eos_token="</s>",
            pad_token="<pad>",
            mask_token="<mask>",
            add_bos=True,
            add_eos=True,
            framing=Framing(("<s>",), ("</s>", "</s>"), ("</s>",), segment_ids=False),
        ),
        "sp_llama_bpe": dict(prepend_scheme="first", model_type="bpe", add_bos=True),
        "sp_llama_unigram": dict(prepend_scheme="first", model_type="unigram"),
        "sp_gemma_bpe": dict(prepend_scheme="never", bos_token="<bos>", pad_token="<pad>"),
        "sp_gemma_unigram": dict(prepend_scheme="never", model_type="unigram"),
        "sp_llama_bpe_no_bytes": dict(drop_unknown=True),
        "wordpiece_uncased": dict(
            lowercase=True,
            strip_accents=True,
            bos_token="[CLS]",
            eos_token="[SEP]",
            mask_token="[MASK]",
            framing=Framing(("[CLS]",), ("[SEP]",), ("[SEP]",), segment_ids=True),
        ),
        "wordpiece_cased": dict(lowercase=False, strip_accents=False, add_bos=True, add_eos=True),
        "sp_albert_unigram": dict(
            model_type="unigram",
            whitespace_split=True,
            prepend_scheme="always",
            mask_token="[MASK]",
            framing=Framing(("[CLS]",), ("[SEP]",), ("[SEP]",), segment_ids=False),
        ),
        "sp_xlmr_unigram": dict(
            model_type="unigram",
            whitespace_split=True,
            mask_token="<mask>",
            framing=Framing(("<s>",), ("</s>", "</s>"), ("</s>",), segment_ids=False),
        ),
        "sp_deberta_unigram": dict(  # Metaspace alone, a normalizer that strips on the right
            model_type="unigram",
            whitespace_split=False,
            prepend_scheme="always",
            mask_token="[MASK]",
            framing=Framing(("[CLS]",), ("[SEP]",), ("[SEP]",), segment_ids=True),
        ),
        "wordpiece_uncased_keep_accents": dict(lowercase=True, strip_accents=False),
        "wordpiece_cased_strip_accents": dict(lowercase=False, strip_accents=True),
        "wordpiece_no_cjk_split": dict(lowercase=True, strip_accents=True, split_on_cjk=False),
    }.get(name, {})
    for field, value in expected.items():
        assert getattr(spec, field) == value, field


def test_unigram_model_read_as_llama_uses_the_pipeline_hf_runs(checkpoint, tmp_path):
    """transformers 5's LlamaTokenizer turns a Unigram `.model` into BPE merges: port that."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint("sp_llama_unigram"), ckpt)
    (ckpt / "tokenizer.json").unlink()
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="LlamaTokenizer", legacy=False)
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config))
    spec, keras_tokenizer = _convert(ckpt, tmp_path / "assets")
    assert spec.model_type == "bpe"
    _assert_same_ids(_hf(ckpt), keras_tokenizer, tokenizer_test_corpus(spec.special_tokens))


@pytest.mark.parametrize(
    "edit, scheme",
    [({"legacy": True}, "always"), ({"add_prefix_space": False}, "never")],
)
def test_llama_prepend_variants(checkpoint, tmp_path, edit, scheme):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint("sp_llama_bpe"), ckpt)
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    config.update(edit)
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config))
    spec, keras_tokenizer = _convert(ckpt, tmp_path / "assets")
    assert spec.prepend_scheme == scheme
    _assert_same_ids(_hf(ckpt), keras_tokenizer, tokenizer_test_corpus(spec.special_tokens))


@pytest.mark.parametrize(
    "name, options",
    [
        ("bpe_gpt2", {"<|endoftext|>": {"lstrip": True, "rstrip": True}}),
        (
            "sp_gemma_bpe",
            {"<mask>": {"lstrip": True}, "<bos>": {"rstrip": True}, "<eos>": {"single_word": True}},
        ),
        ("sp_llama_unigram", {"</s>": {"lstrip": True, "rstrip": True}}),
        ("wordpiece_uncased", {"[MASK]": {"lstrip": True}, "[SEP]": {"rstrip": True}}),
    ],
)
def test_added_token_strip_options(checkpoint, tmp_path, name, options):
    """lstrip / rstrip / single_word on added tokens (RoBERTa's <mask>, Phi-3's chat tokens)."""
    from transformers import AutoTokenizer

    ckpt = tmp_path / "ckpt"
    AutoTokenizer.from_pretrained(checkpoint(name)).save_pretrained(ckpt)
    (ckpt / "tokenizer.model").unlink(missing_ok=True)
    tokenizer_json = json.loads((ckpt / "tokenizer.json").read_text())
    for added in tokenizer_json["added_tokens"]:
        added.update(options.get(added["content"], {}))
    (ckpt / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config))

    spec, keras_tokenizer = _convert(ckpt, tmp_path / "assets")
    assert {t for t, *_ in spec.added_token_options} == set(options)
    _assert_same_ids(_hf(ckpt), keras_tokenizer, tokenizer_test_corpus(spec.special_tokens))


def test_decision_ignores_model_type(checkpoint, tmp_path):
    """A misleading config.json model_type changes nothing: the pipeline is the evidence."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint("bpe_qwen2"), ckpt)
    (ckpt / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert read_tokenizer_spec(ckpt) == read_tokenizer_spec(checkpoint("bpe_qwen2"))


@pytest.mark.parametrize("name", ["bpe_qwen2", "sp_llama_bpe", "wordpiece_uncased"])
def test_tf_data_graph_path_matches_eager(checkpoint, tmp_path, name):
    import tensorflow as tf

    ckpt = checkpoint(name)
    spec, keras_tokenizer = _convert(ckpt, tmp_path / "assets")
    texts = tokenizer_test_corpus(spec.special_tokens)[:24]
    eager = [_ids(keras_tokenizer, t) for t in texts]
    assert [list(map(int, row)) for row in keras_tokenizer(texts)] == eager
    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(5).map(keras_tokenizer)
    assert [row for batch in dataset for row in batch.to_list()] == eager

    padded = build_keras_tokenizer(spec, tmp_path / "assets", sequence_length=6)
    dense = padded(texts[:3])
    assert dense.shape == (3, 6)
    graph = next(iter(tf.data.Dataset.from_tensor_slices(texts[:3]).batch(3).map(padded)))
    assert graph.numpy().tolist() == dense.tolist()


@pytest.mark.parametrize("name", ["bpe_llama3", "sp_gemma_bpe", "wordpiece_cased"])
def test_config_and_assets_round_trip(checkpoint, tmp_path, name):
    ckpt = checkpoint(name)
    spec, keras_tokenizer = _convert(ckpt, tmp_path / "assets")
    saved = tmp_path / "saved"
    saved.mkdir()
    keras_tokenizer.save_assets(str(saved))
    assert sorted(p.name for p in saved.iterdir()) == sorted(spec.asset_files)
    clone = type(keras_tokenizer).from_config(keras_tokenizer.get_config())
    clone.load_assets(str(saved))
    texts = tokenizer_test_corpus(spec.special_tokens)
    assert [_ids(clone, t) for t in texts] == [_ids(keras_tokenizer, t) for t in texts]
    text = "Hello, world! 123"
    assert keras_tokenizer.detokenize(keras_tokenizer(text)).lower().replace(" ", "") == (
        text.lower().replace(" ", "")
    )


@pytest.mark.parametrize("kind", ["byte_bpe", "sentencepiece", "wordpiece"])
def test_generated_source_is_standalone_and_ruff_clean(tmp_path, kind):
    spec = TokenizerSpec(
        kind=kind,
        keras_base="",
        bos_token=None,
        eos_token=None,
        pad_token=None,
        unk_token=None,
        add_bos=False,
        add_eos=False,
        special_tokens=(),
        lowercase=False,
        split_pattern=None,
        asset_files=(),
    )
    paths = []
    for register in (None, "my_model"):
        source = tokenizer_module_source(
            spec, "MyModelTokenizer", header='"""Generated by hf2kh."""', register_package=register
        )
        assert "hf2kh" not in source.replace('"""Generated by hf2kh."""', "")
        path = tmp_path / f"tok_{register or 'plain'}.py"
        path.write_text(source)
        paths.append(str(path))
    config = ["--config", str(REPO_ROOT / "pyproject.toml")]
    ruff = [sys.executable, "-m", "ruff"]
    for args in (["check", *config, *paths], ["format", "--check", *config, *paths]):
        result = subprocess.run([*ruff, *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


def test_unreadable_or_unsupported_checkpoints(tmp_path):
    with pytest.raises(SourceError):
        read_tokenizer_spec(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError):
        read_tokenizer_spec(tmp_path / "empty")

    from tokenizers import Tokenizer, models, pre_tokenizers

    word_level = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / "wl").mkdir()
    word_level.save(str(tmp_path / "wl" / "tokenizer.json"))
    (tmp_path / "wl" / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"})
    )
    with pytest.raises(UnsupportedModelError):
        read_tokenizer_spec(tmp_path / "wl")


def test_tokenizer_json_is_the_evidence_when_transformers_cannot_load(checkpoint, tmp_path):
    """A tokenizer class that needs remote code: read tokenizer.json itself (no code is run)."""
    from tokenizers import Tokenizer

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint("bpe_llama3"), ckpt)
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    config.update(
        tokenizer_class="CustomTokenizer",
        auto_map={"AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]},
    )
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config))
    spec, keras_tokenizer = _convert(ckpt, tmp_path / "assets")
    assert (spec.bos_token, spec.add_bos) == ("<|begin_of_text|>", True)
    backend = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    for text in tokenizer_test_corpus(spec.special_tokens):
        assert _ids(keras_tokenizer, text) == backend.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("name", list(KINDS))
def test_detokenize_matches_hf_decode(checkpoint, tmp_path, name):
    """Decoding runs the original decoder: byte fallback groups, spaces, `##` joins all match,
    including random id sequences with invalid UTF-8 byte runs (what an untrained model emits)."""
    ckpt = checkpoint(name)
    spec, keras_tokenizer = _convert(ckpt, tmp_path / "assets")
    hf = _hf(ckpt)
    specials = set(hf.all_special_ids)
    rows = [hf(t, add_special_tokens=False)["input_ids"] for t in tokenizer_test_corpus()[:12]]
    rng = np.random.default_rng(0)
    rows += [
        [int(i) for i in rng.integers(0, len(hf), size=20) if i not in specials] for _ in range(8)
    ]
    for row in rows:
        assert keras_tokenizer.detokenize(row) == hf.decode(row), row


def test_real_minilm_wordpiece_gives_hf_ids(tmp_path):
    """The real all-MiniLM-L6-v2 tokenizer (uncased BERT vocabulary of 30522): HF's ids on the
    whole corpus (accents, Chinese characters, controls, special tokens written in the text)."""
    ckpt = real_checkpoint_dir()
    spec, keras_tokenizer = _convert(ckpt, tmp_path / "assets")
    assert (spec.kind, spec.lowercase, spec.strip_accents, spec.split_on_cjk) == (
        "wordpiece",
        True,
        True,
        True,
    )
    assert spec.framing == Framing(("[CLS]",), ("[SEP]",), ("[SEP]",), segment_ids=True)
    hf = _hf(ckpt)
    corpus = tokenizer_test_corpus(spec.special_tokens)
    assert sum(hf.unk_token_id in hf(t, add_special_tokens=False)["input_ids"] for t in corpus)
    _assert_same_ids(hf, keras_tokenizer, corpus)


# ------------------------------------------------------------------------------------------------
# Preprocessors: the generated segment packer, masked-LM and classifier preprocessors
# ------------------------------------------------------------------------------------------------

# Stand-ins for the model side of a generated package (generated elsewhere): the preprocessors
# only name their backbone class, and the package tests load the tokenizer from the converter.
_BACKBONE_STUB = '''import keras_hub


class {prefix}Backbone(keras_hub.models.Backbone):
    """Stand-in: the preprocessors only name their backbone class."""
'''
_CONVERTER_STUB = """from pathlib import Path

from {package}.{package}_tokenizer import {prefix}Tokenizer

PACKAGE_DIR = Path(__file__).parent
TOKENIZER_CONFIG = {config!r}


def load_tokenizer():
    tokenizer = {prefix}Tokenizer(**TOKENIZER_CONFIG)
    tokenizer.load_assets(str(PACKAGE_DIR / "assets"))
    return tokenizer
"""


@dataclass(frozen=True)
class _Source:
    source: str
    revision: str | None = None


@dataclass(frozen=True)
class _TextContext:
    """The part of the generator's `Context` the text modules read."""

    package: str
    tokenizer: TokenizerSpec
    segments: bool
    ir: _Source

    @property
    def prefix(self) -> str:
        return "".join(part.title() for part in self.package.split("_"))

    @property
    def import_prefix(self) -> str:
        return f"{self.package}."


def _text_package(root: Path, package: str, ckpt: Path, tasks, segments=None) -> Path:
    """What hf2kh generates for the text side of `ckpt` (tokenizer, segment packer, the tasks'
    preprocessors, their tests and test data), in `root/package`, with stand-ins for the model
    side. `segments`: whether the backbone takes segment ids (default: HF returns them)."""
    from hf2kh.generate.render import format_and_lint
    from hf2kh.generate.tokenizer.preprocessor import (
        model_tokenizer_source,
        preprocessor_cases,
        text_preprocessing_sources,
    )

    spec = read_tokenizer_spec(ckpt)
    if segments is None:
        segments = spec.framing.segment_ids
    ctx = _TextContext(package, spec, segments, _Source(ckpt.name))
    header = f"# Generated by hf2kh from {ckpt.name}."
    directory = root / package
    directory.mkdir(parents=True)
    files = {
        "__init__.py": "",
        f"{package}_backbone.py": _BACKBONE_STUB.format(prefix=ctx.prefix),
        f"convert_{package}_checkpoints.py": _CONVERTER_STUB.format(
            package=package, prefix=ctx.prefix, config=spec.keras_kwargs()
        ),
        f"{package}_tokenizer.py": model_tokenizer_source(ctx, 0, header, mask_role=True),
        **text_preprocessing_sources(ctx, tasks),
    }
    for name, text in files.items():
        (directory / name).write_text(text)
    format_and_lint(directory)
    write_assets(ckpt, spec, directory / "assets")
    (directory / "testdata").mkdir()
    cases = preprocessor_cases(_hf(ckpt), spec, tokenizer_test_corpus(spec.special_tokens))
    (directory / "testdata" / "preprocessor_cases.json").write_text(json.dumps(cases))
    return directory


def test_generated_preprocessors_give_hf_inputs(checkpoint, tmp_path):
    """The generated masked-LM and classifier preprocessors, run by the package's own tests:
    HF's `input_ids`, `token_type_ids` and `attention_mask` for single texts and pairs, padded
    and truncated (odd budgets that cut both texts of a pair, where HF's `longest_first` and
    KerasHub's round robin differ), special tokens and the pad token written in the text, eager
    and in `tf.data`. BERT-style WordPiece with segment ids, RoBERTa's byte-level BPE with
    `<s> a </s></s> b </s>` and no token_type_ids (zeros for the backbone), ALBERT's and XLM-R's
    SentencePiece Unigram, and the real all-MiniLM-L6-v2 tokenizer."""
    roberta = checkpoint("bpe_roberta")
    albert, xlmr = checkpoint("sp_albert_unigram"), checkpoint("sp_xlmr_unigram")
    packages = [
        _text_package(tmp_path, "tiny_bert", checkpoint("wordpiece_uncased"), TASKS),
        _text_package(tmp_path, "tiny_roberta", roberta, TASKS, segments=True),
        _text_package(tmp_path, "tiny_albert", albert, ["text_classifier"], segments=True),
        _text_package(tmp_path, "tiny_xlmr", xlmr, ["masked_lm"]),
        _text_package(tmp_path, "real_minilm", real_checkpoint_dir(), ["text_classifier"]),
    ]
    layouts = {
        "tiny_bert": "[CLS] a [SEP] b [SEP]",
        "tiny_roberta": "<s> a </s> </s> b </s>",
        "tiny_albert": "[CLS] a [SEP] b [SEP]",
        "tiny_xlmr": "<s> a </s> </s> b </s>",
        "real_minilm": "[CLS] a [SEP] b [SEP]",
    }
    for package in packages:
        source = (package / f"{package.name}_segment_packer.py").read_text()
        assert f"`{layouts[package.name]}`" in source
    tests = [f"{p.name}/{p.name}_preprocessor_test.py" for p in packages]
    # `tf.data` tracing is slow: the BERT package covers it
    skip = [f"--deselect={t}::test_tf_data_gives_hf_packing" for t in tests[1:]]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, *skip],
        cwd=tmp_path,
        env={**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-500:]
    assert f"{len(skip)} deselected" in result.stdout, result.stdout[-500:]
