"""Benchmark: `hf2kh inspect` on config-only checkpoints of large models.

Writes a config.json of each size into a temporary directory, runs `hf2kh inspect` on it in a
fresh process and reports wall time and the child's peak resident memory. No weights are needed
(or downloaded): the model is built on the meta device.

    python benchmarks/inspect_large_config.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "llama-3-8b": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "rope_theta": 500000.0,
    },
    "llama-2-70b": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
    },
}


def main() -> None:
    print("| config | wall time (s) | peak RSS (MiB) |")
    print("|---|---|---|")
    for name, config in CONFIGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "config.json").write_text(json.dumps(config))
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "hf2kh.cli", "inspect", tmp, "--json", f"{tmp}/g.json"],
                check=True,
                capture_output=True,
            )
            elapsed = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"| {name} | {elapsed:.1f} | {max(peak, before) / 1024:.0f} |")


if __name__ == "__main__":
    main()
