"""Build `examples/tiny-llama/`, the small Llama checkpoint the README demo ports.

    python examples/make_tiny_llama.py

A Hugging Face checkpoint directory (config.json, model.safetensors, SentencePiece tokenizer)
with random weights, made by the test fixture factory (`tests/fixtures/factory.py`): grouped-query
attention (4 heads, 2 kv heads), rope_theta 500000, rms_norm_eps 1e-5 and an untied LM head,
so the demo shows values a port must carry over. About 0.4 MB. Runs offline; the output is
deterministic (seed 0), so rebuilding it gives the same weights.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "examples" / "tiny-llama"

sys.path.insert(0, str(REPO_ROOT))
from tests.fixtures.factory import FixtureSpec, build_from_spec  # noqa: E402

TINY_LLAMA = FixtureSpec(
    name="tiny-llama",
    family="llama",
    task="causal_lm",
    config=dict(
        hidden_size=48,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        max_position_embeddings=128,
        tie_word_embeddings=False,
    ),
    tokenizer="sp_llama",
    notes="README demo: GQA 4/2, rope_theta 500000, rms_norm_eps 1e-5, untied lm_head, "
    "SentencePiece BPE tokenizer (Llama 2 layout).",
)


def main(out_dir: Path = OUT_DIR) -> Path:
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        built = build_from_spec(TINY_LLAMA, Path(tmp) / "tiny-llama", seed=0)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        built.rename(out_dir)
    size = sum(f.stat().st_size for f in out_dir.iterdir())
    print(f"wrote {out_dir} ({size / 1e6:.2f} MB)")
    for f in sorted(out_dir.iterdir()):
        print(f"  {f.name:28s} {f.stat().st_size:>8d} bytes")
    return out_dir


if __name__ == "__main__":
    main()
