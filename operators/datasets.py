"""Labeled training data: Fashion-MNIST from Debian, Parquet tables, labeled patches.

:class:`LabeledData` is what model selection trains on: a feature array (``(n, 28, 28)``
uint8 images or ``(n, d)`` float32 vectors), integer labels and the class names. It comes
from

* :func:`fashion_mnist`: the real Fashion-MNIST (60k train, 10k test, 10 classes) from
  Debian's ``dataset-fashion-mnist`` package, downloaded once with ``apt-get download``,
  extracted into the cache and checked against known SHA-256 sums;
* :func:`read_table`: a labeled-image table written by :func:`write_table` (Parquet);
* :func:`from_store`: the labeled vector patches of a :class:`LineageStore`;
* :func:`from_collection`: the patches of a collection a user labelled
  (``streamvision label``), as stored vectors or as grayscale crops.
"""

from __future__ import annotations

import gzip
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from operators.assets import _apt_download, cache_dir, install_from_deb, sha256_of
from streamvision.core.errors import InputError

FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
_FASHION_PREFIX = "./usr/share/datasets/fashion-mnist/"
#: SHA-256 of the four files shipped in dataset-fashion-mnist 0.0~git20200523.55506a9-1.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)


@dataclass(frozen=True)
class LabeledData:
    """Features, integer labels and class names.

    Attributes:
        features: ``(n, h, w)`` uint8 grayscale images or ``(n, d)`` float32 vectors.
        labels: ``(n,)`` int64 class indices into ``classes``.
        classes: class names, index = label.
    """

    features: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.features) != len(self.labels):
            raise InputError(f"{len(self.features)} feature rows but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise InputError(f"labels must lie in [0, {len(self.classes)}); got {self.labels.min()}..{self.labels.max()}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: ``(h, w)`` for images, ``(d,)`` for vectors."""
        return tuple(int(s) for s in self.features.shape[1:])

    @property
    def nbytes(self) -> int:
        """Bytes of features and labels (what shipping the whole data set costs)."""
        return int(self.features.nbytes + self.labels.nbytes)

    def take(self, index: np.ndarray) -> "LabeledData":
        """The rows at ``index``."""
        return LabeledData(self.features[index], self.labels[index], self.classes)

    def head(self, n: int) -> "LabeledData":
        """The first ``n`` rows."""
        return self.take(np.arange(min(n, len(self))))


# --------------------------------------------------------------------- Fashion-MNIST
def _fashion_dir() -> Path:
    return cache_dir() / "fashion-mnist"


def _verified(directory: Path) -> bool:
    return all((directory / f).exists() and sha256_of(directory / f) == h for f, h in FASHION_MNIST_SHA256.items())


def import_fashion_deb(deb: Path) -> Path:
    """Install Fashion-MNIST from an already downloaded ``dataset-fashion-mnist`` .deb."""
    return install_from_deb(deb, _FASHION_PREFIX, _fashion_dir(), FASHION_MNIST_SHA256)


def fashion_mnist_dir() -> Path:
    """The cached, verified Fashion-MNIST directory (downloaded from Debian on first use)."""
    target = _fashion_dir()
    if _verified(target):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        return import_fashion_deb(_apt_download(FASHION_MNIST_PACKAGE, Path(tmp)))


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian header, then uint8 data)."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise InputError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise InputError(f"{path}: header says {dims}, file holds {data.size} bytes")
    return data.reshape(dims)


def fashion_mnist(split: Literal["train", "test"] = "train", limit: int | None = None) -> LabeledData:
    """Real Fashion-MNIST: ``(n, 28, 28)`` uint8 images, labels 0..9 (60k train, 10k test).

    Args:
        split: ``"train"`` or ``"test"``.
        limit: keep only the first ``limit`` rows (the files are already class-mixed).
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise InputError(f"split must be 'train' or 'test', not {split!r}")
    directory = fashion_mnist_dir()
    images = _read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    data = LabeledData(images, labels, FASHION_MNIST_CLASSES)
    return data if limit is None else data.head(limit)


# --------------------------------------------------------------------- Parquet tables
def write_table(data: LabeledData, path: str | Path) -> Path:
    """Write a labeled table: one row per example (``features`` as a flat list, ``label``, ``class``).

    The shape of one example and the class list go into the schema metadata.
    """
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = data.features.reshape(len(data), -1)
    values = pa.array(flat.ravel())
    features = pa.FixedSizeListArray.from_arrays(values, flat.shape[1])
    table = pa.table(
        {"features": features, "label": pa.array(data.labels, pa.int64()),
         "class": pa.array([data.classes[i] for i in data.labels], pa.string())},
    ).replace_schema_metadata({
        "streamvision.shape": json.dumps(list(data.input_shape)),
        "streamvision.classes": json.dumps(list(data.classes)),
    })
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_table(path: str | Path) -> LabeledData:
    """Read a table written by :func:`write_table`."""
    import json

    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise InputError(f"no labeled table at {path}")
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    if b"streamvision.shape" not in meta:
        raise InputError(f"{path} is not a StreamVision labeled table (no shape metadata)")
    shape = tuple(json.loads(meta[b"streamvision.shape"]))
    classes = tuple(json.loads(meta[b"streamvision.classes"]))
    column = table.column("features").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    features = flat.reshape((len(table), *shape))
    labels = table.column("label").to_numpy().astype(np.int64)
    return LabeledData(features, labels, classes)


# --------------------------------------------------------------------- labeled patches
DIGITS_CELL = 20


def write_digit_patches(store_path: str | Path, per_class: int = 500, size: int = 10) -> int:
    """Write opencv-doc's handwritten digits as labeled vector patches into a store.

    ``digits.png`` (from :func:`~operators.assets.sample_data_dir`) holds 5000 digits of
    20x20 pixels, 500 per class in row order. Each becomes a whole-frame patch of the image
    (lineage ``(digits.png, index)``) labeled ``digit-N``, featurized as its pixels
    downsampled to ``size x size`` and scaled to ``[0, 1]``.

    Returns:
        The number of patches written.
    """
    import cv2

    from operators.stores.lineage_store import LineageStore
    from operators.assets import sample_data_dir
    from streamvision.core.lineage import FileKey
    from streamvision.core.patches import PatchBatch

    path = sample_data_dir() / "digits.png"
    sheet = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if sheet is None:
        raise InputError(f"cannot read {path}")
    rows, cols = sheet.shape[0] // DIGITS_CELL, sheet.shape[1] // DIGITS_CELL
    cells = sheet[:rows * DIGITS_CELL, :cols * DIGITS_CELL].reshape(rows, DIGITS_CELL, cols, DIGITS_CELL)
    cells = cells.transpose(0, 2, 1, 3).reshape(-1, DIGITS_CELL, DIGITS_CELL)
    per_digit = len(cells) // 10
    index = np.concatenate([np.arange(d * per_digit, d * per_digit + min(per_class, per_digit)) for d in range(10)])
    vectors = np.stack([cv2.resize(cells[i], (size, size), interpolation=cv2.INTER_AREA).ravel() for i in index])
    frames = PatchBatch.whole_frames(
        keys=[FileKey(path.name, int(i)).encode() for i in index], cameras=[path.name] * len(index),
        frame_no=index, pts=index.astype(np.float64), wall_time=np.zeros(len(index)),
        size=(DIGITS_CELL, DIGITS_CELL), operator="digit_cell",
    )
    frames.labels = [f"digit-{i // per_digit}" for i in index]
    patches = frames.derive(vectors.astype(np.float32) / 255.0, operator=f"downsample{size}")
    with LineageStore(store_path) as store:
        return store.write_patches(patches)


def from_store(path: str | Path, labels: list[str] | None = None) -> LabeledData:
    """Labeled vector patches of a :class:`~operators.stores.lineage_store.LineageStore`.

    Args:
        path: the store directory (opened read-only).
        labels: the classes to use (default: every label found, sorted).

    Raises:
        InputError: no labeled vector patches, or fewer than two classes.
    """
    from operators.stores.lineage_store import LineageStore

    with LineageStore(path, read_only=True) as store:
        if labels is None:
            found = {key.split(b"\x00", 1)[0].decode() for key, _ in store.scan("by_label")}
            labels = sorted(found)
        ids: list[int] = []
        y: list[int] = []
        for index, label in enumerate(labels):
            with_label = sorted(set(store.ids_by_label(label)))
            ids.extend(with_label)
            y.extend([index] * len(with_label))
        if len(labels) < 2 or not ids:
            raise InputError(f"{path}: need labeled vector patches of at least two classes, found {labels}")
        vectors = store.vectors(ids)
    return LabeledData(np.ascontiguousarray(vectors, np.float32), np.asarray(y, np.int64), tuple(labels))


def _grey(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def from_collection(data: str | Path, *, ids: Iterable[int] | None = None, where: Any = None,
                    inputs: Literal["vectors", "pixels"] = "vectors", size: tuple[int, int] = (28, 28),
                    classes: Sequence[str] | None = None) -> LabeledData:
    """The patches of a collection that carry a user label (:mod:`operators.stores.labels`).

    Args:
        data: the collection's data directory (opened read-only, beside a running writer).
        ids: only these patch ids (e.g. the ``patch_id`` column of an SQL query).
        where: only patches matching this filter (``{"label", "camera", "start", "end",
            "model"}``, as for queries: ``label`` is the detector's label).
        inputs: ``"vectors"``: the stored feature vectors (heads on frozen EfficientNet-Lite0
            features); ``"pixels"``: each patch's crop, backtraced to its kept frame, as a
            grayscale ``size`` image (small CNNs).
        size: ``(h, w)`` of the crops for ``inputs="pixels"``.
        classes: the user labels to train on, in class order (default: every one, sorted).

    Raises:
        InputError: no store, fewer than two classes among the selected patches, a bad
            ``inputs``, or a selected patch without a vector / kept pixels.
    """
    from operators.index.filters import Where, where_ids
    from operators.index.sharded import STORE_DIRNAME
    from operators.stores.labels import UserLabels
    from operators.stores.lineage_store import LineageStore
    from operators.stores.pixels import patch_pixels

    if inputs not in ("vectors", "pixels"):
        raise InputError(f"inputs must be 'vectors' or 'pixels', not {inputs!r}")
    with LineageStore(Path(data) / STORE_DIRNAME, read_only=True) as store:
        labelled = UserLabels(store).labelled()
        chosen = set(labelled)
        if ids is not None:
            chosen &= {int(i) for i in ids}
        filtered = where_ids(store, Where.of(where)) if where else None
        if filtered is not None:
            chosen &= {int(i) for i in filtered}
        names = sorted({labelled[i] for i in chosen}) if classes is None else list(classes)
        picked = sorted(i for i in chosen if labelled[i] in names)
        if len(names) < 2 or not picked or (classes is None and len({labelled[i] for i in picked}) < 2):
            raise InputError(f"{data}: need user-labelled patches of at least two classes "
                             f"(`streamvision label ID... --as NAME`); the selection holds "
                             f"{sorted({labelled[i] for i in picked})}")
        y = np.asarray([names.index(labelled[i]) for i in picked], np.int64)
        if inputs == "vectors":
            try:
                x = np.ascontiguousarray(store.vectors(picked), np.float32)
            except KeyError as exc:
                raise InputError(f"{data}: a selected patch has no stored vector ({exc}); "
                                 f"label feature patches, or train on inputs='pixels'") from exc
        else:
            x = np.stack([_grey(patch_pixels(store, pid)["image"], size) for pid in picked]).astype(np.uint8)
    return LabeledData(x, y, tuple(names))


def load_data(spec: str) -> LabeledData:
    """Labeled data named on a command line.

    ``fashion-mnist`` / ``fashion-mnist-test`` (optionally ``:N`` for the first N rows), a
    Parquet table written by :func:`write_table`, or a store directory (labeled patches).
    """
    name, _, count = spec.partition(":")
    if name in ("fashion-mnist", "fashion-mnist-test"):
        if count and not count.isdigit():
            raise InputError(f"bad row count in {spec!r}; use e.g. fashion-mnist:6000")
        return fashion_mnist("test" if name.endswith("-test") else "train", int(count) if count else None)
    path = Path(spec)
    if path.is_dir():
        return from_store(path)
    if path.suffix == ".parquet":
        return read_table(path)
    raise InputError(f"cannot load labeled data from {spec!r}: expected fashion-mnist[-test][:N], a .parquet table "
                     f"or a store directory")
