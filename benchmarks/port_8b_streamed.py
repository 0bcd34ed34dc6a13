"""Benchmark: `hf2kh port --verify` of a Llama-3-8B-shaped checkpoint on one small machine.

`build` writes a random-weight checkpoint of Llama-3-8B's shape (32 layers, hidden 4096, MLP
14336, 32 heads / 8 key-value heads, vocabulary 128256, untied head) in bfloat16, as sharded
safetensors with an index, and a byte-level BPE tokenizer in Llama 3's style trained by the
tests' fixtures (its 512 ids are a part of the model's vocabulary). `run` runs
`hf2kh port <checkpoint> --verify --dtype bfloat16` on it in a child process, with
`benchmarks/speed.py`'s child runner, and reports the child's peak RSS (its VmHWM, and its
conversion child's from `getrusage`), its wall time and its per-stage times (from its progress
lines).

    python benchmarks/port_8b_streamed.py build /tmp/llama8b
    python benchmarks/port_8b_streamed.py run /tmp/llama8b --out /tmp/llama8b-port

The checkpoint is 16 GB and the bfloat16 preset as much again: delete both afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' tokenizer fixtures, benchmarks/speed.py

LLAMA3_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    max_position_embeddings=8192,
    tie_word_embeddings=False,
)
SHARD_BYTES = 5 * 10**9


def build(out: Path, seed: int = 0, **overrides) -> Path:
    """Write the random bfloat16 checkpoint: config, tokenizer, sharded safetensors + index.
    The model is built on the meta device; each tensor is drawn and written shard by shard, so
    the peak is about one shard."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.fixtures.tokenizers import LLAMA3_STYLE, train_byte_bpe

    out.mkdir(parents=True, exist_ok=True)
    train_byte_bpe(out, **LLAMA3_STYLE)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    config = LlamaConfig(
        **{**LLAMA3_8B, **overrides},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        dtype="bfloat16",
        architectures=["LlamaForCausalLM"],
    )
    config.save_pretrained(str(out))
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(seed)
    files: list[list[str]] = []  # the tensor names of each shard, written as it fills
    shard: dict[str, torch.Tensor] = {}
    total = 0

    def flush():
        save_file(shard, str(out / f"shard-{len(files)}.tmp"), metadata={"format": "pt"})
        files.append(list(shard))
        shard.clear()

    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            tensor = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            tensor = 0.02 * torch.randn(shape, generator=generator)
        tensor = tensor.to(torch.bfloat16)
        if shard and sum(t.nbytes for t in shard.values()) + tensor.nbytes > SHARD_BYTES:
            flush()
        shard[name] = tensor
        total += tensor.nbytes
    flush()
    weight_map = {}
    for i, names in enumerate(files):
        file = f"model-{i + 1:05d}-of-{len(files):05d}.safetensors"
        (out / f"shard-{i}.tmp").rename(out / file)
        weight_map.update(dict.fromkeys(names, file))
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
    )
    return out


def run(checkpoint: Path, out: Path, extra: list[str]) -> dict:
    """`hf2kh port CHECKPOINT --verify --dtype bfloat16` in a child (speed.py's child runner):
    wall time, peak RSS of the port and of its conversion child, per-stage seconds."""
    from benchmarks.speed import port

    options = ("--dtype", "bfloat16", "--force", *extra)  # --force replaces only an earlier port
    child = port(checkpoint, out, extra=options, echo=True, check=False)
    result = {
        "returncode": child.returncode,
        "wall_s": round(child.wall_s, 1),
        "peak_rss_gb": round(max(child.peak_rss_mb, child.children_peak_rss_mb) / 1e3, 2),
        "port_peak_rss_gb": round(child.peak_rss_mb / 1e3, 2),
        "conversion_peak_rss_gb": round(child.children_peak_rss_mb / 1e3, 2),
        "stages_s": {name: round(seconds, 1) for name, seconds in child.stage_s.items()},
        "command": f"hf2kh port {checkpoint} --out {out} --verify {' '.join(options)}",
    }
    print(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("build", help="write the random 8B-shaped bf16 checkpoint")
    b.add_argument("out", type=Path)
    b.add_argument("--layers", type=int, help="fewer layers (a quick try of the pipeline)")
    r = sub.add_parser("run", help="hf2kh port --verify on it, with peak RSS and stage times")
    r.add_argument("checkpoint", type=Path)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--json", type=Path, help="also write the figures here")
    args, extra = parser.parse_known_args()
    if args.what == "build":
        overrides = {"num_hidden_layers": args.layers} if args.layers else {}
        start = time.perf_counter()
        build(args.out, **overrides)
        print(f"built {args.out} in {time.perf_counter() - start:.0f} s")
        return
    result = run(args.checkpoint, args.out, extra)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    sys.exit(result["returncode"])


if __name__ == "__main__":
    main()
