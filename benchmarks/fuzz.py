"""Fuzz benchmark: the wire codec's property-based fuzz, run for minutes instead of seconds.

Decodes hypothesis-drawn cases of ``tests/operators/test_wire_fuzz.py`` (the strategies live
there only: real vtest.avi frames as JPEG, PNG, raw and H.264 segments, mutated payloads and
random headers; plus the "bomb" messages that would decode to huge pictures) with
``operators.kafka.wire.decode`` under the test's small ``DecodeLimits``, in batches of 50
examples with hypothesis seeds 0, 1, 2, ... until the time budget is spent. An input that
raises anything but a ``WireError``, or decodes to something outside the limits, is a crash;
its case (a plain tuple that replays through ``materialize``) is kept. Usage::

    python benchmarks/fuzz.py --out benchmarks/results [--seconds 300]

Writes ``OUT/fuzz.json`` (``fuzz_inputs``, ``fuzz_crashes``, ``crashes``: the first 5,
``seconds``, ``max_rss_mb``, inputs per second, the outcome of every input by reason, peak
RSS growth against the bound the limits allow) and ``OUT/fuzz.png`` (inputs per second over
the run, and the outcomes by reason).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hypothesis  # noqa: E402

from operators.assets import vtest_video  # noqa: E402
from tests.operators.test_wire_fuzz import LIMITS, fuzz_run, memory_bound_mb, refused_bound_mb  # noqa: E402


def plot(result: dict[str, Any], path: Path) -> None:
    """Inputs per second over the run (per batch), and the outcomes by reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, reason_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    times, counts = [0.0], [0]
    for t, n in result["timeline"]:
        times.append(t)
        counts.append(n)
    rates = [(counts[i] - counts[i - 1]) / max(times[i] - times[i - 1], 1e-9) for i in range(1, len(times))]
    rate_ax.plot(times[1:], rates, ".-", alpha=0.7, label="per batch of 50")
    rate_ax.axhline(result["inputs_per_s"], color="k", ls="--", label=f"mean {result['inputs_per_s']:.0f}/s")
    rate_ax.set_xlabel("seconds into the run")
    rate_ax.set_ylabel("inputs decoded per second")
    rate_ax.set_title(f"wire.decode fuzz throughput ({os.cpu_count()} cores)")
    rate_ax.grid(True, alpha=0.3)
    rate_ax.legend()
    reasons = sorted(result["outcomes"].items(), key=lambda kv: kv[1])
    colors = ["tab:red" if name == "crash" else "tab:green" if name == "ok" else "tab:blue" for name, _ in reasons]
    reason_ax.barh([name for name, _ in reasons], [n for _, n in reasons], color=colors)
    reason_ax.set_xlabel("inputs")
    reason_ax.set_title(f"{result['fuzz_inputs']:,} inputs by outcome ({result['fuzz_crashes']} crashes)")
    reason_ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for fuzz.json and fuzz.png")
    parser.add_argument("--seconds", type=float, default=300.0, help="time budget of the run")
    parser.add_argument("--first-seed", type=int, default=0, help="hypothesis seed of the first batch")
    args = parser.parse_args()

    def progress(p: dict[str, Any]) -> None:
        if int(p["seconds"] / 10) != int(progress.last / 10):  # type: ignore[attr-defined]
            print(f"{p['seconds']:7.1f} s: {p['inputs']:,} inputs, {p['crashes']} crashes", flush=True)
        progress.last = p["seconds"]  # type: ignore[attr-defined]

    progress.last = 0.0  # type: ignore[attr-defined]
    run = fuzz_run(vtest_video(), seconds=args.seconds, first_seed=args.first_seed, bombs=True, progress=progress)
    result = {
        "fuzz_inputs": run["fuzz_inputs"],
        "fuzz_crashes": run["fuzz_crashes"],
        "crashes": run["crashes"],
        "seconds": run["seconds"],
        "max_rss_mb": run["max_rss_mb"],
        "inputs_per_s": round(run["fuzz_inputs"] / run["seconds"], 1),
        "outcomes": run["outcomes"],
        "rss_before_mb": run["rss_before_mb"],
        "rss_growth_mb": run["rss_growth_mb"],
        "rss_growth_bound_mb": round(memory_bound_mb(LIMITS), 1),
        "bombs_rss_growth_mb": run["bombs_rss_growth_mb"],
        "bombs_rss_growth_bound_mb": round(refused_bound_mb(LIMITS), 1),
        "limits": LIMITS.__dict__,
        "first_seed": args.first_seed,
        "hypothesis": hypothesis.__version__,
        "cores": os.cpu_count(),
        "timeline": run["timeline"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fuzz.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "fuzz.png")
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=2))
    if result["fuzz_crashes"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
