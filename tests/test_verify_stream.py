"""Streamed verification and conversion (`hf2kh.verify.stream`, and the conversion script, which
streams by default), small scale: the llama fixture's port (shared with test_port_decoders)
verified with both models held one block at a time gives the same rows and errors as the in-memory
path on the same batch, and the streamed conversion writes the same preset as `--in-memory`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest


def _datasets(preset: Path) -> dict:
    out = {}
    for file in sorted(preset.glob("*.weights.h5")):
        with h5py.File(file, "r") as f:
            f.visititems(
                lambda name, obj: (
                    out.__setitem__(name, (obj[()], dict(obj.attrs)))
                    if isinstance(obj, h5py.Dataset)
                    else None
                )
            )
    return out


def test_streamed_verification_matches_in_memory(ported, hf_fixture):
    import keras_hub
    import torch

    from hf2kh.generate.tokenizer import tokenizer_test_corpus
    from hf2kh.ir.serialize import from_dict
    from hf2kh.port import import_generated
    from hf2kh.source import load_config, open_checkpoint
    from hf2kh.verify.decoder import verify_decoder
    from hf2kh.verify.run import (
        PortFiles,
        Reference,
        VerifyOptions,
        load_hf_side,
        report_fields,
        verify,
    )
    from hf2kh.verify.stream import (
        GREEDY_SKIPPED,
        STREAMED_CASES,
        streamed_causal_lm,
        streamed_hf_model,
    )
    from hf2kh.verify.sublayers import sublayer_points

    port = ported("llama")
    assert port.cli.exit_code == 0, port.cli.describe()
    files = PortFiles(port.out, port.package, port.out / "preset", port.out / "model_ir.json")
    reference = Reference(hf_fixture("llama"))

    streamed = verify(files, reference, VerifyOptions(stream=True))

    # the in-memory path on the same batch, without generation
    ir = from_dict(json.loads(files.model_ir.read_text()))
    import_generated(files.parent, files.name)
    hf = load_hf_side(reference, VerifyOptions())
    causal_lm = keras_hub.models.CausalLM.from_preset(str(files.preset))
    blocks = [ir.block_path(i) for i in range(ir.num_layers)]
    in_memory = verify_decoder(
        hf.model,
        causal_lm,
        blocks,
        hf.tokenizer,
        tokenizer_test_corpus(hf.tokenizer_spec.special_tokens),
        name=ir.name,
        cases=list(STREAMED_CASES),
        sublayers=sublayer_points(ir, files.parent / files.name / "weight_map.json"),
        greedy=False,
    )

    assert streamed.passed and in_memory.passed
    assert [c.name for c in streamed.checks] == [c.name for c in in_memory.checks]
    for got, expected in zip(streamed.checks, in_memory.checks, strict=True):
        assert got.passed == expected.passed, got.name
        for field in ("max_abs", "rel_rms", "rel_elementwise"):
            a, b = getattr(got, field), getattr(expected, field)
            assert (a is None) == (b is None), (got.name, field)
            if a is not None:
                assert a == pytest.approx(b, rel=1e-6, abs=1e-12), (got.name, field, a, b)
    groups = {c.group for c in streamed.checks}
    assert {"layers", "blocks", "logits", "tokenizer"} <= groups
    assert "generation" not in groups
    assert streamed.notes == [GREEDY_SKIPPED]
    assert streamed.environment["streamed"] is True
    assert report_fields(streamed)["notes"] == [GREEDY_SKIPPED]  # report.json says it too
    # the layer rows compare real numbers: the logits error is not zero, and not huge
    logits = next(c for c in streamed.checks if c.name == "logits")
    assert 0 < logits.rel_elementwise < 1e-5

    # streamed means nothing stays loaded: the HF parameters are back on `meta`
    ckpt = open_checkpoint(str(reference.path))
    model = streamed_hf_model(ckpt, load_config(ckpt), blocks)
    task = streamed_causal_lm(files.preset)
    ids = np.array([[5, 6, 7, 8]], "int32")
    with torch.no_grad():
        model(input_ids=torch.as_tensor(ids, dtype=torch.long))
    task({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    assert all(p.device.type == "meta" for p in model.parameters())
    assert all(v._value is None for v in task.weights)  # read on use, never held


def test_streamed_conversion_writes_the_in_memory_preset(ported, hf_fixture, tmp_path):
    port = ported("llama")
    assert port.cli.exit_code == 0, port.cli.describe()
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    env["PYTHONPATH"] = os.pathsep.join([str(port.out), env.get("PYTHONPATH", "")])
    preset = tmp_path / "in_memory"  # the port's own preset is the streamed one
    script = f"{port.package}.convert_{port.package}_checkpoints"
    command = [sys.executable, "-m", script, "--checkpoint", str(hf_fixture("llama"))]
    result = subprocess.run(
        [*command, "--preset", str(preset), "--in-memory"],
        cwd=port.out,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = _datasets(port.out / "preset")
    got = _datasets(preset)
    assert expected and got.keys() == expected.keys()
    for name, (value, attrs) in expected.items():
        assert np.array_equal(got[name][0], value), name
        assert got[name][1] == attrs, name
    for config in ("config.json", "task.json", "preprocessor.json"):
        assert (preset / config).read_text() == (port.out / "preset" / config).read_text()


def test_streaming_is_chosen_when_the_model_does_not_fit():
    from hf2kh.verify.stream import estimate

    # an 8B model, float32 reference + bfloat16 port: about 49.5 GB with the imports
    big = estimate(8_000_000_000, "bfloat16", available=24 * 10**9)
    assert not big.fits
    assert 49e9 < big.needed < 50e9
    assert "49.5 GB" in big.describe()
    assert estimate(10_000_000, "float32", available=24 * 10**9).fits
