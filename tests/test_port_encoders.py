"""Encoders on the model IR (issue 8): what the recognizer reads from a BERT masked LM, and,
independently of hf2kh's own verification, what the user gets from the port: the generated
package imported from disk, `keras_hub.models.MaskedLM.from_preset` and
`keras_hub.models.Backbone.from_preset` on the converted preset, compared with the HF model on a
padded batch with random token types. The generated package's backbone and masked-LM tests run
in a subprocess and ruff checks its code. Ports are shared through `conftest.ported`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForMaskedLM

from hf2kh.generate.render import RUFF_SETTINGS
from hf2kh.inspect.build import build_graph_and_model
from hf2kh.ir import Activation, Mlp, Norm, NormKind, Positions, Task
from hf2kh.port import import_generated
from hf2kh.recognize import recognize_model
from hf2kh.recognize.model import _step_text
from tests.fixtures.factory import FIXTURES
from tests.fixtures.outcomes import OUTCOMES, VERIFIED

MASKED_LMS = [
    n for n, outcome in OUTCOMES.items() if outcome == VERIFIED and FIXTURES[n].task == "masked_lm"
]
CLASSIFIERS = [
    n
    for n, outcome in OUTCOMES.items()
    if outcome == VERIFIED and FIXTURES[n].task == "sequence_classification"
]
BARE = [n for n, outcome in OUTCOMES.items() if outcome == VERIFIED and FIXTURES[n].task == "base"]
# generated task module and test count of each encoder task, backbone tests (3) included (a bare
# encoder has no task module)
TASK_TESTS = {
    "masked_lm": ("masked_lm", 4),
    "sequence_classification": ("text_classifier", 5),
    "base": (None, 3),
}
SUBPROCESS_TIMEOUT = 600


def _rel_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.sqrt(np.mean(expected**2)))


def test_bert_ir_is_a_post_norm_bidirectional_encoder_with_an_mlm_head(hf_fixture):
    path = hf_fixture("bert")
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    ir = recognize_model(graph, model, config, name="m", source=str(path), revision=None)
    assert ir.head.task is Task.MASKED_LM
    assert ir.attention.causal is False
    assert [_step_text(s) for s in ir.block_types[0].steps] == [
        "attention = self_attention(x)",
        "x = x + attention",
        "x = self_attention_layernorm(x)",
        "feedforward = feedforward(x)",
        "x = feedforward + x",
        "x = feedforward_layernorm(x)",
    ]
    norms = [c.spec for c in ir.block_types[0].components if isinstance(c.spec, Norm)]
    assert {(n.kind, n.epsilon) for n in norms} == {(NormKind.LAYER, config.layer_norm_eps)}
    assert config.layer_norm_eps == 1e-5  # not BERT's default 1e-12
    (mlp,) = [c for c in ir.block_types[0].components if isinstance(c.spec, Mlp)]
    assert mlp.hf_paths == ("intermediate.dense", "output.dense")  # sibling modules
    assert mlp.spec.intermediate_dim == config.intermediate_size and mlp.spec.bias
    stem = ir.stem
    assert stem.positions is Positions.LEARNED and stem.max_positions == 64
    assert stem.type_vocab_size == config.type_vocab_size == 2
    assert stem.embedding_norm.epsilon == config.layer_norm_eps
    transform = ir.head.transform
    assert transform.activation is Activation.GELU and transform.dim == config.hidden_size
    assert transform.norm.epsilon == config.layer_norm_eps
    assert ir.head.tied and ir.head.bias and ir.head.final_norm is None


@pytest.mark.parametrize("name", ["roberta", "xlm_roberta"])
def test_roberta_positions_are_counted_from_the_token_ids(hf_fixture, name):
    path = hf_fixture(name)
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    ir = recognize_model(graph, model, config, name="m", source=str(path), revision=None)
    assert ir.stem.positions is Positions.COUNTED
    assert ir.stem.position_padding_id == config.pad_token_id == 2  # not RoBERTa's usual 1
    assert ir.stem.max_positions == config.max_position_embeddings
    assert ir.stem.type_vocab_size == 1 and ir.head.task is Task.MASKED_LM
    norms = {c.spec.epsilon for c in ir.block_types[0].components if isinstance(c.spec, Norm)}
    assert norms == {config.layer_norm_eps}


def test_electra_projects_the_normalized_embeddings_up(hf_fixture):
    path = hf_fixture("electra")
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    ir = recognize_model(graph, model, config, name="m", source=str(path), revision=None)
    stem = ir.stem
    assert stem.embedding_dim == config.embedding_size == 16 != config.hidden_size
    assert stem.hf_embedding_projection == "electra.embeddings_project"
    assert stem.embedding_projection_bias and stem.project_last  # after the norm, with a bias
    assert stem.embedding_norm.epsilon == config.layer_norm_eps
    assert stem.type_vocab_size == 2 and stem.positions is Positions.LEARNED
    # the generator head comes down to the embedding width before the tied decoder
    assert ir.head.transform.dim == 16 and ir.head.hf_output_projection is None
    assert ir.head.tied and ir.head.task is Task.MASKED_LM


def test_albert_is_one_block_shared_by_all_layers(hf_fixture):
    """ALBERT calls one block module once per layer: the IR has one block path for every layer,
    the weight table maps its one set of weights to the one Keras layer."""
    from hf2kh.generate.weight_map import build_table

    path = hf_fixture("albert")
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    ir = recognize_model(graph, model, config, name="m", source=str(path), revision=None)
    block = "albert.encoder.albert_layer_groups.0.albert_layers.0"
    assert ir.shared_block and ir.num_layers == config.num_hidden_layers == 3
    assert {ir.block_path(i) for i in range(3)} == {block} and len(ir.block_types) == 1
    assert [_step_text(s) for s in ir.block_types[0].steps] == [
        "attention = self_attention(x)",
        "x = x + attention",
        "x = self_attention_layernorm(x)",
        "feedforward = feedforward(x)",
        "x = feedforward + x",
        "x = feedforward_layernorm(x)",
    ]
    (mlp,) = [c.spec for c in ir.block_types[0].components if isinstance(c.spec, Mlp)]
    assert mlp.activation is Activation.GELU_TANH and mlp.intermediate_dim == 56
    stem = ir.stem
    assert stem.embedding_dim == config.embedding_size == 16 and stem.hidden_dim == 32
    assert stem.hf_embedding_projection == "albert.encoder.embedding_hidden_mapping_in"
    assert stem.project_last and stem.embedding_projection_bias
    assert stem.type_vocab_size == 3 and stem.embedding_norm.epsilon == config.layer_norm_eps
    transform = ir.head.transform
    assert transform.activation is Activation.GELU_TANH and transform.dim == 16
    assert ir.head.tied and ir.head.bias and ir.head.task is Task.MASKED_LM

    shapes = {p.name: p.shape for p in graph.parameters}
    rows = build_table(ir, shapes).rows
    block_rows = [r for r in rows if r.hf_name.startswith(f"{block}.")]
    assert {r.keras_path.split("/")[0] for r in block_rows} == {"transformer_layer"}
    block_params = [n for n in shapes if n.startswith(f"{block}.")]
    assert sorted(r.hf_name for r in block_rows) == sorted(block_params)  # each once


def test_modernbert_local_and_global_layers_and_a_first_layer_without_its_norm(hf_fixture):
    """ModernBERT: rope with the theta of each layer's type, a bidirectional sliding window on
    the local layers (HF reads `|q - k| <= local_attention // 2`), a fused q/k/v, a GeGLU MLP,
    no biases, and layer 0 without the attention's input norm."""
    path = hf_fixture("modernbert")
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    ir = recognize_model(graph, model, config, name="m", source=str(path), revision=None)
    assert ir.head.task is Task.MASKED_LM and ir.num_layers == 4
    for i, layer_type in enumerate(config.layer_types):
        attention = ir.block_type(i).attention
        assert not attention.causal
        assert attention.rope.theta == config.rope_parameters[layer_type]["rope_theta"]
        local = layer_type == "sliding_attention"
        window = config.local_attention // 2 + 1 if local else None
        assert ir.layer_options[i].sliding_window == window
        assert not (attention.query_bias or attention.value_bias or attention.output_bias)
    assert {r.theta for r in (ir.block_type(i).attention.rope for i in range(4))} == {
        80000.0,
        500.0,
    }
    assert [_step_text(s) for s in ir.block_type(0).steps] == [
        "attention = self_attention(x)",
        "x = x + attention",
        "h = feedforward_layernorm(x)",
        "feedforward = feedforward(h)",
        "x = x + feedforward",
    ]
    assert [_step_text(s) for s in ir.block_type(1).steps][:2] == [
        "h = self_attention_layernorm(x)",
        "attention = self_attention(h)",
    ]
    (mlp,) = [c.spec for c in ir.block_type(1).components if isinstance(c.spec, Mlp)]
    assert mlp.gated and mlp.activation is Activation.GELU and not mlp.bias
    assert mlp.intermediate_dim == config.intermediate_size == 40
    norms = [c.spec for c in ir.block_type(1).components if isinstance(c.spec, Norm)]
    norms += [ir.stem.embedding_norm, ir.head.final_norm, ir.head.transform.norm]
    assert {(n.kind, n.epsilon, n.bias) for n in norms} == {(NormKind.LAYER, 1e-4, False)}
    assert config.norm_eps == 1e-4
    transform = ir.head.transform
    assert transform.activation is Activation.SILU and not transform.dense_bias
    assert ir.head.tied and ir.head.bias and ir.stem.positions is Positions.NONE


