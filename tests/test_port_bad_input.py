"""`hf2kh port` on bad input: one `error:` line, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf2kh.cli import main


def _copy(hf_fixture, tmp_path: Path, name: str = "llama") -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(hf_fixture(name), target)
    return target


def _no_weights(path: Path) -> None:
    (path / "model.safetensors").unlink()


def _only_pickle(path: Path) -> None:
    torch.save(load_file(path / "model.safetensors"), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()


def _truncated(path: Path) -> None:
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


def _corrupt_header(path: Path) -> None:
    data = bytearray((path / "model.safetensors").read_bytes())
    data[8:20] = b"not json!!!!"
    (path / "model.safetensors").write_bytes(bytes(data))


def _index_names_missing_shard(path: Path) -> None:
    tensors = load_file(path / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    save_file({n: tensors[n] for n in names[:half]}, path / "model-00001-of-00002.safetensors")
    (path / "model.safetensors").unlink()
    weight_map = {n: "model-00001-of-00002.safetensors" for n in names[:half]}
    weight_map.update({n: "model-00002-of-00002.safetensors" for n in names[half:]})
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def _shape_contradicts_config(path: Path) -> None:
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight"] = torch.zeros(7, 48)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def _remote_code(path: Path) -> None:
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (path / "config.json").write_text(json.dumps(config))
    (path / "modeling_evil.py").write_text("raise SystemExit('remote code was run')\n")


CASES = {
    "no_weights": (_no_weights, [], "weight"),
    "only_pickle": (_only_pickle, [], "--allow-pickle"),
    "pickle_allowed_but_not_safetensors": (_only_pickle, ["--allow-pickle"], "safetensors"),
    "truncated": (_truncated, [], "model.safetensors"),
    "corrupt_header": (_corrupt_header, [], "model.safetensors"),
    "index_names_missing_shard": (_index_names_missing_shard, [], "model-00002-of-00002"),
    "shape_contradicts_config": (_shape_contradicts_config, [], "model.layers.0.mlp.up_proj"),
    "remote_code": (_remote_code, [], "--trust-remote-code"),
}


def _run(monkeypatch, capfd, args: list[str]) -> str:
    monkeypatch.setattr(sys, "argv", ["hf2kh", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2  # README: bad input or unsupported model
    captured = capfd.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    assert "error: " not in captured.out  # the error goes to stderr, progress to stdout
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err
    return errors[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_checkpoint(case, hf_fixture, tmp_path, monkeypatch, capfd):
    edit, flags, expected = CASES[case]
    path = _copy(hf_fixture, tmp_path)
    edit(path)
    out = tmp_path / "out"
    line = _run(monkeypatch, capfd, ["port", str(path), "--out", str(out), "--name", "bad", *flags])
    assert expected in line
    assert not out.exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_missing_path(tmp_path, monkeypatch, capfd):
    line = _run(monkeypatch, capfd, ["port", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert "does not exist" in line


def test_hub_id_offline_and_not_cached(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    line = _run(
        monkeypatch, capfd, ["port", "someone/not-cached-model", "--out", str(tmp_path / "o")]
    )
    assert "offline" in line.lower() or "cache" in line.lower()
