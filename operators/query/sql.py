"""SQL over patches (ARCHITECTURE section 14): DuckDB over an Arrow table, vector predicates
pushed into the index.

Patches are a table ``patches(patch_id, camera, frame_no, ts, label, score, bbox, model,
track_id, text, parent_id, pts, wall_time, vector)`` (:data:`COLUMNS`): one row per patch
written to the collection. A detection that was featurized is the row of its feature patch,
which carries the detection's label, box and score, with ``parent_id`` naming the detection
(whose own record ``lineage`` returns). A statement is parsed with sqlglot (DuckDB dialect) and
planned before DuckDB sees it:

* ``WHERE DOT_PRODUCT(vector, :q) > t`` becomes an index range search (``threshold``), and
  ``ORDER BY DOT_PRODUCT(vector, :q) DESC LIMIT k`` a top-k search (``similar``);
* equality on ``label``, ``camera`` or ``model`` and bounds on ``ts`` (``AND``-ed at the top of
  ``WHERE``) become the search's ``where=`` filter, or, with no vector predicate, RocksDB range
  seeks on the secondary indexes (``label IN (...)`` too): an aggregate such as DeepLens' q2
  reads the metadata of the patches it counts, never vectors or pixels;
* ``text LIKE '%lit%'`` or ``text ILIKE '%lit%'`` (a string pattern; its longest run between
  wildcards, at least 3 characters) becomes seeks on the store's trigram index of ``text``
  (:meth:`~operators.stores.lineage_store.LineageStore.ids_by_text`), whose ids, a superset of
  the matches, are intersected with the other pushed predicates' (DeepLens' q5: the first image
  holding a string, without reading every OCR line);
* DuckDB then runs the statement as written over the candidate rows only, each
  ``DOT_PRODUCT(vector, :q)`` replaced by the score the index computed (or, where no index
  search ran, by inner products with the candidates' stored vectors), so every predicate is
  still applied exactly.

``:name`` parameters bind values; one used in ``DOT_PRODUCT`` binds a query vector, an image
(path or bytes) or a patch id. ``EXPLAIN SELECT ...`` returns the plan instead of rows.

Only one ``SELECT`` over ``patches`` is accepted; DuckDB runs in memory with external access
off, so a statement can read nothing but the patches and change nothing.

>>> plan = plan_sql("SELECT patch_id FROM patches WHERE DOT_PRODUCT(vector, :q) > 0.9 AND label = 'car'")
>>> plan.search, plan.vector_param, plan.t, plan.where
('threshold', 'q', 0.9, {'label': 'car'})
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from operators.index.filters import Where, where_ids
from operators.stores.lineage_store import LineageStore
from streamvision.core.errors import InputError

#: The columns of ``patches``, in order. ``ts`` is the time the ``where=`` filters and the time
#: index use: the capture time (``sv-ts``) where the source gave one, else the presentation
#: time in the video; ``pts`` and ``wall_time`` are the two apart.
COLUMNS = ("patch_id", "camera", "frame_no", "ts", "label", "score", "bbox", "model", "track_id", "text",
           "parent_id", "pts", "wall_time", "vector")
#: Most candidate rows a top-k search with predicates the index cannot apply fetches.
MAX_CANDIDATES = 10_000
#: Longest statement accepted, in characters.
MAX_SQL_CHARS = 20_000
_PUSHABLE = {"label", "camera", "model"}
#: Shortest string the text index looks up (it keys on trigrams).
MIN_TEXT_CHARS = 3
_TS_SLACK_S = 1e-6


class _Searcher(Protocol):
    """What the planner needs of a collection's query engine."""

    store: LineageStore
    dim: int

    def vectors(self, query: Any) -> tuple[np.ndarray, bool]: ...
    def _refresh(self) -> None: ...


