"""Every error modelzip raises on bad input derives from ModelzipError."""

from __future__ import annotations


class ModelzipError(Exception):
    """Base class of all errors raised on bad input or unusable state."""


class ConfigError(ModelzipError, ValueError):
    """A config, recipe or argument is invalid."""


class DataError(ModelzipError):
    """A dataset is missing, unreadable or malformed."""


class FormatError(ModelzipError):
    """A .mzip (or other) file is foreign, damaged or inconsistent."""


class SignatureError(FormatError):
    """A signed file does not verify: changed since signing, signed by another key,
    or not signed at all when a signature is required."""


class UnsupportedModelError(ModelzipError):
    """A model or layer cannot be handled by the requested method."""


class BudgetError(ModelzipError):
    """An accuracy or resource requirement cannot be met."""


class WriteError(ModelzipError, OSError):
    """A file could not be written (full disk, read-only folder, name too long...)."""
