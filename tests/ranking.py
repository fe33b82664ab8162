"""One comparison of two nearest-neighbour answers that float rounding may have reordered.

Two indexes holding the same vectors in another order (a rebuilt shard, two pipelines racing
into one collection) return scores that differ in the last float bits, and real frames tie, so
equal answers may list tied ids in another order or swap which tied id makes the cut at ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Row = Sequence[tuple[int, float]]


def assert_same_ranking(got: Sequence[Row], want: Sequence[Row], *, atol: float = 1e-5) -> None:
    """Assert two answers (rows of ``(id, score)``, best first) agree up to ties.

    Position by position the scores agree within ``atol``; every id scored more than ``atol``
    above a row's last score (so not tied with what was cut at ``k``) is in the other answer.
    """
    assert len(got) == len(want), (len(got), len(want))
    for r, (g, w) in enumerate(zip(got, want)):
        assert len(g) == len(w), (r, g, w)
        np.testing.assert_allclose([s for _, s in g], [s for _, s in w], rtol=0, atol=atol,
                                   err_msg=f"row {r}")
        for ranked, other in ((g, w), (w, g)):
            sure = {i for i, s in ranked if s > ranked[-1][1] + atol} if ranked else set()
            assert sure <= {i for i, _ in other}, (r, sorted(sure - {i for i, _ in other}), g, w)
