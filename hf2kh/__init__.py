"""hf2kh: port a Hugging Face transformers checkpoint to a verified KerasHub model package."""

__version__ = "0.1.0"
