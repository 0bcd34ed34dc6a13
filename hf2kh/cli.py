"""The `hf2kh` command line. Heavy imports (torch, transformers, keras_hub) happen inside commands,
so `hf2kh --help` stays fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from hf2kh.crash import INTERNAL_ERROR_EXIT, internal_error_message, one_line, write_crash_report
from hf2kh.errors import Hf2khError
from hf2kh.interrupt import Interrupted, signals_as_exceptions
from hf2kh.verify.terminal import silence_native_logs

DTYPES = ("float32", "bfloat16", "float16")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Port a Hugging Face transformers checkpoint to a verified KerasHub model package.",
)

Repo = Annotated[str, typer.Argument(help="Local checkpoint directory or Hugging Face hub id.")]
Revision = Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")]
Token = Annotated[
    str | None, typer.Option(help="Hub token (default: $HF_TOKEN or the cached login).")
]
TrustRemoteCode = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow the checkpoint's own modeling code.")
]
Device = Annotated[str, typer.Option(help="Torch device for verification (cpu, cuda).")]
Dtype = Annotated[str, typer.Option(help="Compute dtype: float32 (exact), bfloat16 or float16.")]
Junit = Annotated[Path | None, typer.Option(help="Also write the verification as JUnit XML.")]
Backend = Annotated[
    str,
    typer.Option(help="Keras backend the port is verified on: torch, jax or tensorflow."),
]
Rtol = Annotated[
    float | None,
    typer.Option(help="Tolerance (error relative to RMS + |element|); default: the dtype's."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary on stdout.")]
Stream = Annotated[
    bool | None,
    typer.Option(
        "--stream/--no-stream",
        help="Hold one block at a time (HF and Keras sides, conversion): for models that do not "
        "fit in memory twice; one short batch, no greedy generation compared. Default: stream "
        "when the float32 HF model and the port would not fit in the available memory.",
    ),
]
AllowPickle = Annotated[
    bool,
    typer.Option("--allow-pickle", help="Allow pickled .bin weights (loaded with weights_only)."),
]


@app.command()
def inspect(
    repo: Repo,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the layer graph as JSON to this file.")
    ] = None,
    revision: Revision = None,
    token: Token = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Print the exact layer graph of a checkpoint (needs only its config.json)."""
    from hf2kh.inspect import build_graph
    from hf2kh.inspect.render import print_graph
    from hf2kh.source import load_config, open_checkpoint

    ckpt = open_checkpoint(
        repo,
        revision=revision,
        token=token,
        trust_remote_code=trust_remote_code,
        need_weights=False,
    )
    graph = build_graph(load_config(ckpt), trust_remote_code=trust_remote_code)
    if json_out is not None:
        graph.write_json(json_out)
    print_graph(graph)
    if json_out is not None:
        typer.echo(f"layer graph written to {json_out}")


@app.command()
def port(
    repo: Repo,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: ./<name>-keras).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Python package name (default: from the repo id).")
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Prove numerical equivalence with the HF model.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out if it holds an earlier hf2kh port.")
    ] = False,
    revision: Revision = None,
    token: Token = None,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    backend: Backend = "torch",
    rtol: Rtol = None,
    junit: Junit = None,
    quiet: Quiet = False,
    stream: Stream = None,
) -> None:
    """Generate a KerasHub package for a checkpoint, convert its weights, optionally verify.

    --force replaces an earlier hf2kh port only; any other non-empty directory is refused."""
    from rich.console import Console

    from hf2kh.errors import BadOptionError
    from hf2kh.port import PortOptions, package_name, run_port
    from hf2kh.summary import print_summary

    if dtype not in DTYPES:
        raise BadOptionError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    console = Console(quiet=quiet)
    if quiet or not sys.stderr.isatty():
        _no_progress_bars()
    out = out or Path(f"{package_name(repo, name)}-keras")
    options = PortOptions(
        repo=repo,
        out=out,
        name=name,
        verify=verify,
        force=force,
        revision=revision,
        token=token,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        device=device,
        dtype=dtype,
        junit=junit,
        backend=backend,
        rtol=rtol,
        stream=stream,
    )
    if device != "cpu":
        os.environ.setdefault("KERAS_TORCH_DEVICE", device)
    result = run_port(options, progress=lambda line: console.print(f"[cyan]>[/] {line}"))
    print_summary(result, console)
    if result.verification is not None and not result.verification.passed:
        from hf2kh.errors import VerificationFailed

        raise VerificationFailed(
            f"verification failed: {result.verification.first_divergence or 'see the table above'}"
        )