@dataclass
class SqlPlan:
    """How a statement is answered: the index search (if any), the candidate filter, and the
    statement DuckDB runs over the candidates."""

    statement: exp.Select
    explain: bool = False
    search: str | None = None            # "threshold" | "similar" | None
    vector_param: str | None = None      # the parameter of the searched DOT_PRODUCT
    t: float | None = None
    k: int | None = None
    exact_pushdown: bool = True           # every WHERE conjunct was expressed in ``where``
    where: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)  # ``label IN (...)`` without a vector search
    text: str | None = None               # a string every candidate's ``text`` holds (trigram index)
    dot_params: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    uses_vector: bool = False             # ``vector`` itself is selected
    columns: frozenset[str] = frozenset(COLUMNS)  # the columns the statement reads

    def describe(self) -> list[dict[str, Any]]:
        """The plan as rows (what ``EXPLAIN`` returns)."""
        if self.search == "threshold":
            step = f"index range search: DOT_PRODUCT(vector, :{self.vector_param}) > {self.t}"
        elif self.search == "similar":
            step = f"index top-{self.k} search: ORDER BY DOT_PRODUCT(vector, :{self.vector_param}) DESC"
        elif self.where or self.labels or self.text is not None:
            step = "metadata index seeks (no vectors, no pixels)"
        else:
            step = "scan of every patch's metadata"
        where = Where.of(self.where).describe()
        detail = f"label in {self.labels} {where}" if self.labels else where
        if self.text is not None:
            text = f"text holds {self.text!r} (trigram index)"
            detail = text if detail == "everything" else f"{detail} {text}"
        return [{"step": "candidates", "detail": step},
                {"step": "where", "detail": detail},
                {"step": "duckdb", "detail": self.duckdb_sql()}]

    def duckdb_sql(self) -> str:
        """The statement DuckDB runs over the candidates."""
        return _rewrite_dots(self.statement.copy()).sql("duckdb")


def _dot_column(param: str) -> str:
    return f"__dot_{param}"


def _rewrite_dots(statement: exp.Expression) -> exp.Expression:
    for node in list(statement.find_all(exp.DotProduct)):
        node.replace(exp.column(_dot_column(_dot_param(node))))
    return statement


def _dot_param(node: exp.DotProduct) -> str:
    sides = [node.this, node.expression]
    columns = [s for s in sides if isinstance(s, exp.Column)]
    holders = [s for s in sides if isinstance(s, exp.Placeholder)]
    if len(columns) != 1 or len(holders) != 1 or columns[0].name != "vector":
        raise InputError(f"DOT_PRODUCT takes the vector column and a :parameter, got {node.sql('duckdb')}")
    return str(holders[0].name)


def _parse(text: str) -> tuple[exp.Select, bool]:
    if not isinstance(text, str) or not text.strip():
        raise InputError("an SQL statement is a non-empty string")
    if len(text) > MAX_SQL_CHARS:
        raise InputError(f"the statement is longer than {MAX_SQL_CHARS} characters")
    try:
        tokens = sqlglot.tokenize(text, read="duckdb")
    except TokenError as exc:
        raise InputError(f"SQL syntax error: {exc}") from exc
    explain = bool(tokens) and tokens[0].text.upper() == "EXPLAIN"
    body = tokens[1].text if explain and len(tokens) > 1 else text  # the tokenizer keeps the rest whole
    try:
        statements = [s for s in sqlglot.parse(body, read="duckdb") if s is not None]
    except ParseError as exc:
        raise InputError(f"SQL syntax error: {exc.errors[0]['description'] if exc.errors else exc}") from exc
    if len(statements) != 1:
        raise InputError(f"give one statement, got {len(statements)}")
    statement = statements[0]
    if not isinstance(statement, exp.Select):
        raise InputError(f"only SELECT over patches is allowed, not {statement.key.upper()}")
    ctes = {cte.alias_or_name for cte in statement.find_all(exp.CTE)}
    for table in statement.find_all(exp.Table):
        if table.name not in ctes and (table.name != "patches" or table.db or table.catalog):
            raise InputError(f"only the table `patches` can be queried, not {table.sql('duckdb')}")
        if not table.name:
            raise InputError(f"only the table `patches` can be queried, not {table.sql('duckdb')}")
    return statement, explain


def _literal(node: exp.Expression) -> Any:
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return -float(node.this.this)
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else float(node.this)
    return None


def _conjuncts(where: exp.Expression | None) -> list[exp.Expression]:
    if where is None:
        return []
    return list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]


