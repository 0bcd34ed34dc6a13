"""The text preprocessors of encoder tasks: segment packer, masked-LM and classifier preprocessors.

`text_preprocessing_sources(ctx, tasks)` renders, for the tasks a checkpoint has
("masked_lm", "text_classifier"):

- `<package>_segment_packer.py`: `<Prefix>SegmentPacker(keras_hub.layers.MultiSegmentPacker)` with
  the checkpoint's framing (`spec.framing`, measured from HF's `tokenizer(a, b)`) and HF's
  `longest_first` pair truncation (KerasHub's `round_robin` gives the odd id of an odd budget to
  the first text; HF gives it to the longer one);
- `<package>_masked_lm_preprocessor.py`: `<Prefix>MaskedLMPreprocessor`;
- `<package>_text_classifier_preprocessor.py`: `<Prefix>TextClassifierPreprocessor`;
- `<package>_preprocessor_test.py`: the package's own tests against HF's outputs, read from
  `testdata/preprocessor_cases.json` (`preprocessor_cases`).

`model_tokenizer_source` is the model's tokenizer module (the exact-pipeline base class and the
subclass that names the special tokens); with `mask_role` it also names the mask token, which
`MaskedLMMaskGenerator` needs. Each takes the generator's `Context`.
"""

from __future__ import annotations

from hf2kh.errors import UnsupportedModelError
from hf2kh.generate.tokenizer.source import tokenizer_module_source
from hf2kh.generate.tokenizer.spec import TokenizerSpec

TEXT_TASKS = {
    "masked_lm": "masked_lm_preprocessor.py.jinja",
    "text_classifier": "text_classifier_preprocessor.py.jinja",
}


def _environment():
    from hf2kh.generate.render import environment

    return environment()


def model_tokenizer_source(ctx, pad_fallback: int, header: str, mask_role: bool = False) -> str:
    """`<package>_tokenizer.py`: the exact-pipeline base class for this tokenizer kind, then the
    model's tokenizer, which names its special tokens the way KerasHub's model tokenizers do
    (with `mask_role`, the mask token too, which `MaskedLMMaskGenerator` needs).

    `ctx` is the generator's `Context` (`package`, `prefix`, `import_prefix`, `tokenizer`)."""
    spec: TokenizerSpec = ctx.tokenizer
    base = tokenizer_module_source(spec, f"{ctx.prefix}TokenizerBase", header=header)
    # A pad token that is also the end token would stop KerasHub's samplers at once: padding is
    # masked anyway, so such a checkpoint gets the fallback pad id instead.
    pad = spec.pad_token if spec.pad_token != spec.eos_token else None
    all_roles = [
        ("start_token", spec.bos_token),
        ("end_token", spec.eos_token),
        ("pad_token", pad),
    ]
    if mask_role:
        all_roles.append(("mask_token", spec.mask_token))
    roles = [(role, token) for role, token in all_roles if token is not None]
    missing = [f"{role}_id" for role, token in all_roles if token is None]
    lines = base.splitlines()
    anchor = next(i for i, line in enumerate(lines) if line.startswith("import keras_hub"))
    lines[anchor + 1 : anchor + 1] = [
        "import keras",
        f"from {ctx.import_prefix}{ctx.package}_backbone import {ctx.prefix}Backbone",
    ]
    subclass = (
        _environment()
        .get_template("tokenizer_roles.py.jinja")
        .render(ctx=ctx, roles=roles, missing=missing, pad_fallback=pad_fallback)
    )
    return "\n".join(lines) + "\n" + subclass


