"""The model selection table (MST): the configurations to train, one row per model.

As in MADlib's ``load_model_selection_table``: architectures x compile parameters
(optimizer, learning rate, its per-epoch decay, weight decay, momentum) x fit parameters
(batch size), as a
grid, or explicit rows. Every row gets a stable *mst key* derived from its content, which
names its checkpoints, results and its entry in the store's ``models`` column family.

>>> table = load_model_selection_table(["cnn_small"], {"lr": [0.01, 0.001]}, {"batch_size": [64]})
>>> [row.lr for row in table]
[0.01, 0.001]
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from operators.training.architectures import check_name
from streamvision.core.errors import ConfigError

OPTIMIZERS = ("sgd", "adam")
COMPILE_PARAMS = ("optimizer", "lr", "lr_decay", "weight_decay", "momentum")
FIT_PARAMS = ("batch_size",)
_STORE_PREFIX = b"mst\x00"

ParamSpec = Mapping[str, Any] | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class ModelConfig:
    """One row of the model selection table.

    Attributes:
        arch: architecture name (see :mod:`operators.training.architectures`).
        optimizer: ``"sgd"`` (with momentum) or ``"adam"``.
        lr: learning rate of the first epoch, > 0.
        lr_decay: step decay in ``(0, 1]``: epoch ``e`` trains with ``lr * lr_decay ** (e - 1)``
            (1.0 = a constant rate).
        weight_decay: L2 penalty, >= 0.
        momentum: SGD momentum in ``[0, 1)`` (ignored by Adam).
        batch_size: minibatch size, >= 1.
    """

    arch: str
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_decay: float = 1.0
    weight_decay: float = 0.0
    momentum: float = 0.9
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_name(self.arch)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"model {self.arch}: unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        for name, kind in (("lr", float), ("lr_decay", float), ("weight_decay", float), ("momentum", float), ("batch_size", int)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
                raise ConfigError(f"model {self.arch}: {name} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"model {self.arch}: learning rate must be > 0, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"model {self.arch}: lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.weight_decay < 0:
            raise ConfigError(f"model {self.arch}: weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"model {self.arch}: momentum must be in [0, 1), got {self.momentum}")
        if self.batch_size < 1:
            raise ConfigError(f"model {self.arch}: batch_size must be >= 1, got {self.batch_size}")

    def lr_at(self, epoch: int) -> float:
        """The learning rate of 1-based ``epoch``."""
        return self.lr * self.lr_decay ** (epoch - 1)

    @property
    def key(self) -> str:
        """The mst key: architecture name and a hash of every parameter (stable across runs)."""
        body = json.dumps(asdict(self), sort_keys=True)
        return f"{self.arch}-{hashlib.sha256(body.encode()).hexdigest()[:8]}"

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON-able dict, ``key`` included."""
        return {"key": self.key, **asdict(self)}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> "ModelConfig":
        """A row from a dict (a ``key`` entry is checked, not trusted)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(row) - known - {"key"})
        if unknown:
            raise ConfigError(f"unknown model selection parameter(s) {unknown}; known: {sorted(known)}")
        if "arch" not in row:
            raise ConfigError(f"model selection row {dict(row)} has no 'arch'")
        config = cls(**{k: v for k, v in row.items() if k != "key"})
        if "key" in row and row["key"] != config.key:
            raise ConfigError(f"row key {row['key']!r} does not match its parameters ({config.key!r})")
        return config


class ModelSelectionTable:
    """An ordered, duplicate-free list of :class:`ModelConfig`."""

    def __init__(self, rows: Sequence[ModelConfig]) -> None:
        if not rows:
            raise ConfigError("the model selection table is empty")
        keys = [row.key for row in rows]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ConfigError(f"duplicate configurations in the model selection table: {dup}")
        self.rows = list(rows)

    def __iter__(self) -> Iterator[ModelConfig]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: str) -> ModelConfig:
        for row in self.rows:
            if row.key == key:
                return row
        raise KeyError(f"no model {key!r} in the model selection table")

    @property
    def keys(self) -> list[str]:
        """The mst keys, in table order."""
        return [row.key for row in self.rows]

    def check_workers(self, workers: int) -> None:
        """Raise :class:`ConfigError` unless ``1 <= workers <= len(self)``.

        Model hopper parallelism keeps every worker busy with a different model; with
        fewer models than workers some workers would only ever wait.
        """
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if len(self) < workers:
            raise ConfigError(
                f"{len(self)} configuration(s) for {workers} workers: model hopper parallelism needs at least "
                f"as many configurations as workers (use fewer workers or add configurations)"
            )

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> "ModelSelectionTable":
        """Explicit rows, each a dict with ``arch`` and any parameters."""
        return cls([ModelConfig.from_json(row) for row in rows])

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelSelectionTable":
        """A YAML or JSON file: either ``rows: [...]`` or ``archs``, ``compile_params``, ``fit_params``."""
        import yaml

        path = Path(path)
        if not path.exists():
            raise ConfigError(f"no model selection file at {path}")
        spec = yaml.safe_load(path.read_text())
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: expected a mapping with 'rows' or 'archs'")
        unknown = sorted(set(spec) - {"rows", "archs", "compile_params", "fit_params"})
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {unknown}")
        if "rows" in spec:
            return cls.from_rows(spec["rows"])
        if "archs" not in spec:
            raise ConfigError(f"{path}: needs 'rows' or 'archs'")
        return load_model_selection_table(spec["archs"], spec.get("compile_params", {}), spec.get("fit_params", {}))

    # ---------------------------------------------------------------- the store
    def save(self, store: Any) -> None:
        """Write every row to the store's ``models`` column family under ``mst\\0<key>``."""
        for row in self.rows:
            store.put("models", _STORE_PREFIX + row.key.encode(), json.dumps(row.to_json()).encode())

    @classmethod
    def from_store(cls, store: Any) -> "ModelSelectionTable":
        """The rows saved in a store by :meth:`save`, in key order."""
        return cls([ModelConfig.from_json(json.loads(raw)) for _, raw in store.scan("models", _STORE_PREFIX)])


