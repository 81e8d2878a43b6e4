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
