"""recognize: turn a layer graph into the model IR, by evidence (see `model.py`, `block.py`)."""

from hf2kh.recognize.model import recognize_model

__all__ = ["recognize_model"]
