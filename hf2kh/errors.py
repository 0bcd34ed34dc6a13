"""Expected failures.

Every error a user can cause (bad path, broken file, unsupported model, failed verification) is a
subclass of `Hf2khError`. The CLI prints its message as one line and exits with `exit_code`; no
traceback. Anything else is a bug in hf2kh: the CLI says so in one line and writes the traceback
to a file (`hf2kh.cli`, exit code 3).
"""


class Hf2khError(Exception):
    """A failure with a one-line, actionable message for the user."""

    exit_code = 2


class SourceError(Hf2khError):
    """The checkpoint cannot be opened: missing, broken or refused files."""


class UnsupportedModelError(Hf2khError):
    """The model computes something hf2kh cannot (yet) recognize or emit."""


class WeightAuditError(Hf2khError):
    """The weight-mapping table does not use every tensor exactly once."""


class OutputExistsError(Hf2khError):
    """The output directory holds an earlier port and `--force` was not given."""


class OutputRefusedError(Hf2khError):
    """The output directory is not one hf2kh may write (a user's files, cwd, home, a root)."""


class OutputBusyError(Hf2khError):
    """Another hf2kh port is writing the same output directory."""


class BadOptionError(Hf2khError):
    """A command-line option has a value hf2kh does not accept."""


class VerificationFailed(Hf2khError):
    """The port does not compute what the HF model computes."""

    exit_code = 1
