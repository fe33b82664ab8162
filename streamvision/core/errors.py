"""The exceptions StreamVision raises for bad input, bad configuration and bad graphs.

Each is a ``ValueError`` or ``RuntimeError`` subclass so that callers who do not care
about the distinction can catch the builtin.
"""

from __future__ import annotations


class StreamVisionError(Exception):
    """Base class of every error StreamVision raises on purpose."""


class ConfigError(StreamVisionError, ValueError):
    """A pipeline file, option or argument is invalid."""


class GraphValidationError(ConfigError):
    """Two connected operators do not agree on the type of the stream between them."""


class InputError(StreamVisionError, ValueError):
    """An input (video file, image, message payload) cannot be read or decoded."""


class MissingAssetError(StreamVisionError, RuntimeError):
    """A model or sample file is not in the local cache and cannot be fetched here."""
