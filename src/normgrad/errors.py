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

__all__ = ["ConfigError", "MissingDependencyError", "NormgradUsageError"]


class NormgradUsageError(ValueError):
    """Input a user gave that normgrad cannot use; the message says what to change."""


class ConfigError(NormgradUsageError):
    """A training or experiment setting out of range, or settings that contradict."""


class MissingDependencyError(NormgradUsageError, ImportError):
    """An optional dependency is not installed; the message names the extra to install.

    Also an ``ImportError``, so code that already falls back on ``except ImportError``
    keeps doing so.
    """
