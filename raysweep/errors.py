"""User-facing errors.

Every error a user can cause (a bad spec, a corrupt image, a missing file, a checkpoint of the
wrong architecture) is a :class:`RaysweepError` whose message is one line naming the thing at
fault. The CLI prints it as ``error: <message>`` and exits with status 2; the Python API lets it
propagate.
"""

from __future__ import annotations


class RaysweepError(ValueError):
    """Base class: a one-line message that names the file, row or key at fault."""


class SpecError(RaysweepError):
    """An experiment/spec file is invalid (unknown key, wrong type, out-of-range value)."""


class DataError(RaysweepError):
    """A data source is unusable (missing/corrupt file, bad label, empty or single-class set)."""


class WeightsError(RaysweepError):
    """Encoder weights cannot be loaded (missing file, wrong architecture, shape mismatch)."""


class Problems(RaysweepError):
    """Several user errors found at once (a spec and its files checked before anything runs).

    ``problems`` holds one line per problem; the CLI prints each on its own ``error:`` line.
    ``str()`` is the first problem alone when there is one, else one line that joins them.
    """

    def __init__(self, problems: list[str] | tuple[str, ...]):
        self.problems = tuple(" ".join(str(p).split()) for p in problems)
        if not self.problems:
            raise ValueError("Problems needs at least one problem")
        text = (self.problems[0] if len(self.problems) == 1
                else f"{len(self.problems)} problems: " + "; ".join(self.problems))
        super().__init__(text)

    def __reduce__(self):  # Ray ships errors between processes by pickling
        return (type(self), (list(self.problems),))


class SpecProblems(Problems, SpecError):
    """Every problem of a spec file (unknown keys, types, ranges, references), one line each."""


class DataProblems(Problems, DataError):
    """Every problem of the data a run needs (sources, classes per split, batch size)."""


class OutputError(RaysweepError):
    """An output place (storage root, report directory, ``--out`` file) cannot be written."""


class TrialError(RaysweepError):
    """A Ray Tune trial or Ray Train run failed; the message carries the cause's one line, the
    trial's name and where its log is. ``user_error`` is False when the cause was not a
    :class:`RaysweepError` (a fault in raysweep or the environment): the CLI then exits 1."""

    def __init__(self, message: str, *, user_error: bool = True):
        super().__init__(message)
        self.user_error = user_error

    def __reduce__(self):
        return (type(self), (str(self),), {"user_error": self.user_error})
