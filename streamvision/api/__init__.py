"""The facade: :func:`connect` for queries, :func:`run` for pipelines."""

from streamvision.api.connect import connect
from streamvision.api.query import Collection, Match, Pair, Queries
from streamvision.api.runner import run

__all__ = ["Collection", "Match", "Pair", "Queries", "connect", "run"]