def test_pre_norm_encoder_steps_are_read_from_the_dataflow(hf_fixture):
    """RoBERTa-PreLayerNorm normalizes the attention's input inside its attention module and the
    MLP's inside `intermediate`; the steps say so, and the final norm is the model's."""
    path = hf_fixture("roberta_prelayernorm")
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    ir = recognize_model(graph, model, config, name="m", source=str(path), revision=None)
    (block,) = ir.block_types
    assert [_step_text(s) for s in block.steps] == [
        "h = self_attention_layernorm(x)",
        "attention = self_attention(h)",
        "x = x + attention",
        "h = feedforward_layernorm(x)",
        "feedforward = feedforward(h)",
        "x = feedforward + x",
    ]
    norms = {c.name: c.hf_paths for c in block.components if isinstance(c.spec, Norm)}
    assert norms == {
        "self_attention_layernorm": ("attention.LayerNorm",),
        "feedforward_layernorm": ("intermediate.LayerNorm",),
    }
    assert {c.spec.epsilon for c in block.components if isinstance(c.spec, Norm)} == {1e-6}
    assert ir.head.hf_final_norm == "roberta_prelayernorm.LayerNorm"
    assert ir.head.final_norm.epsilon == config.layer_norm_eps == 1e-6
    assert ir.stem.positions is Positions.COUNTED and ir.head.task is Task.MASKED_LM


