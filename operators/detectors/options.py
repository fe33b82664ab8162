"""Validation of the options every detector shares (threshold, class filter, max detections)."""

from __future__ import annotations

from typing import Iterable, Sequence

from streamvision.core.errors import ConfigError


def check_common(name: str, score_threshold: float, max_detections: int) -> None:
    """Raise :class:`ConfigError` for a threshold outside [0, 1] or a non-positive maximum."""
    if not 0.0 <= score_threshold <= 1.0:
        raise ConfigError(f"{name}: score_threshold must be in [0, 1], got {score_threshold}")
    if max_detections < 1:
        raise ConfigError(f"{name}: max_detections must be >= 1, got {max_detections}")


def class_filter(name: str, classes: Iterable[str] | None, domain: Sequence[str]) -> frozenset[str] | None:
    """The class filter as a set, refusing names the model cannot produce."""
    if classes is None:
        return None
    if isinstance(classes, str):
        classes = [classes]
    wanted = frozenset(classes)
    unknown = sorted(wanted - set(domain))
    if unknown:
        raise ConfigError(f"{name}: cannot detect {unknown}; its classes are e.g. {list(domain)[:8]}")
    if not wanted:
        raise ConfigError(f"{name}: an empty class filter would drop every detection")
    return wanted
