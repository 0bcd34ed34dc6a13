"""hf2kh.source: opening checkpoints (local and hub cache), validating files, reading tensors.

Every checkpoint here is a tiny Llama built and saved by the test; nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from hf2kh.errors import SourceError
from hf2kh.source import (
    Checkpoint,
    TensorInfo,
    check_shapes,
    iter_tensors,
    load_config,
    open_checkpoint,
    tensor_index,
)

SHA = "0123456789abcdef0123456789abcdef01234567"


def tiny_config(**overrides) -> LlamaConfig:
    kwargs = dict(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        rms_norm_eps=1e-5,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_config()).eval()


@pytest.fixture(scope="module")
def single_dir(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("single")
    model.save_pretrained(path)
    (path / "tokenizer_config.json").write_text("{}")
    (path / "vocab.txt").write_text("[PAD]\n")
    return path


@pytest.fixture(scope="module")
def sharded_dir(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sharded")
    model.save_pretrained(path, max_shard_size="8KB")
    return path


@pytest.fixture(scope="module")
def pickle_dir(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pickle")
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    return path


def copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (path / "config.json").write_text(json.dumps(config))


def expect_error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(SourceError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def shard_files(path: Path) -> list[Path]:
    return sorted(path.glob("model-*.safetensors"))


def assert_same_tensors(ckpt: Checkpoint, model: torch.nn.Module) -> None:
    state = model.state_dict()
    seen = []
    for name, tensor in iter_tensors(ckpt):
        seen.append(name)
        assert torch.equal(tensor, state[name]), name
    assert sorted(seen) == sorted(state)  # every tensor exactly once


# -- happy paths -----------------------------------------------------------------------------------


def test_single_safetensors(single_dir, model):
    ckpt = open_checkpoint(str(single_dir))
    assert ckpt.repo == str(single_dir)
    assert ckpt.path == single_dir
    assert ckpt.revision is None
    assert ckpt.model_type == "llama"
    assert ckpt.config["hidden_size"] == 16
    assert ckpt.weight_format == "safetensors"
    assert ckpt.weight_files == (single_dir / "model.safetensors",)
    assert ckpt.tokenizer_files == (single_dir / "tokenizer_config.json", single_dir / "vocab.txt")
    assert ckpt.trust_remote_code is False

    index = tensor_index(ckpt)
    state = model.state_dict()
    assert set(index) == set(state)
    for name, info in index.items():
        assert info == TensorInfo(
            name, tuple(state[name].shape), "float32", single_dir / "model.safetensors"
        )
    assert_same_tensors(ckpt, model)


def test_sharded_safetensors(sharded_dir, model):
    ckpt = open_checkpoint(str(sharded_dir))
    shards = shard_files(sharded_dir)
    assert len(shards) > 1
    assert ckpt.weight_files == tuple(shards)
    index = tensor_index(ckpt)
    assert {n: i.shape for n, i in index.items()} == {
        n: tuple(t.shape) for n, t in model.state_dict().items()
    }
    assert {i.file for i in index.values()} == set(shards)
    assert_same_tensors(ckpt, model)


def test_load_config_and_matching_shapes(single_dir):
    ckpt = open_checkpoint(single_dir)
    config = load_config(ckpt)
    assert isinstance(config, LlamaConfig)
    assert config.intermediate_size == 32
    with torch.device("meta"):
        built = AutoModelForCausalLM.from_config(config)
    check_shapes(ckpt, {n: tuple(t.shape) for n, t in built.state_dict().items()})


def test_need_weights_false_only_needs_config(single_dir, tmp_path):
    path = tmp_path / "config_only"
    path.mkdir()
    shutil.copy(single_dir / "config.json", path / "config.json")
    ckpt = open_checkpoint(str(path), need_weights=False)
    assert ckpt.weight_files == ()
    assert ckpt.model_type == "llama"
    expect_error("without its weights", tensor_index, ckpt)


def test_pickle_with_allow_pickle_loads_weights_only(pickle_dir, model):
    ckpt = open_checkpoint(str(pickle_dir), allow_pickle=True)
    assert ckpt.weight_format == "pickle"
    assert ckpt.weight_files == (pickle_dir / "pytorch_model.bin",)
    index = tensor_index(ckpt)
    assert {n: (i.shape, i.dtype) for n, i in index.items()} == {
        n: (tuple(t.shape), "float32") for n, t in model.state_dict().items()
    }
    assert_same_tensors(ckpt, model)


def test_safetensors_preferred_over_pickle(single_dir, tmp_path, model):
    path = copy(single_dir, tmp_path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    ckpt = open_checkpoint(str(path))  # no --allow-pickle needed: the .bin is never touched
    assert ckpt.weight_format == "safetensors"


def test_remote_code_allowed_with_flag(single_dir, tmp_path):
    path = copy(single_dir, tmp_path)
    edit_config(path, auto_map={"AutoConfig": "configuration_x.XConfig"})
    ckpt = open_checkpoint(str(path), trust_remote_code=True)
    assert ckpt.trust_remote_code is True


def test_sharded_pickle_with_allow_pickle(model, tmp_path):
    path = tmp_path / "sharded_pickle"
    path.mkdir()
    model.config.save_pretrained(path)
    state = model.state_dict()
    names = list(state)
    halves = {
        "pytorch_model-00001-of-00002.bin": names[:5],
        "pytorch_model-00002-of-00002.bin": names[5:],
    }
    weight_map = {}
    for file_name, part in halves.items():
        torch.save({n: state[n] for n in part}, path / file_name)
        weight_map.update(dict.fromkeys(part, file_name))
    (path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ckpt = open_checkpoint(str(path), allow_pickle=True)
    assert [p.name for p in ckpt.weight_files] == sorted(halves)
    assert_same_tensors(ckpt, model)


def test_dtypes_are_torch_names(single_dir, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "dtypes"
    path.mkdir()
    shutil.copy(single_dir / "config.json", path / "config.json")
    tensors = {
        "a": torch.randn(3, 2).to(torch.bfloat16),
        "b": torch.randn(4).to(torch.float16),
        "c": torch.arange(5),
        "d": torch.tensor([True, False]),
        "e": torch.zeros(0, 3),
    }
    save_file(tensors, path / "model.safetensors")
    ckpt = open_checkpoint(str(path))
    index = tensor_index(ckpt)
    for name, tensor in iter_tensors(ckpt):
        assert index[name].dtype == str(tensor.dtype).removeprefix("torch.")
        assert index[name].shape == tuple(tensor.shape)
        assert torch.equal(tensor, tensors[name])


# -- hub ids, offline ------------------------------------------------------------------------------


def fake_hub_cache(home: Path, repo_id: str, files_from: Path) -> Path:
    """The HF cache layout snapshot_download leaves behind: refs/main -> snapshots/<sha>/."""
    storage = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(SHA)
    snapshot = storage / "snapshots" / SHA
    shutil.copytree(files_from, snapshot)
    return snapshot


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return home


def test_hub_id_offline_not_cached(offline):
    message = expect_error("HF_HUB_OFFLINE", open_checkpoint, "acme/not-cached")
    assert "acme/not-cached" in message
    assert not (offline / "hub" / "models--acme--not-cached" / "snapshots").exists()


def test_hub_id_offline_from_cache(offline, sharded_dir, model):
    snapshot = fake_hub_cache(offline, "acme/tiny", sharded_dir)
    ckpt = open_checkpoint("acme/tiny")
    assert ckpt.revision == SHA
    assert ckpt.path == snapshot
    assert ckpt.weight_files == tuple(shard_files(snapshot))
    assert_same_tensors(ckpt, model)
    assert open_checkpoint("acme/tiny", revision=SHA).path == snapshot
    expect_error("not in the HF cache", open_checkpoint, "acme/tiny", revision="v2")


def test_hub_id_offline_pickle_only(offline, pickle_dir):
    fake_hub_cache(offline, "acme/old", pickle_dir)
    expect_error("--allow-pickle", open_checkpoint, "acme/old")
    assert open_checkpoint("acme/old", allow_pickle=True).weight_format == "pickle"


def _http_error(cls):
    import httpx2

    request = httpx2.Request("GET", "https://huggingface.co/api/models/acme/x")
    return cls("hub said no", response=httpx2.Response(404, request=request))


@pytest.mark.parametrize(
    ("make_error", "match"),
    [
        (lambda e: _http_error(e.RepositoryNotFoundError), "neither a local directory nor a hub"),
        (lambda e: _http_error(e.GatedRepoError), "gated"),
        (lambda e: _http_error(e.RevisionNotFoundError), "--revision"),
        (lambda e: _http_error(e.HfHubHTTPError), "hub said no"),
        (lambda e: e.LocalEntryNotFoundError("gone"), "cannot be reached"),
        (lambda e: e.IncompleteSnapshotError("part", snapshot_path="x"), "incomplete"),
        (lambda e: OSError("disk\nfull"), "disk full"),
    ],
)
def test_hub_errors_become_source_errors(monkeypatch, tmp_path, make_error, match):
    import huggingface_hub
    from huggingface_hub import errors

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append(kwargs)
        raise make_error(errors)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    expect_error(match, open_checkpoint, "acme/x", revision="main", token="hf_secret")
    assert calls[0]["local_files_only"] is False
    assert calls[0]["token"] == "hf_secret"
    assert calls[0]["cache_dir"] == str(tmp_path / "hub")
    assert "config.json" in calls[0]["allow_patterns"]
    assert not any(p.endswith(".bin") for p in calls[0]["allow_patterns"])


# -- failures: one line each, saying what to do ----------------------------------------------------


def test_path_does_not_exist(tmp_path):
    expect_error("does not exist", open_checkpoint, str(tmp_path / "missing"))
    expect_error("does not exist", open_checkpoint, "some/nested/missing/dir")


def test_file_instead_of_directory(single_dir):
    expect_error("not a checkpoint directory", open_checkpoint, str(single_dir / "config.json"))


def test_revision_with_local_directory(single_dir):
    expect_error("--revision", open_checkpoint, str(single_dir), revision="main")


def test_no_config_json(single_dir, tmp_path):
    path = copy(single_dir, tmp_path)
    (path / "config.json").unlink()
    expect_error("no config.json", open_checkpoint, str(path))


def test_config_without_model_type(single_dir, tmp_path):
    path = copy(single_dir, tmp_path)
    edit_config(path, model_type=None)
    expect_error("no model_type", open_checkpoint, str(path))


def test_config_invalid_json(single_dir, tmp_path):
    path = copy(single_dir, tmp_path)
    (path / "config.json").write_text('{"model_type": "llama",\n "hidden_size": }')
    message = expect_error("not valid JSON", open_checkpoint, str(path))
    assert "line 2" in message


def test_no_weight_files(single_dir, tmp_path):
    path = copy(single_dir, tmp_path)
    (path / "model.safetensors").unlink()
    expect_error("no PyTorch weight files", open_checkpoint, str(path))


def test_only_pickled_weights_without_flag(pickle_dir):
    expect_error("--allow-pickle", open_checkpoint, str(pickle_dir))


MARKER: list[str] = []


def _side_effect(text: str) -> None:
    MARKER.append(text)


class Evil:
    def __reduce__(self):
        return (_side_effect, ("pickle code ran",))


def test_pickle_with_code_is_refused(pickle_dir, tmp_path):
    path = copy(pickle_dir, tmp_path)
    torch.save({"weight": torch.zeros(2), "evil": Evil()}, path / "pytorch_model.bin")
    expect_error("objects other than tensors", open_checkpoint, str(path), allow_pickle=True)
    assert MARKER == []


def test_remote_code_without_flag(single_dir, tmp_path):
    path = copy(single_dir, tmp_path)
    edit_config(path, auto_map={"AutoConfig": "configuration_x.XConfig"})
    expect_error("--trust-remote-code", open_checkpoint, str(path))
    expect_error("--trust-remote-code", open_checkpoint, str(path), need_weights=False)


def test_unknown_model_type_without_code(single_dir, tmp_path):
    path = copy(single_dir, tmp_path)
    edit_config(path, model_type="not_a_real_model")
    expect_error("not known to transformers", open_checkpoint, str(path))


def test_truncated_safetensors(single_dir, tmp_path):
    path = copy(single_dir, tmp_path)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-100])
    message = expect_error("truncated", open_checkpoint, str(path))
    assert str(weights) in message
    weights.write_bytes(data[:5])
    expect_error("truncated", open_checkpoint, str(path))


def test_corrupt_safetensors_header(single_dir, tmp_path):
    path = copy(single_dir, tmp_path)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"\x00garbage"
    weights.write_bytes(bytes(data))
    message = expect_error("not a valid safetensors file", open_checkpoint, str(path))
    assert str(weights) in message
    data[0:8] = (2**60).to_bytes(8, "little")
    weights.write_bytes(bytes(data))
    expect_error("header length", open_checkpoint, str(path))


def test_bad_data_offsets(single_dir, tmp_path):
    path = copy(single_dir, tmp_path)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [1, *header[name]["shape"][1:]]  # bytes no longer match the shape
    raw = json.dumps(header).encode()
    weights.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])
    expect_error(name, open_checkpoint, str(path))


def test_shard_index_names_missing_file(sharded_dir, tmp_path):
    path = copy(sharded_dir, tmp_path)
    missing = shard_files(path)[-1]
    missing.unlink()
    message = expect_error("missing", open_checkpoint, str(path))
    assert missing.name in message


def test_shard_index_names_absent_tensor(sharded_dir, tmp_path):
    path = copy(sharded_dir, tmp_path)
    index_path = path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["ghost.weight"] = shard_files(path)[0].name
    index_path.write_text(json.dumps(index))
    expect_error("'ghost.weight'.*no shard contains it", open_checkpoint, str(path))


def test_shard_index_outside_directory(sharded_dir, tmp_path):
    path = copy(sharded_dir, tmp_path)
    index_path = path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors"
    index_path.write_text(json.dumps(index))
    expect_error("outside the checkpoint directory", open_checkpoint, str(path))


def test_shape_contradicts_config(single_dir, tmp_path):
    path = copy(single_dir, tmp_path)
    edit_config(path, intermediate_size=48)
    ckpt = open_checkpoint(str(path))
    with torch.device("meta"):
        built = AutoModelForCausalLM.from_config(load_config(ckpt))
    expected = {n: tuple(t.shape) for n, t in built.state_dict().items()}
    message = expect_error("'model.layers.0.mlp.gate_proj.weight'", check_shapes, ckpt, expected)
    assert "[32, 16]" in message and "[48, 16]" in message


def test_load_config_failure_is_source_error(single_dir, monkeypatch):
    import transformers

    ckpt = open_checkpoint(str(single_dir))

    def broken(*args, **kwargs):
        raise ValueError("bad\nvalue")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", broken)
    expect_error("cannot build a config", load_config, ckpt)