@pytest.mark.parametrize("max_positions", [24, 40])
def test_few_positions_are_probed_on_fewer_tokens(max_positions):
    """The stem probe runs 64 tokens; a model with fewer positions (plus RoBERTa's padding
    offset) is probed on fewer instead of failing."""
    from transformers import RobertaConfig

    config = RobertaConfig(
        vocab_size=99,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=max_positions,
        pad_token_id=1,
    )
    config.architectures = ["RobertaForMaskedLM"]
    graph, model = build_graph_and_model(config)
    ir = recognize_model(graph, model, config, name="m", source="s", revision=None)
    assert ir.stem.max_positions == max_positions and ir.stem.positions is Positions.COUNTED
    assert any("the stem probed on" in line and "tokens" in line for line in ir.evidence)


def test_roberta_classification_head_is_a_text_classifier(hf_fixture):
    """RoBERTa's classifier has no pooler: its own `dense` and tanh on <s>, then `out_proj`."""
    path = hf_fixture("roberta_cls")
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    ir = recognize_model(graph, model, config, name="m", source=str(path), revision=None)
    assert ir.head.task is Task.TEXT_CLASSIFIER and ir.head.num_classes == 7
    assert (ir.head.hf_pooler, ir.head.hf_head) == ("classifier.dense", "classifier.out_proj")
    assert ir.head.labels[3] == "joy" and ir.stem.positions is Positions.COUNTED


def test_masked_lm_head_without_a_transform(hf_fixture):
    """EuroBERT's masked-LM head is its untied `lm_head` (with a bias) on the final norm's
    output: no dense transform; the backbone has the LM head, the task gathers the masked
    positions and calls it."""
    path = hf_fixture("eurobert")
    config = AutoConfig.from_pretrained(path)
    graph, model = build_graph_and_model(config)
    ir = recognize_model(graph, model, config, name="m", source=str(path), revision=None)
    head = ir.head
    assert head.task is Task.MASKED_LM and head.transform is None and head.hf_head == "lm_head"
    assert not head.tied and head.bias and head.final_norm.epsilon == config.rms_norm_eps
    attention = ir.attention
    assert not attention.causal and attention.rope.theta == 20000.0
    assert (attention.num_query_heads, attention.num_key_value_heads) == (4, 2)
    assert attention.head_dim == 16


