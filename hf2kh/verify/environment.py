"""What a verification ran on, recorded in its report: versions, backend, device, dtype, TF32
state, the seeds of the sample inputs, thread counts."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from hf2kh.verify.layer_checks import GREEDY_SEED, INPUT_SEEDS

PACKAGES = ("torch", "transformers", "keras", "keras-hub", "numpy", "jax", "jaxlib", "tensorflow")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(options) -> dict:
    """The environment of this process (the one that ran the Keras side) for `options`
    (`hf2kh.verify.run.VerifyOptions`)."""
    import keras
    import torch

    from hf2kh.verify.compare import TOLERANCES

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: v for p in PACKAGES if (v := _version(p)) is not None},
        "keras_backend": keras.backend.backend(),
        "hf_backend": "torch",
        "device": options.device,
        "dtype": options.dtype,
        "tolerance": options.rtol if options.rtol is not None else TOLERANCES[options.dtype],
        "tolerance_source": "--rtol" if options.rtol is not None else f"{options.dtype} default",
        "streamed": bool(getattr(options, "stream", False)),
        "tf32": {
            "matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn": bool(torch.backends.cudnn.allow_tf32),
        },
        "seeds": {"inputs": list(INPUT_SEEDS), "greedy_prompts": GREEDY_SEED},
        "threads": {"torch": torch.get_num_threads(), "cpus": os.cpu_count()},
    }