def check_text_tasks(spec: TokenizerSpec, tasks) -> None:
    """Refuse, in one line, a tokenizer the text preprocessors cannot reproduce."""
    unknown = [t for t in tasks if t not in TEXT_TASKS]
    if unknown:
        raise ValueError(f"unknown text tasks {unknown}; known: {sorted(TEXT_TASKS)}")
    if spec.framing is None:
        raise UnsupportedModelError(
            "the tokenizer frames a pair of texts in a way other than `start a sep b end` "
            "(with 0/1 segment ids); its preprocessors cannot be generated"
        )
    if spec.framing.truncation_side != "right":
        raise UnsupportedModelError(
            f"the tokenizer truncates on the {spec.framing.truncation_side}; only right-side "
            "truncation is ported"
        )
    if spec.pad_token is None:
        raise UnsupportedModelError("the tokenizer has no pad token; its preprocessors pad")
    if "masked_lm" in tasks and spec.mask_token is None:
        raise UnsupportedModelError("a masked-LM checkpoint whose tokenizer has no mask token")


def text_preprocessing_sources(ctx, tasks) -> dict[str, str]:
    """File name -> source: `<package>_segment_packer.py`, `<package>_<task>_preprocessor.py`
    for each of `tasks` and `<package>_preprocessor_test.py`.

    `ctx` is the generator's `Context`: `package`, `prefix`, `import_prefix`, `segments` (the
    backbone takes segment ids), `tokenizer` (the `TokenizerSpec`) and `ir` (for the header).
    """
    tasks = tuple(dict.fromkeys(tasks))
    check_text_tasks(ctx.tokenizer, tasks)
    variables = {"ctx": ctx, "spec": ctx.ir, "tokenizer": ctx.tokenizer, "tasks": tasks}
    env = _environment()
    p = ctx.package
    names = {
        f"{p}_segment_packer.py": "segment_packer.py.jinja",
        **{f"{p}_{task}_preprocessor.py": TEXT_TASKS[task] for task in tasks},
        f"{p}_preprocessor_test.py": "preprocessor_test.py.jinja",
    }
    return {name: env.get_template(t).render(**variables) for name, t in names.items()}


# Texts for the preprocessor cases: pairs of very different lengths, both long, empty texts,
# special tokens written in the text (the pad token among them: it must stay unmasked).
def preprocessor_cases(hf_tokenizer, spec: TokenizerSpec, corpus) -> list[dict]:
    """HF's `tokenizer(a[, b], truncation=True, max_length=n, padding="max_length")` outputs on
    single texts and pairs of `corpus`, at lengths that truncate, for the generated tests."""
    texts = [t for t in corpus if t.strip()]
    specials = " ".join(t for t in spec.special_tokens[:6])
    inputs: list[tuple[str, ...]] = [(t,) for t in texts[:4]]
    inputs.append((f"Before {specials} after",))
    inputs += [(a, b) for a, b in zip(texts[:5], texts[12:17], strict=False)]
    # (No `(text, "")`: transformers reads an empty second text as no pair at all.)
    inputs += [("", texts[1]), (texts[2], f"{specials} {texts[3]}")]
    cases = []
    for segments in inputs:
        plain = [len(hf_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in segments]
        full = len(hf_tokenizer(*segments)["input_ids"])
        special = full - sum(plain)
        # untruncated (padded), then cut to an odd and an even budget; for a pair also an odd
        # budget that cuts both texts (where HF's rule differs from KerasHub's round robin)
        lengths = {full + 3, special + max(sum(plain) // 2, 1) | 1, special + 4}
        if len(plain) == 2 and min(plain) > 1:
            lengths.add(special + 2 * min(plain) - 1)
        for length in sorted(lengths):
            out = hf_tokenizer(
                *segments,
                truncation=True,
                max_length=length,
                padding="max_length",
                return_token_type_ids=spec.framing.segment_ids,
            )
            case = {
                "texts": list(segments),
                "sequence_length": length,
                "input_ids": list(out["input_ids"]),
                "attention_mask": list(out["attention_mask"]),
            }
            if spec.framing.segment_ids:
                case["token_type_ids"] = list(out["token_type_ids"])
            cases.append(case)
    return cases
