"""User-facing errors.

Every problem a user can fix (a corrupt file, a wrong band count, a bad config key, a missing
path) is raised as a :class:`RSPretrainError` whose message names the file or key and the
problem on one line. The CLI prints that line and exits non-zero; the traceback is shown only
with ``--debug``.
"""


class RSPretrainError(Exception):
    """Base class of errors whose message is meant for the user, on one line."""


class DataError(RSPretrainError):
    """Unreadable, empty, corrupt or inconsistent input data (the message names the file)."""


class ConfigError(RSPretrainError):
    """Unknown config key, wrong value type, or an invalid combination of options."""


class BandMismatchError(RSPretrainError):
    """Input bands (count or order) do not match what a model was trained on."""


class NonFiniteLossError(RSPretrainError):
    """The training loss became NaN or infinite (the message names the step and the loss term)."""