def _combos(spec: ParamSpec | None, allowed: tuple[str, ...], what: str) -> list[dict[str, Any]]:
    """A grid (dict of lists or scalars) or explicit list of dicts -> list of parameter dicts."""
    if spec is None:
        return [{}]
    if isinstance(spec, Mapping):
        names = list(spec)
        values = [v if isinstance(v, (list, tuple)) else [v] for v in spec.values()]
        if any(len(v) == 0 for v in values):
            raise ConfigError(f"{what}: every parameter needs at least one value")
        combos = [dict(zip(names, combo)) for combo in itertools.product(*values)]
    else:
        combos = [dict(c) for c in spec]
        if not combos:
            raise ConfigError(f"{what}: the list of parameter sets is empty")
    for combo in combos:
        unknown = sorted(set(combo) - set(allowed))
        if unknown:
            raise ConfigError(f"{what}: unknown parameter(s) {unknown}; allowed: {list(allowed)}")
    return combos


def load_model_selection_table(
    archs: Sequence[str], compile_params: ParamSpec | None = None, fit_params: ParamSpec | None = None
) -> ModelSelectionTable:
    """The grid ``archs x compile_params x fit_params`` as a validated table.

    Args:
        archs: architecture names.
        compile_params: ``{"optimizer": [...], "lr": [...], "lr_decay": [...], "weight_decay": [...],
            "momentum": [...]}`` (a grid; scalars allowed) or a list of such dicts.
        fit_params: ``{"batch_size": [...]}`` or a list of dicts.

    Raises:
        ConfigError: unknown architecture or parameter, a bad value (e.g. a negative
            learning rate), or duplicate rows.
    """
    if isinstance(archs, str) or not archs:
        raise ConfigError(f"archs must be a non-empty list of architecture names, got {archs!r}")
    compiles = _combos(compile_params, COMPILE_PARAMS, "compile_params")
    fits = _combos(fit_params, FIT_PARAMS, "fit_params")
    return ModelSelectionTable([ModelConfig(arch=a, **c, **f) for a in archs for c in compiles for f in fits])
