"""Declared stream types, checked before a graph runs.

Each operator declares the type it accepts and the type it produces for a given input
type. :func:`check_edge` compares them and raises :class:`GraphValidationError` naming
both operators when they disagree: a 1280-d index after a 512-d featurizer, a filter on
label ``"car"`` after a detector that cannot produce it, a patch operator fed vectors.

>>> frames = FrameType(height=576, width=768)
>>> PatchType(kind="vector", dim=512).describe()
'vector patches, dim 512'
>>> check_edge("video", frames, "hist", FrameType())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from streamvision.core.errors import GraphValidationError


@dataclass(frozen=True)
class FrameType:
    """A stream of frames; ``None`` fields mean "any"."""

    height: int | None = None
    width: int | None = None
    dtype: str = "uint8"

    def describe(self) -> str:
        """Human-readable form used in error messages."""
        size = f"{self.height or '?'}x{self.width or '?'}"
        return f"frames {size} {self.dtype}"


@dataclass(frozen=True)
class PatchType:
    """A stream of patches.

    Attributes:
        kind: ``"pixels"`` (crops) or ``"vector"`` (features); ``None`` accepts either.
        dim: vector dimension (``None``: any / not applicable).
        label_domain: labels the patches can carry; ``None`` means unknown (anything).
    """

    kind: Literal["pixels", "vector"] | None = None
    dim: int | None = None
    label_domain: frozenset[str] | None = None

    def describe(self) -> str:
        """Human-readable form used in error messages."""
        text = f"{self.kind or 'any'} patches"
        if self.dim is not None:
            text += f", dim {self.dim}"
        if self.label_domain is not None:
            text += f", {len(self.label_domain)} labels"
        return text


StreamType = Union[FrameType, PatchType]


def check_edge(producer: str, produced: StreamType, consumer: str, accepted: StreamType) -> None:
    """Raise :class:`GraphValidationError` if ``consumer`` cannot read what ``producer`` makes."""

    def fail(reason: str) -> None:
        raise GraphValidationError(
            f"{consumer!r} cannot read the output of {producer!r}: {reason} "
            f"({producer!r} produces {produced.describe()}; {consumer!r} accepts {accepted.describe()})"
        )

    if type(produced) is not type(accepted):
        fail("frames and patches do not mix")
    if isinstance(produced, FrameType) and isinstance(accepted, FrameType):
        for name in ("height", "width"):
            want, got = getattr(accepted, name), getattr(produced, name)
            if want is not None and got is not None and want != got:
                fail(f"{name} {got} != {want}")
        if accepted.dtype != produced.dtype:
            fail(f"dtype {produced.dtype} != {accepted.dtype}")
    if isinstance(produced, PatchType) and isinstance(accepted, PatchType):
        if accepted.kind is not None and produced.kind is not None and accepted.kind != produced.kind:
            fail(f"{produced.kind} patches where {accepted.kind} patches are needed")
        if accepted.dim is not None and produced.dim is not None and accepted.dim != produced.dim:
            fail(f"vector dimension {produced.dim} != {accepted.dim}")


def check_labels(producer: str, produced: StreamType, consumer: str, labels: frozenset[str]) -> None:
    """Raise if ``consumer`` filters on labels that ``producer`` can never produce."""
    domain = produced.label_domain if isinstance(produced, PatchType) else None
    if domain is None:
        return
    impossible = sorted(labels - domain)
    if impossible:
        raise GraphValidationError(
            f"{consumer!r} filters on label(s) {impossible} that {producer!r} cannot produce "
            f"(its label domain has {len(domain)} labels, e.g. {sorted(domain)[:5]})"
        )
