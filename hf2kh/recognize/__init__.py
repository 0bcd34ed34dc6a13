"""recognize: turn a layer graph into a model spec, by evidence (see `decoder.py`)."""

from hf2kh.recognize.decoder import recognize_decoder
from hf2kh.recognize.spec import ModelSpec

__all__ = ["ModelSpec", "recognize_decoder"]
