"""User-facing errors.

Every failure a user can cause (bad params, a malformed genotype, a missing file, a corrupt checkpoint) raises an
``EpsError``. The CLI prints ``str(err)`` as one line and exits non-zero, so the message must name the problem and
the fix; tracebacks are reserved for bugs.
"""


class EpsError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(EpsError):
    """Invalid or inconsistent params."""


class ArchError(EpsError, ValueError):
    """A malformed architecture string or genotype."""


class DataError(EpsError):
    """A dataset file is missing, corrupt or inconsistent."""


class CheckpointError(EpsError):
    """A checkpoint is corrupt, or was made with other params."""


class NumericalError(EpsError):
    """A loss became NaN or infinite."""


class SpaceError(EpsError):
    """A search space cannot be used: its module fails to import, or it breaks the ``eps.space`` contract."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (what Slurm, Kubernetes and torchrun send before SIGKILL); handled as Ctrl-C is,
    with exit status 143 (128 + SIGTERM) in the CLI. The message, when there is one, says where the run stopped."""


class RankError(EpsError):
    """Under torchrun: an error that another rank (rank 0) raised and reports, repeated here so that every rank stops
    at the same point. The CLI prints nothing for it, so a refusal is one line from one rank."""
