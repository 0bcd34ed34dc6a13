"""Render the generated package from the templates, then format and lint it with ruff."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jinja2

from hf2kh.errors import Hf2khError
from hf2kh.generate.context import Context

TEMPLATES = Path(__file__).parent / "templates"

RUFF_SETTINGS = ["--line-length", "100", "--target-version", "py310"]


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pyrepr"] = repr
    return env


def package_files(ctx: Context) -> dict[str, str]:
    """Generated file name -> template name, for exactly the features this model uses."""
    p = ctx.package
    task = ctx.ir.head.task.value  # "causal_lm", "masked_lm": the task's class and its tests
    files = {
        f"{p}_backbone.py": "backbone.py.jinja",
        f"{p}_attention.py": "disentangled_attention.py.jinja"
        if ctx.relative
        else "attention.py.jinja",
        f"{ctx.block_module}.py": "encoder.py.jinja" if ctx.encoder else "decoder.py.jinja",
        f"{p}_presets.py": "presets.py.jinja",
        f"convert_{p}_checkpoints.py": "convert_checkpoints.py.jinja",
        f"{p}_backbone_test.py": "backbone_test.py.jinja",
        f"{p}_tokenizer_test.py": "tokenizer_test.py.jinja",
        "__init__.py": "init.py.jinja",
    }
    if not ctx.bare:  # the task class and its tests (a bare encoder has no task)
        files[f"{p}_{task}.py"] = f"{task}.py.jinja"
        files[f"{p}_{task}_test.py"] = f"{task}_test.py.jinja"
    if not ctx.encoder:  # encoders' text preprocessors: hf2kh.generate.tokenizer.preprocessor
        files[f"{p}_causal_lm_preprocessor.py"] = "causal_lm_preprocessor.py.jinja"
    if ctx.needs_layernorm_file:
        files[f"{p}_layernorm.py"] = "layernorm.py.jinja"
    if ctx.rope is not None:
        files[f"{p}_rotary_embedding.py"] = "rotary_embedding.py.jinja"
    if ctx.relative is not None:
        files[f"{p}_relative_embedding.py"] = "relative_embedding.py.jinja"
    if ctx.moe is not None:
        files[f"{p}_sparse_moe.py"] = "sparse_moe.py.jinja"
    if ctx.sentence_pooling is not None:
        files[f"{p}_sentence_embedding.py"] = "sentence_embedding.py.jinja"
    return files


def render_package(
    ctx: Context, directory: Path, extra: dict[str, str] | None = None
) -> list[Path]:
    """Write the package's Python files into `directory`; returns the paths written."""
    env = environment()
    variables = {
        "spec": ctx.ir,
        "ctx": ctx,
        "stem": ctx.ir.stem,
        "head": ctx.ir.head,
        "attention": ctx.attention,
        "rope": ctx.rope,
        "tokenizer": ctx.tokenizer,
        "pooling": ctx.sentence_pooling,
    }
    written = []
    for name, template in package_files(ctx).items():
        text = env.get_template(template).render(**variables)
        path = directory / name
        path.write_text(text)
        written.append(path)
    for name, text in (extra or {}).items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    format_and_lint(directory)
    return written


def _ruff() -> list[str]:
    exe = shutil.which("ruff")
    if exe:
        return [exe]
    probe = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True)
    if probe.returncode != 0:
        raise Hf2khError("ruff is needed to format the generated code: pip install ruff")
    return [sys.executable, "-m", "ruff"]


# Checked on top of ruff's default rules (which the package must pass as it is, run in its own
# directory): pycodestyle, import order, bugbear. E501: the formatter keeps code within 100
# columns; what it cannot wrap is a long literal such as the checkpoint path in the header.
LINT_RULES = ["--extend-select", "E,W,I,B", "--ignore", "E501"]


def format_and_lint(directory: Path) -> None:
    """`ruff format` then `ruff check` in the package's own directory, with ruff's default rules
    and `LINT_RULES` (fixable findings such as import order fixed); any remaining problem is a
    bug of the templates."""
    isolated = ["--isolated", "--no-cache", *RUFF_SETTINGS]
    ruff = _ruff()
    subprocess.run(
        [*ruff, "check", "--fix", *isolated, *LINT_RULES, "-q", "."],
        check=False,
        capture_output=True,
        cwd=directory,
    )
    subprocess.run([*ruff, "format", *isolated, "-q", "."], check=True, cwd=directory)
    result = subprocess.run(
        [*ruff, "check", *isolated, *LINT_RULES, "--output-format", "concise", "-q", "."],
        capture_output=True,
        text=True,
        cwd=directory,
    )
    if result.returncode != 0:
        raise Hf2khError(
            "generated code is not lint-clean: "
            + " | ".join(result.stdout.strip().splitlines()[:6])
        )