@app.command()
def verify(
    port_dir: Annotated[Path, typer.Argument(help="The --out directory of an earlier port.")],
    repo: Annotated[
        str | None,
        typer.Argument(help="Checkpoint to compare with (default: the one the port records)."),
    ] = None,
    revision: Revision = None,
    token: Token = None,
    trust_remote_code: TrustRemoteCode = False,
    device: Device = "cpu",
    dtype: Annotated[
        str | None,
        typer.Option(help="Compute dtype (default: the dtype the preset was converted in)."),
    ] = None,
    backend: Backend = "torch",
    rtol: Rtol = None,
    junit: Junit = None,
    quiet: Quiet = False,
    stream: Stream = None,
) -> None:
    """Re-check an existing port (its package and preset) against its checkpoint or another one.

    Same table, report.json (updated in the port directory), --junit and exit codes as
    `port --verify`."""
    from rich.console import Console

    from hf2kh.errors import BadOptionError, VerificationFailed
    from hf2kh.verify.command import preset_dtype, run_verify
    from hf2kh.verify.report import print_report
    from hf2kh.verify.run import VerifyOptions

    dtype = dtype or preset_dtype(port_dir / "preset")
    if dtype not in DTYPES:
        raise BadOptionError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    options = VerifyOptions(dtype=dtype, device=device, backend=backend, rtol=rtol)
    console = Console(quiet=quiet)
    if quiet or not sys.stderr.isatty():
        _no_progress_bars()
    if device != "cpu":
        os.environ.setdefault("KERAS_TORCH_DEVICE", device)
    console.print(f"[cyan]>[/] verify: comparing HF and the port in {port_dir} ({backend})")
    report = run_verify(
        port_dir,
        repo,
        revision=revision,
        token=token,
        trust_remote_code=trust_remote_code,
        options=options,
        stream=stream,
    )
    if junit:
        report.write_junit(junit)
    print_report(report, console)
    console.print(
        f"[bold]verification[/] {'[green]PASSED[/]' if report.passed else '[red]FAILED[/]'}"
    )
    console.print(f"[bold]report[/] {port_dir / 'report.json'}")
    if not report.passed:
        raise VerificationFailed(
            f"verification failed: {report.first_divergence or 'see the table above'}"
        )


# `hf2kh zoo` (the breadth sweep) is defined with its package, hf2kh/zoo/command.py.
from hf2kh.zoo.command import zoo  # noqa: E402

app.command()(zoo)

# `hf2kh nightly` (port and verify a list, compare with the previous run): hf2kh/nightly/.
from hf2kh.nightly.command import nightly  # noqa: E402

app.command()(nightly)


def _no_progress_bars() -> None:
    """Silence the download/loading bars of huggingface_hub and transformers (on stderr), for
    --quiet and for logs: stderr then carries only warnings and the one `error:` line."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()


def _fail(message: str, exit_code: int) -> NoReturn:
    """End the command with exactly one `error:` line on stderr."""
    sys.stdout.flush()
    typer.echo(f"error: {one_line(message)}", err=True)
    sys.exit(exit_code)


def main() -> None:
    """Run the CLI. Exit codes: 0 success, 1 verification failed, 2 bad input or unsupported
    model, 3 internal error (a bug in hf2kh), 130 interrupted (SIGINT), 143 terminated (SIGTERM).
    Every failure is one `error:` line on stderr; progress goes to stdout."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    silence_native_logs()
    try:
        with signals_as_exceptions():
            app()
    except Hf2khError as exc:
        _fail(str(exc), exc.exit_code)
    except Interrupted as exc:
        _fail(f"{exc}; nothing was written", exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; nothing was written", 130)
    except Exception as exc:  # noqa: BLE001 - anything else is a bug in hf2kh
        try:
            report = write_crash_report(exc)
        except OSError:
            report = None
        _fail(internal_error_message(exc, report), INTERNAL_ERROR_EXIT)


if __name__ == "__main__":
    main()
