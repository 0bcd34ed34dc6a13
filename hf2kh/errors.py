"""Expected failures.

Every error a user can cause (bad path, broken file, unsupported model, failed verification) is a
subclass of `Hf2khError`. The CLI prints its message as one line and exits with `exit_code`; no
traceback. Anything else is a bug in hf2kh and keeps its traceback.
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
    """The output directory exists and `--force` was not given."""


class VerificationFailed(Hf2khError):
    """The port does not compute what the HF model computes."""

    exit_code = 1