@pytest.mark.parametrize(
    ("model_type", "architecture", "module"),
    [
        ("fnet", "FNetForMaskedLM", "FNetFourierTransform"),  # returns a tuple
        ("ibert", "IBertForMaskedLM", "IntLayerNorm"),  # QuantEmbedding returns (values, scale)
    ],
)
def test_modules_returning_tuples_are_refused_in_one_line(model_type, architecture, module):
    """Probes of modules that return tuples (FNet's Fourier sublayer, I-BERT's quantized
    embeddings) end in a one-line refusal naming the module, not a crash."""
    from hf2kh.errors import UnsupportedModelError

    config = AutoConfig.for_model(
        model_type,
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    config.architectures = [architecture]
    graph, model = build_graph_and_model(config)
    with pytest.raises(UnsupportedModelError) as info:
        recognize_model(graph, model, config, name="m", source="s", revision=None)
    assert "\n" not in str(info.value) and module in str(info.value)


def _tiny_ir(model_type: str, architecture: str, **overrides):
    """The IR of a tiny random `architecture` built from its config alone (meta device)."""
    sizes = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    config = AutoConfig.for_model(
        model_type, **{**sizes, "intermediate_size": 48, "max_position_embeddings": 64, **overrides}
    )
    config.architectures = [architecture]
    graph, model = build_graph_and_model(config)
    return recognize_model(graph, model, config, name="m", source="s", revision=None)


def test_albert_sharing_blocks_in_groups_is_refused():
    from hf2kh.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="each called more than once"):
        _tiny_ir(
            "albert",
            "AlbertForMaskedLM",
            embedding_size=16,
            num_hidden_layers=4,
            num_hidden_groups=2,  # layers 0-1 run group 0, layers 2-3 group 1
        )


def test_big_bird_masked_lm_runs_a_pooler_it_does_not_read():
    """BigBird's masked LM runs its model's pooler: accounted for, declared, not ported; its
    head's activation is the tanh GELU."""
    ir = _tiny_ir("big_bird", "BigBirdForMaskedLM", attention_type="original_full")
    assert ir.head.task is Task.MASKED_LM and ir.head.hf_pooler == "bert.pooler"
    assert ir.head.transform.activation is Activation.GELU_TANH


def test_bert_generation_head_is_the_projection_alone():
    ir = _tiny_ir("bert-generation", "BertGenerationDecoder")
    assert ir.head.task is Task.MASKED_LM and ir.head.transform is None
    assert ir.head.tied and ir.head.bias and not ir.attention.causal


