"""The errors a user can cause and fix: bad options, missing files, missing extras.

Every such error derives from :class:`NormgradUsageError`. The command line turns exactly
these into one line on stderr and exit code 2; anything else is a bug in normgrad and
surfaces as a traceback (exit code 1).

The core's argument checks (``normgrad.core.validate``) raise plain ``ValueError`` and
``TypeError``, as NumPy does: a library caller passing a wrong shape is a programming
error. The command line validates what it passes into the core itself, or converts at
that one call site.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "MissingDependencyError",
    "NonFiniteStatisticsWarning",
    "NormgradUsageError",
]


class NormgradUsageError(ValueError):
    """Input a user gave that normgrad cannot use; the message says what to change."""


class ConfigError(NormgradUsageError):
    """A training or experiment setting out of range, or settings that contradict."""


class MissingDependencyError(NormgradUsageError, ImportError):
    """An optional dependency is not installed; the message names the extra to install.

    Also an ``ImportError``, so code that already falls back on ``except ImportError``
    keeps doing so.
    """


class NonFiniteStatisticsWarning(RuntimeWarning):
    """A training batch had NaN/Inf statistics (or would have made a running statistic
    NaN/Inf in its dtype), so the running statistics were left as they were.

    PyTorch updates them regardless, and one bad batch then poisons eval mode for good;
    ``skip_nonfinite=False`` (batch norm, ``nn.BatchNorm``, ``nn.InstanceNorm``) does the
    same as PyTorch. The trainer turns this warning into a diverged run.
    """
