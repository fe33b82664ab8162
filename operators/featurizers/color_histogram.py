"""DeepLens' colour-histogram featurizer: no model, L2-normalized.

Each patch's pixels are quantized to ``bins`` levels per RGB channel; the joint histogram
(``bins**3`` cells, per cell of a ``grid x grid`` layout) is square-rooted (the Hellinger
map, so that inner product compares distributions well) and L2-normalized. The inner
product of two such vectors is 1.0 for identical colour distributions.
"""

from __future__ import annotations

import cv2
import numpy as np

from operators.base import Operator, OperatorContext
from streamvision.core.errors import ConfigError
from streamvision.core.patches import PatchBatch
from streamvision.core.types import PatchType, StreamType


def color_histogram(image: np.ndarray, bins: int, grid: int) -> np.ndarray:
    """The (unnormalized) joint RGB histogram of ``image``, ``grid * grid * bins**3`` counts."""
    h, w = image.shape[:2]
    cells = []
    for gy in range(grid):
        for gx in range(grid):
            cell = image[gy * h // grid:(gy + 1) * h // grid, gx * w // grid:(gx + 1) * w // grid]
            hist = cv2.calcHist([np.ascontiguousarray(cell)], [0, 1, 2], None, [bins] * 3, [0, 256] * 3)
            cells.append(hist.reshape(-1))
    return np.concatenate(cells)


class ColorHistogram(Operator[PatchBatch, PatchBatch]):
    """Featurize pixel patches into L2-normalized colour histograms.

    Args:
        bins: levels per channel (2..32).
        grid: the patch is split into ``grid x grid`` cells, each with its own histogram.

    >>> op = ColorHistogram(bins=4, grid=2)
    >>> op.output_type(PatchType(kind="pixels")).dim
    256
    """

    name = "color_histogram"

    def __init__(self, *, bins: int = 8, grid: int = 2) -> None:
        if not 2 <= bins <= 32:
            raise ConfigError(f"color_histogram: bins must be in 2..32, got {bins}")
        if not 1 <= grid <= 8:
            raise ConfigError(f"color_histogram: grid must be in 1..8, got {grid}")
        self.bins = bins
        self.grid = grid

    @property
    def dim(self) -> int:
        """Length of the feature vectors."""
        return self.grid * self.grid * self.bins ** 3

    @property
    def operator_id(self) -> str:
        """Stable name including the options (it goes into patch ids)."""
        return f"{self.name}:b{self.bins}g{self.grid}"

    def input_type(self) -> StreamType:
        """Pixel patches."""
        return PatchType(kind="pixels")

    def output_type(self, upstream: StreamType) -> StreamType:
        """Vector patches of :attr:`dim`, keeping the upstream label domain."""
        labels = upstream.label_domain if isinstance(upstream, PatchType) else None
        return PatchType(kind="vector", dim=self.dim, label_domain=labels)

    def setup(self, context: OperatorContext) -> None:
        """Let OpenCV use the actor's threads."""
        cv2.setNumThreads(context.num_threads)

    def featurize(self, images: list[np.ndarray]) -> np.ndarray:
        """``(n, dim)`` float32 features of ``images``."""
        out = np.empty((len(images), self.dim), np.float32)
        for i, image in enumerate(images):
            out[i] = color_histogram(image, self.bins, self.grid)
        np.sqrt(out, out=out)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
        return out

    def process(self, batch: PatchBatch) -> PatchBatch:
        """Replace each pixel patch by its histogram patch (lineage: parent = the pixel patch)."""
        if len(batch) == 0:
            return PatchBatch.empty(batch.meta, dim=self.dim)
        if batch.crops is None:
            raise ConfigError("color_histogram needs pixel patches (crops), got vector patches")
        return batch.derive(self.featurize(batch.crops), operator=self.operator_id)

    def spec(self) -> dict[str, object]:
        """How to rebuild this operator from a pipeline file."""
        return {"op": self.name, "options": {"bins": self.bins, "grid": self.grid}}