def _padded_batch(config, seed: int = 0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(0, config.vocab_size, size=(3, 21)).astype("int32")
    padding_mask = np.ones_like(token_ids)
    padding_mask[1, 14:] = 0
    padding_mask[2, 5:] = 0
    token_ids[padding_mask == 0] = config.pad_token_id
    # a pad token among real tokens: RoBERTa's positions skip it, attention still reads it
    token_ids[0, 6] = config.pad_token_id
    types = getattr(config, "type_vocab_size", 1) or 1  # DeBERTa-v2's 0: no token types
    segment_ids = rng.integers(0, types, size=token_ids.shape) * padding_mask
    return token_ids, padding_mask, segment_ids.astype("int32")


@pytest.mark.parametrize("name", MASKED_LMS)
def test_preset_masked_lm_and_backbone_match_hf(ported, hf_fixture, name):
    """The user's path through keras_hub's public API, against HF's masked LM."""
    import keras
    import keras_hub

    port = ported(name)
    assert port.cli.exit_code == 0, port.cli.describe()
    import_generated(port.out, port.package)
    prefix = "".join(part.capitalize() for part in port.package.split("_"))
    masked_lm = keras_hub.models.MaskedLM.from_preset(str(port.out / "preset"))
    assert type(masked_lm).__name__ == f"{prefix}MaskedLM"
    assert isinstance(masked_lm, keras_hub.models.MaskedLM)
    assert type(masked_lm.preprocessor).__name__ == f"{prefix}MaskedLMPreprocessor"
    backbone = keras_hub.models.Backbone.from_preset(str(port.out / "preset"))
    assert type(backbone).__name__ == f"{prefix}Backbone"

    hf = AutoModelForMaskedLM.from_pretrained(
        hf_fixture(name), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    token_ids, padding_mask, segment_ids = _padded_batch(hf.config)
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    types = {}
    if "segment_ids" in backbone.input:  # token types, drawn at random
        inputs["segment_ids"] = segment_ids
        types["token_type_ids"] = torch.as_tensor(segment_ids, dtype=torch.long)
    with torch.no_grad():
        out = hf(
            input_ids=torch.as_tensor(token_ids, dtype=torch.long),
            attention_mask=torch.as_tensor(padding_mask),
            output_hidden_states=True,
            **types,
        )
    valid = padding_mask.astype(bool)
    hidden = keras.ops.convert_to_numpy(backbone(inputs))
    expected_hidden = out.hidden_states[-1].numpy()
    assert _rel_error(hidden[valid], expected_hidden[valid]) <= 1e-5

    # Masked positions, different in each row, all on real tokens.
    mask_positions = np.array([[0, 3, 20, 7], [13, 1, 2, 9], [4, 0, 1, 2]], "int32")
    logits = keras.ops.convert_to_numpy(masked_lm({**inputs, "mask_positions": mask_positions}))
    expected = np.take_along_axis(out.logits.numpy(), mask_positions[:, :, None], axis=1)
    assert logits.shape == expected.shape == (3, 4, hf.config.vocab_size)
    assert _rel_error(logits, expected) <= 1e-5


@pytest.mark.parametrize("name", MASKED_LMS + CLASSIFIERS + BARE)
def test_generated_encoder_package_tests_and_ruff(ported, name):
    """The generated backbone, task and tokenizer tests pass (the tokenizer's: one per corpus
    text and the round trip against HF's own decode, lowercased for WordPiece), ruff is clean."""
    port = ported(name)
    assert port.cli.exit_code == 0, port.cli.describe()
    package = port.out / port.package
    task, count = TASK_TESTS[FIXTURES[name].task]
    tests = [package / f"{port.package}_backbone_test.py"]
    if task is not None:
        tests.append(package / f"{port.package}_{task}_test.py")
    tests.append(package / f"{port.package}_tokenizer_test.py")
    cases = json.loads((package / "testdata" / "tokenizer_ids.json").read_text())
    count += len(cases) + 1
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(port.out)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, tests)],
        cwd=port.out,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{count} passed" in result.stdout, result.stdout[-2000:]
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *RUFF_SETTINGS, "--isolated", str(package)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert lint.returncode == 0, lint.stdout
    encoder = (package / f"{port.package}_encoder.py").read_text()
    assert "cache" not in encoder and "causal" not in encoder.lower()
    attention = (package / f"{port.package}_attention.py").read_text()
    assert "cache" not in attention and "start_index" not in attention
    assert not (package / f"{port.package}_decoder.py").exists()


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_preset_text_classifier_matches_hf_and_keeps_the_labels(ported, hf_fixture, name):
    """`TextClassifier.from_preset` gives HF's class logits on a padded batch with token types,
    `predict()` goes from raw strings to the same logits as HF on the tokenized text, and the
    7 class names are in the preset's task.json."""

    import keras
    import keras_hub
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    port = ported(name)
    assert port.cli.exit_code == 0, port.cli.describe()
    import_generated(port.out, port.package)
    prefix = "".join(part.capitalize() for part in port.package.split("_"))
    classifier = keras_hub.models.TextClassifier.from_preset(str(port.out / "preset"))
    assert type(classifier).__name__ == f"{prefix}TextClassifier"
    hf = AutoModelForSequenceClassification.from_pretrained(
        hf_fixture(name), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert hf.config.num_labels == 7
    token_ids, padding_mask, segment_ids = _padded_batch(hf.config)
    with torch.no_grad():
        expected = hf(
            input_ids=torch.as_tensor(token_ids, dtype=torch.long),
            attention_mask=torch.as_tensor(padding_mask),
            token_type_ids=torch.as_tensor(segment_ids, dtype=torch.long),
        ).logits.numpy()
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    if "segment_ids" in classifier.backbone.input:  # token types, drawn at random
        inputs["segment_ids"] = segment_ids
    got = keras.ops.convert_to_numpy(classifier(inputs))
    assert got.shape == expected.shape == (3, 7)
    assert _rel_error(got, expected) <= 1e-5

    texts = ["some text", "The quick brown fox jumps over the lazy dog."]
    tokenizer = AutoTokenizer.from_pretrained(hf_fixture(name))
    with torch.no_grad():
        hf_logits = hf(**tokenizer(texts, return_tensors="pt", padding=True)).logits.numpy()
    predicted = classifier.predict(texts, verbose=0)
    assert _rel_error(np.asarray(predicted), hf_logits) <= 1e-5

    task = json.loads((port.out / "preset" / "task.json").read_text())
    labels = [hf.config.id2label[i] for i in range(7)]
    assert task["config"]["labels"] == labels and task["config"]["num_classes"] == 7
    assert labels[3] == "joy"  # the fixture's names, not LABEL_3