def plan_sql(text: str) -> SqlPlan:
    """Parse and plan one statement (see the module docstring).

    Raises:
        InputError: a syntax error, a statement that is not one ``SELECT`` over ``patches``, or a
            malformed ``DOT_PRODUCT``.
    """
    statement, explain = _parse(text)
    plan = SqlPlan(statement=statement, explain=explain)
    plan.params = sorted({str(p.name) for p in statement.find_all(exp.Placeholder)})
    plan.dot_params = sorted({_dot_param(d) for d in statement.find_all(exp.DotProduct)})
    star = any(not isinstance(star.parent, exp.Func) for star in statement.find_all(exp.Star))
    plan.columns = frozenset(COLUMNS) if star else frozenset(c.name for c in statement.find_all(exp.Column))
    plan.uses_vector = any(c.name == "vector" and not isinstance(c.parent, exp.DotProduct)
                           for c in statement.find_all(exp.Column)) or any(
        not isinstance(star.parent, exp.Func) for star in statement.find_all(exp.Star))
    source = statement.args.get("from_") or statement.args.get("from")
    top_level = (not statement.args.get("with") and not statement.args.get("joins") and source is not None
                 and isinstance(source.this, exp.Table) and source.this.name == "patches")
    conjuncts = _conjuncts(statement.args.get("where")) if top_level else []
    aggregated = bool(statement.args.get("group")) or any(
        isinstance(e, exp.AggFunc) for e in statement.find_all(exp.AggFunc))
    where: dict[str, Any] = {}
    exact = True
    for node in conjuncts:
        if _threshold(node, plan):
            continue
        if not _push(node, where, plan):
            exact = False
    if plan.search is not None and plan.labels:  # the index filter takes one label
        plan.labels, exact = [], False
    plan.where, plan.exact_pushdown = where, exact
    order = statement.args.get("order")
    limit = statement.args.get("limit")
    if plan.search is None and top_level and order is not None and limit is not None and not aggregated:
        first = order.expressions[0]
        if isinstance(first.this, exp.DotProduct) and first.args.get("desc"):
            k = _literal(limit.expression)
            offset = statement.args.get("offset")
            skip = _literal(offset.expression) if offset is not None else 0.0
            if isinstance(k, float) and k >= 1 and isinstance(skip, float) and skip >= 0:
                plan.search, plan.vector_param = "similar", _dot_param(first.this)
                if plan.labels:  # the index filter takes one label
                    plan.labels, plan.exact_pushdown = [], False
                plan.k = min(int(k + skip), MAX_CANDIDATES) if plan.exact_pushdown else MAX_CANDIDATES
    return plan


def _threshold(node: exp.Expression, plan: SqlPlan) -> bool:
    """``DOT_PRODUCT(vector, :q) > t`` (or ``>=``, or mirrored): the index range search."""
    if plan.search is not None or not isinstance(node, (exp.GT, exp.GTE, exp.LT, exp.LTE)):
        return False
    left, right = node.this, node.expression
    if isinstance(left, exp.DotProduct) and isinstance(node, (exp.GT, exp.GTE)):
        dot, bound = left, _literal(right)
    elif isinstance(right, exp.DotProduct) and isinstance(node, (exp.LT, exp.LTE)):
        dot, bound = right, _literal(left)
    else:
        return False
    if not isinstance(bound, float) or not math.isfinite(bound):
        return False
    plan.search, plan.vector_param = "threshold", _dot_param(dot)
    # the index returns scores > t; ``>=`` keeps an epsilon of slack and DuckDB re-checks it
    plan.t = bound if isinstance(node, (exp.GT, exp.LT)) else float(np.nextafter(np.float32(bound), -np.inf))
    return True


def _push(node: exp.Expression, where: dict[str, Any], plan: SqlPlan) -> bool:
    """Express a conjunct as a ``where=`` field; ``True`` if that is exact."""
    if isinstance(node, exp.EQ) and isinstance(node.this, exp.Column) and node.this.name in _PUSHABLE:
        value = _literal(node.expression)
        if isinstance(value, str) and value and "\x00" not in value and node.this.name not in where:
            where[node.this.name] = value
            return True
        return False
    if isinstance(node, exp.In) and isinstance(node.this, exp.Column) and node.this.name == "label" \
            and not node.args.get("query") and "label" not in where and not plan.labels:
        values = [_literal(v) for v in node.expressions]
        if values and all(isinstance(v, str) and v and "\x00" not in v for v in values):
            plan.labels = sorted(set(values))
            return True
        return False
    if isinstance(node, (exp.Like, exp.ILike)):
        _push_text(node, plan)
        return False  # the index gives a superset: DuckDB applies the pattern
    if isinstance(node, (exp.GT, exp.GTE, exp.LT, exp.LTE)):
        column, bound, op = node.this, _literal(node.expression), type(node)
        if not (isinstance(column, exp.Column) and column.name == "ts" and isinstance(bound, float)):
            return False
        # the time index keys on microseconds: a microsecond of slack, and DuckDB re-checks the bound
        if op in (exp.GTE, exp.GT):
            where["start"] = max(where.get("start", -math.inf), bound - _TS_SLACK_S)
        else:
            where["end"] = min(where.get("end", math.inf), bound + _TS_SLACK_S)
        return False
    return False


