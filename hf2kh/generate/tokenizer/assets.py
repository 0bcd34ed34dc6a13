"""Assets: the tokenizer files KerasHub presets carry, SentencePiece `ModelProto` included."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.tokenizer.read import _flatten, _HFView, _load_view, _vocab_ids
from hf2kh.generate.tokenizer.spec import TokenizerSpec

_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def write_assets(checkpoint_dir: Path, spec: TokenizerSpec, assets_dir: Path) -> None:
    """Write the tokenizer's files in KerasHub's preset layout into `assets_dir`."""
    view = _load_view(Path(checkpoint_dir))
    out = Path(assets_dir)
    out.mkdir(parents=True, exist_ok=True)
    if spec.kind == "byte_bpe":
        _write_byte_bpe(view, out)
    elif spec.kind == "sentencepiece":
        (out / "vocabulary.spm").write_bytes(sentencepiece_proto(view, spec))
    elif spec.kind == "wordpiece":
        tokens = _id_ordered_tokens(view)
        for token in tokens:
            if not token or token != token.rstrip() or "\n" in token:
                raise UnsupportedModelError(
                    f"{view.directory}: WordPiece token {token!r} cannot be stored one per line "
                    "in vocabulary.txt (KerasHub strips trailing whitespace)."
                )
        (out / "vocabulary.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    else:
        raise ValueError(f"unknown tokenizer kind {spec.kind!r}")


def _id_ordered_tokens(view: _HFView) -> list[str]:
    vocab = _vocab_ids(view)
    by_id: dict[int, str] = {}
    for token, index in vocab.items():
        by_id.setdefault(index, token)
    size = max(by_id) + 1 if by_id else 0
    missing = [i for i in range(size) if i not in by_id]
    if missing:
        raise UnsupportedModelError(
            f"{view.directory}: the vocabulary has no token for ids {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}; KerasHub needs contiguous ids."
        )
    return [by_id[i] for i in range(size)]


def _merge_pairs(model: dict) -> list[tuple[str, str]]:
    pairs = []
    for merge in model.get("merges") or []:
        if isinstance(merge, str):
            parts = merge.split(" ")
        else:
            parts = list(merge)
        if len(parts) != 2:
            raise UnsupportedModelError(f"merge rule {merge!r} is not a pair of tokens.")
        pairs.append((parts[0], parts[1]))
    return pairs


def _write_byte_bpe(view: _HFView, out: Path) -> None:
    vocab = _vocab_ids(view)
    pairs = _merge_pairs(view.backend["model"])
    for a, b in pairs:
        if " " in a or " " in b:
            raise UnsupportedModelError(
                f"{view.directory}: merge ({a!r}, {b!r}) contains a space; merges.txt cannot "
                "hold it."
            )
    ordered = dict(sorted(vocab.items(), key=lambda item: item[1]))
    (out / "vocabulary.json").write_text(json.dumps(ordered, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("".join(f"{a} {b}\n" for a, b in pairs), encoding="utf-8")


def sentencepiece_proto(view_or_dir: _HFView | Path, spec: TokenizerSpec) -> bytes:
    """A serialized SentencePiece `ModelProto` that encodes like the HF pipeline.

    Built from the effective HF model (ids, Unigram scores or BPE merges, byte fallback); the
    checkpoint's `tokenizer.model`, when present, contributes piece types and trainer fields.
    The normalizer is identity unless HF has a Precompiled one; `add_dummy_prefix` is set when HF
    prepends "▁" (the generated tokenizer applies HF's exact prepend rule itself when encoding).
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    view = view_or_dir if isinstance(view_or_dir, _HFView) else _load_view(Path(view_or_dir))
    piece_type = pb.ModelProto.SentencePiece.Type
    model = view.backend["model"]
    added = {a["id"]: a for a in view.backend.get("added_tokens") or []}
    tokens = _id_ordered_tokens(view)
    is_unigram = model.get("type") == "Unigram"
    # SentencePiece refuses byte_fallback without all 256 byte pieces (see the spec's notes).
    byte_pieces = sum(1 for t in tokens if _BYTE_PIECE.fullmatch(t))
    byte_fallback = bool(model.get("byte_fallback")) and byte_pieces >= 256

    base = None
    model_path = view.directory / "tokenizer.model"
    if model_path.is_file():
        base = pb.ModelProto()
        try:
            base.ParseFromString(model_path.read_bytes())
        except Exception:  # noqa: BLE001 - e.g. a tiktoken file named tokenizer.model
            base = None
    base_types = {}
    if base is not None:
        for index, piece in enumerate(base.pieces):
            if index < len(tokens) and piece.piece == tokens[index]:
                base_types[index] = piece.type

    if is_unigram:
        scores = {i: float(item[1]) for i, item in enumerate(model["vocab"])}
        unk_id = model.get("unk_id")
    else:
        first_rank: dict[str, int] = {}
        for rank, (a, b) in enumerate(_merge_pairs(model)):
            first_rank.setdefault(a + b, rank)
        vocab_ids = _vocab_ids(view)
        scores = {vocab_ids[t]: -float(r + 1) for t, r in first_rank.items() if t in vocab_ids}
        unk_token = model.get("unk_token") or spec.unk_token
        unk_id = vocab_ids.get(unk_token) if unk_token else None
    if unk_id is None and base is not None and base.trainer_spec.unk_id < len(tokens):
        unk_id = base.trainer_spec.unk_id
    if unk_id is None:
        raise UnsupportedModelError(
            f"{view.directory}: the SentencePiece-style model has no unknown token; a "
            "SentencePiece model needs one."
        )

    proto = pb.ModelProto()
    if base is not None:
        proto.trainer_spec.CopyFrom(base.trainer_spec)
    for index, token in enumerate(tokens):
        piece = proto.pieces.add()
        piece.piece = token
        piece.score = scores.get(index, 0.0)
        if index == unk_id:
            piece.type = piece_type.UNKNOWN
        elif index in added:
            kept = base_types.get(index)
            if kept in (piece_type.CONTROL, piece_type.USER_DEFINED):
                piece.type = kept
            else:
                piece.type = (
                    piece_type.CONTROL if added[index]["special"] else piece_type.USER_DEFINED
                )
        elif byte_fallback and _BYTE_PIECE.fullmatch(token):
            piece.type = piece_type.BYTE
        elif not is_unigram and len(token) > 1 and index not in scores:
            piece.type = piece_type.UNUSED  # no merge produces it: HF BPE never emits it
        else:
            piece.type = piece_type.NORMAL
        if piece.type != piece_type.NORMAL:
            piece.score = 0.0

    trainer = proto.trainer_spec
    trainer.model_type = pb.TrainerSpec.UNIGRAM if is_unigram else pb.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = byte_fallback
    trainer.unk_id = unk_id
    trainer.unk_piece = tokens[unk_id]
    for role, token in (("bos", spec.bos_token), ("eos", spec.eos_token), ("pad", spec.pad_token)):
        index = tokens.index(token) if token in tokens else -1
        if index >= 0 and proto.pieces[index].type != piece_type.CONTROL:
            index = -1
        if index == unk_id:
            index = -1
        setattr(trainer, f"{role}_id", index)
        if index >= 0:
            setattr(trainer, f"{role}_piece", token)
    if len({i for i in (trainer.bos_id, trainer.eos_id, trainer.pad_id) if i >= 0}) < sum(
        i >= 0 for i in (trainer.bos_id, trainer.eos_id, trainer.pad_id)
    ):
        trainer.pad_id = -1  # SentencePiece wants distinct ids (e.g. pad == eos)

    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    # Kept for SentencePiece's own decoding (it strips the dummy "▁" again) and for plain
    # SentencePiece users; the generated tokenizer switches it off for encoding.
    normalizer.add_dummy_prefix = spec.prepend_scheme != "never"
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    for norm in _flatten(view.backend.get("normalizer"), "normalizers"):
        if norm.get("type") == "Precompiled" and norm.get("precompiled_charsmap"):
            normalizer.name = "hf_precompiled"
            normalizer.precompiled_charsmap = base64.b64decode(norm["precompiled_charsmap"])
    return proto.SerializeToString()
