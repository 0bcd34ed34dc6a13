"""The `hf2kh` command line. Heavy imports (torch, transformers, keras_hub) happen inside commands,
so `hf2kh --help` stays fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from hf2kh.errors import Hf2khError

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


def main() -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        app()
    except Hf2khError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