def _push_text(node: exp.Like | exp.ILike, plan: SqlPlan) -> None:
    """``text [I]LIKE 'pattern'``: the pattern's longest run between wildcards (``%``, ``_``; no
    ``ESCAPE``, which wraps the node in another), if at least :data:`MIN_TEXT_CHARS` long and
    longer than a run another conjunct pushed, is what the candidates' text must hold. The
    store folds case, so the run serves ``LIKE`` as well as ``ILIKE``."""
    if node.args.get("negate") or not (isinstance(node.this, exp.Column) and node.this.name == "text"):
        return
    pattern = node.expression
    if not (isinstance(pattern, exp.Literal) and pattern.is_string):
        return
    run = max(pattern.this.replace("_", "%").split("%"), key=len)
    if len(run) >= MIN_TEXT_CHARS and (plan.text is None or len(run) > len(plan.text)):
        plan.text = run


# ---------------------------------------------------------------------- running
def _with_text(ids: np.ndarray, text_ids: np.ndarray | None) -> np.ndarray:
    """Sorted ``ids`` whose text may hold the pushed string (all of them when none was pushed)."""
    return ids if text_ids is None else np.intersect1d(ids, text_ids)


def _candidate_ids(engine: _Searcher, plan: SqlPlan, vectors: dict[str, np.ndarray]
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Patch ids the statement can return, and the scores the index computed for them."""
    spec = Where.of(plan.where)
    texts = None if plan.text is None else engine.store.ids_by_text(plan.text)
    text_ids = None if texts is None else np.asarray(texts, np.int64)
    if plan.search is not None:
        allowed = None if spec.is_empty else where_ids(engine.store, spec)
        if text_ids is not None:
            allowed = text_ids if allowed is None else np.intersect1d(allowed, text_ids)
        q = vectors[plan.vector_param]  # type: ignore[index]
        index = engine.index  # type: ignore[attr-defined]
        if plan.search == "threshold":
            lims, D, I = index.threshold(q, plan.t, where_ids=allowed)
            ids, scores = I[lims[0]:lims[1]], D[lims[0]:lims[1]]
        else:
            D, I = index.search(q, plan.k, where_ids=allowed)
            keep = I[0] != -1
            ids, scores = I[0][keep], D[0][keep]
        return np.asarray(ids, np.int64), {plan.vector_param: np.asarray(scores, np.float32)}  # type: ignore[dict-item]
    if plan.labels:
        found = [where_ids(engine.store, Where.of({**spec.as_dict(), "label": label})) for label in plan.labels]
        return _with_text(np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64), text_ids), {}
    if not spec.is_empty:
        return _with_text(np.unique(where_ids(engine.store, spec)), text_ids), {}
    if text_ids is not None:
        return text_ids, {}
    return np.fromiter(engine.store.row_ids(), np.int64), {}


def _table(engine: _Searcher, plan: SqlPlan, ids: np.ndarray, scores: dict[str, np.ndarray],
           vectors: dict[str, np.ndarray]) -> pa.Table:
    """The candidates as the ``patches`` table: their metadata only if a column of it is read
    (the MemSQL query reads ids and scores alone, straight from the index)."""
    if not plan.columns - {"patch_id", "vector"} - {_dot_column(p) for p in plan.dot_params}:
        return pa.table({"patch_id": pa.array(ids, pa.int64()),
                         **_vector_columns(engine, plan, ids, scores, vectors)})
    metas = engine.store.patches(ids.tolist())
    keep = [i for i, m in enumerate(metas) if m is not None]
    ids = ids[keep]
    metas = [metas[i] for i in keep]
    scores = {p: s[keep] for p, s in scores.items()}
    columns: dict[str, Any] = {
        "patch_id": pa.array(ids, pa.int64()),
        "camera": pa.array([m.get("camera") for m in metas], pa.string()),
        "frame_no": pa.array([m.get("frame_no") for m in metas], pa.int64()),
        "ts": pa.array([m.get("wall_time") or m.get("ts") for m in metas], pa.float64()),
        "label": pa.array([m.get("label") for m in metas], pa.string()),
        "score": pa.array([m.get("score") for m in metas], pa.float64()),
        "bbox": pa.array([m.get("bbox") for m in metas], pa.list_(pa.float64())),
        "model": pa.array([m.get("model") for m in metas], pa.string()),
        "track_id": pa.array([m.get("track_id") for m in metas], pa.int64()),
        "text": pa.array([m.get("text") for m in metas], pa.string()),
        "parent_id": pa.array([m.get("parent") for m in metas], pa.int64()),
        "pts": pa.array([m.get("ts") for m in metas], pa.float64()),
        "wall_time": pa.array([m.get("wall_time") for m in metas], pa.float64()),
    }
    return pa.table({**columns, **_vector_columns(engine, plan, ids, scores, vectors)})


def _vector_columns(engine: _Searcher, plan: SqlPlan, ids: np.ndarray, scores: dict[str, np.ndarray],
                    vectors: dict[str, np.ndarray]) -> dict[str, pa.Array]:
    """``vector`` (if read) and one score column per ``DOT_PRODUCT`` parameter."""
    columns: dict[str, pa.Array] = {}
    need = [p for p in plan.dot_params if p not in scores]
    stored = engine.store.find_vectors(ids.tolist()) if need or plan.uses_vector else None
    if plan.uses_vector:
        assert stored is not None
        columns["vector"] = pa.array([None if v is None else v.tolist() for v in stored],
                                     pa.list_(pa.float32(), engine.dim))
    for param in plan.dot_params:
        if param in scores:
            values: list[float | None] = scores[param].astype(np.float64).tolist()
        else:
            assert stored is not None
            q = vectors[param][0]
            values = [None if v is None else float(v @ q) for v in stored]
        columns[_dot_column(param)] = pa.array(values, pa.float64())
    return columns


_database: Any = None
_database_lock = threading.Lock()


def _cursor() -> Any:
    """A DuckDB connection of its own (a cursor) to the process's one in-memory database, which
    has external access off and its configuration locked (opening a database costs ~20 ms; a
    cursor, ~1 ms). Tables registered on a cursor are its own."""
    global _database
    import duckdb

    with _database_lock:
        if _database is None:
            database = duckdb.connect(":memory:", config={"enable_external_access": False})
            database.execute("SET lock_configuration = true")
            _database = database
        return _database.cursor()


def execute_sql(engine: _Searcher, text: str, params: dict[str, Any] | None = None
                ) -> tuple[pa.Table, dict[str, Any]]:
    """Run one statement: the result as a pyarrow Table, and the answer document without its
    rows (``{"kind": "sql", "query", "plan", "candidates"}``); ``EXPLAIN`` returns the plan rows.

    Raises:
        InputError: a bad statement (see :func:`plan_sql`), a parameter missing, unknown or of
            the wrong form (a query vector of another dimension), or DuckDB refusing it (an
            unknown column, a type error).
    """
    import duckdb

    params = dict(params or {})
    plan = plan_sql(text)
    missing, unknown = sorted(set(plan.params) - set(params)), sorted(set(params) - set(plan.params))
    if missing or unknown:
        raise InputError(f"parameters: missing {missing or 'none'}, unknown {unknown or 'none'} "
                         f"(the statement uses {plan.params or 'none'})")
    if plan.text is not None and not engine.store.text_indexed:  # a store older than the text index
        plan.text = None
    rows_plan = plan.describe()
    doc: dict[str, Any] = {"kind": "sql", "query": {"sql": text}, "plan": rows_plan}
    if plan.explain:
        return pa.Table.from_pylist(rows_plan), {**doc, "candidates": 0}
    vectors: dict[str, np.ndarray] = {}
    for name in plan.dot_params:
        q, batch = engine.vectors(params.pop(name))
        if batch or len(q) != 1:
            raise InputError(f":{name} must be one query (a vector, an image or a patch id), not a batch")
        vectors[name] = q
    engine._refresh()  # noqa: SLF001 - the metadata of the newest writes
    ids, scores = _candidate_ids(engine, plan, vectors)
    table = _table(engine, plan, ids, scores, vectors)
    con = _cursor()
    try:
        con.register("patches", table)
        try:
            result = con.sql(plan.duckdb_sql(), params=params).to_arrow_table()
        except duckdb.Error as exc:
            raise InputError(f"SQL error: {str(exc).splitlines()[0]}") from exc
    finally:
        con.close()
    return result, {**doc, "candidates": int(len(ids))}


def run_sql(engine: _Searcher, text: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Answer one statement as a JSON-able document: :func:`execute_sql`'s, plus ``columns``,
    ``rows`` and ``count`` (what the HTTP API and ``--json`` return)."""
    result, doc = execute_sql(engine, text, params)
    rows = [list(r.values()) for r in result.to_pylist()]
    return {**doc, "columns": list(result.column_names), "rows": _jsonable(rows), "count": len(rows)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # dates, decimals, intervals


def vector_params(text: str) -> set[str]:
    """Names of the parameters a statement uses as ``DOT_PRODUCT`` queries (for clients that must
    encode those as query vectors or images)."""
    return set(plan_sql(text).dot_params)


def as_table(doc: dict[str, Any]) -> pa.Table:
    """An SQL answer document as a pyarrow Table."""
    return pa.table({name: [row[i] for row in doc["rows"]] for i, name in enumerate(doc["columns"])})


__all__ = ["COLUMNS", "SqlPlan", "as_table", "execute_sql", "plan_sql", "run_sql", "vector_params"]
