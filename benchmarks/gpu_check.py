"""The prepared GPU device check (issue #17): the project's models, a brute-force vector scan,
video decoding and the default pipeline's work, measured on one CUDA card.

    python benchmarks/gpu_check.py --out DIR [--cpu-smoke] [--streams 1,4,16] [--bandwidth-gbs 4800]

``benchmarks/gpu_check.sh`` carries it to a device machine (``prepare`` here, ``run OUT`` there).
Each section is measured on its own; one that cannot run records ``{"skipped": reason}`` and the
rest still run:

* ``models``: NanoDet-m frames/s (``NanoDet.raw``: uint8 frames to the GPU, every cell's scores
  and boxes back to the host, no NMS) and EfficientNet-Lite0 patches/s (224x224, ``embed``:
  vectors and probabilities back) per batch size (1, 8, 32, 64), fp16 autocast on CUDA as the
  operators choose it (:func:`~operators.models.compute.choose_compute`, runtime torch), on real
  vtest.avi frames and on NanoDet-m's crops of them plus the whole frames, as
  ``benchmarks/inference.py`` builds them. Best of a few timed passes after a warm-up, ``torch.cuda.synchronize()`` closing each.
* ``flat_scan``: a brute-force inner-product top-10 over 1,000,000 x 1024-d float32 (4.1 GB)
  generated on the GPU (random unit vectors: a bandwidth figure), for query batches of 1, 16 and
  256: database vectors/s, GB/s read and the fraction of the card's memory bandwidth
  (``--bandwidth-gbs``, H200: 4800 GB/s = 1.17 G vectors/s). FAISS's ``GpuIndexFlatIP`` when a
  FAISS with GPU support imports, else torch (matmul + ``topk``, in blocks of rows);
  ``engine`` says which. ``self_match``: the share of queries (database rows) found as their own top-1.
* ``decode``: vtest.avi decoded on CPU (PyAV as ``VideoFileSource`` decodes when installed, else
  OpenCV; ``decoder`` says which), and whether PyAV offers an NVDEC (``*_cuvid``) decoder for
  the video's codec (vtest.avi is MS MPEG-4 v3, which NVDEC does not decode).
* ``pipeline``: the default ingest pipeline's operators (``video_ingest_flow``: NanoDet-m with
  whole frames -> tracker -> EfficientNet-Lite0, options and batch size as the flow builds them
  for one replica on this machine) on N concurrent copies of vtest.avi (``--streams``): one
  decoder thread per stream, batches that mix the streams, one thread per operator step with
  the flow's bounded edges. No Ray and no store on the device machine, so it runs in this
  process and nothing is written: aggregate frames/s and frames/s per stream.

``--cpu-smoke`` runs every section on CPU with tiny sizes (fp32; batch sizes 1 and 4; 20,000
vectors scanned with torch, the device machine's engine; streams 1 and 2 of a few frames) to
prove the script where there is no GPU (``tests/test_gpu_check.py``).

The device machine lacks Ray, FAISS and PyAV. When ``import streamvision`` (whose ``__init__``
re-exports every layer, the API's FAISS and Ray imports among them) fails, only the layers the
operators need are imported, and the packages the operator chain's modules name at import time
but the measured steps never call (PyAV, FAISS) become stand-ins that raise when called;
``imports`` in the JSON says which.

Writes ``DIR/gpu_check.json`` after every section (a run cut short keeps what it measured) and
``DIR/gpu_check.png`` when matplotlib imports. Exits 1 when a section failed with an error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import queue
import sys
import tempfile
import threading
import time
import traceback
import types
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

if TYPE_CHECKING:
    from operators.base import Operator, OperatorContext
    from streamvision.core.frames import Frame

REPO = Path(__file__).resolve().parents[1]
#: When the script started (its imports done); ``wall_s`` counts from here.
STARTED = time.perf_counter()
#: Packages the operator chain's modules import but its measured steps never call; stood in when absent.
STAND_INS = ("av", "faiss")
#: Query vectors per scan, the vectors' dimension and the neighbours kept.
QUERY_BATCHES = (1, 16, 256)
SCAN_DIM, SCAN_K = 1024, 10
#: Every MODEL_FRAME_STEP-th vtest.avi frame is a model input.
MODEL_FRAME_STEP = 6
#: No section starts after this many seconds by default (the device run is killed at 480 s).
BUDGET_S = 400.0


@dataclass(frozen=True)
class Sizes:
    """How much each section measures, and where.

    Attributes:
        device: ``"cuda"`` or ``"cpu"``.
        batch_sizes: frames (detector) or patches (featurizer) per forward pass.
        model_frames: vtest.avi frames timed through the detector.
        model_patches: crops and whole frames timed through the featurizer.
        repeats: timed passes per figure; the fastest counts.
        scan_rows: database vectors of the flat scan.
        scan_block: rows per matmul of the torch scan.
        scan_passes: scans per timed pass (short scans are timed together).
        decode_frames: frames decoded per timed pass (``None``: the whole video).
        streams: concurrent copies of vtest.avi in the pipeline, one run per count.
        frames_per_stream: frames each stream sends through the pipeline.
    """

    device: str
    batch_sizes: tuple[int, ...]
    model_frames: int
    model_patches: int
    repeats: int
    scan_rows: int
    scan_block: int
    scan_passes: int
    decode_frames: int | None
    streams: tuple[int, ...]
    frames_per_stream: int


GPU = Sizes("cuda", (1, 8, 32, 64), 128, 512, 3, 1_000_000, 131_072, 10, None, (1, 4, 16), 160)
SMOKE = Sizes("cpu", (1, 4), 4, 8, 2, 20_000, 8_192, 2, 100, (1, 2), 4)


class StandIn(types.ModuleType):
    """A package this machine lacks: every attribute is another stand-in, and calling one raises."""

    def __getattr__(self, attr: str) -> "StandIn":
        if attr.startswith("__"):
            raise AttributeError(attr)
        return StandIn(f"{self.__name__}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        package = self.__name__.split(".")[0]
        raise ModuleNotFoundError(f"{self.__name__}() was called, but {package} is not installed on this machine")


def import_project() -> dict[str, Any]:
    """Make the project importable here, FAISS and PyAV stood in where missing; say which.

    Ray is not needed: the package's re-exports of the Ray layers load on first use, and this
    check uses the core, plan and operator layers only. ``streamvision`` says which layers the
    import loaded."""
    sys.path.insert(0, str(REPO))
    stood_in = [name for name in STAND_INS if importlib.util.find_spec(name) is None]
    for name in stood_in:
        sys.modules[name] = StandIn(name)
    importlib.import_module("streamvision")
    loaded = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("streamvision", "operators", "cluster")})
    return {"streamvision": f"imported; layers loaded: {', '.join(loaded)}", "stand_ins": stood_in}


def installed(name: str) -> bool:
    """Whether ``name`` imports as the real package (not a :class:`StandIn`)."""
    try:
        return not isinstance(importlib.import_module(name), StandIn)
    except ImportError:
        return False


def decoder_name() -> str:
    """``"pyav"`` when PyAV is installed (the project's decoder), else ``"opencv"``."""
    return "pyav" if installed("av") else "opencv"


def decoded_frames(video: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """The first ``limit`` (``None``: all) frames of ``video`` in order, ``(h, w, 3)`` uint8 RGB."""
    if decoder_name() == "pyav":
        import av

        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # as VideoFileSource decodes
            for number, frame in enumerate(container.decode(stream)):
                if number == limit:
                    return
                yield frame.to_ndarray(format="rgb24")
        return
    import cv2

    capture = cv2.VideoCapture(str(video))
    try:
        number = 0
        while limit is None or number < limit:
            ok, bgr = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            number += 1
    finally:
        capture.release()


def probe(video: Path) -> dict[str, Any]:
    """``codec``, ``fps``, ``frames``, ``width`` and ``height`` of ``video``, as its decoder reads them."""
    if decoder_name() == "pyav":
        import av

        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            return {"codec": stream.codec_context.name, "fps": float(stream.average_rate), "frames": stream.frames,
                    "width": stream.codec_context.width, "height": stream.codec_context.height}
    import cv2

    capture = cv2.VideoCapture(str(video))
    try:
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
        return {"codec": "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)),
                "fps": float(capture.get(cv2.CAP_PROP_FPS)), "frames": int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
                "width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                "height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}
    finally:
        capture.release()


def synced(fn: Callable[[], Any], device: str) -> Callable[[], None]:
    """``fn`` followed by ``torch.cuda.synchronize()`` on CUDA, so that a timer around it sees the GPU's work."""

    def run() -> None:
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return run


def measure_models(video: Path, sizes: Sizes) -> dict[str, Any]:
    """NanoDet-m frames/s and EfficientNet-Lite0 patches/s per batch size (see the module docstring)."""
    from benchmarks.inference import best_time, crops_of
    from operators.base import OperatorContext
    from operators.detectors.nanodet import NanoDetDetector
    from operators.featurizers.efficientnet import EfficientNetLite0Featurizer
    from operators.models.device import TorchDevice
    from operators.models.nanodet import NanoDet

    context = OperatorContext(device=sizes.device, num_threads=os.cpu_count() or 1)
    frames = np.stack([frame for number, frame in enumerate(decoded_frames(video, sizes.model_frames * MODEL_FRAME_STEP))
                       if number % MODEL_FRAME_STEP == 0])
    compute = NanoDetDetector(runtime="torch").compute(context)
    detector = NanoDet(TorchDevice.of(compute, context.num_threads), runtime=compute.runtime)
    nanodet = {"compute": asdict(compute), "frames_per_s": {}}
    for batch in sizes.batch_sizes:
        seconds = best_time(synced(lambda: detector.raw(frames, chunk=batch), sizes.device), sizes.repeats)
        nanodet["frames_per_s"][str(batch)] = len(frames) / seconds
    patches = crops_of(frames, detector.detect(frames))[: sizes.model_patches]
    featurizer = EfficientNetLite0Featurizer(top_k=0, runtime="torch")
    featurizer.setup(context)
    lite0 = {"compute": asdict(featurizer.compute(context)), "patches_per_s": {}}
    for batch in sizes.batch_sizes:
        featurizer.chunk = batch
        seconds = best_time(synced(lambda: featurizer.embed(patches), sizes.device), sizes.repeats)
        lite0["patches_per_s"][str(batch)] = len(patches) / seconds
    return {"nanodet_m": nanodet, "efficientnet_lite0": lite0, "frames": len(frames), "patches": len(patches),
            "patch_size": list(patches.shape[1:3]), "repeats": sizes.repeats,
            "inputs": f"vtest.avi frames 0, {MODEL_FRAME_STEP}, {2 * MODEL_FRAME_STEP}, ...; "
                      "featurizer: NanoDet-m's crops of them and the whole frames, stretched to 224"}


def scan_engine(device: str) -> str:
    """``"faiss-gpu"`` on CUDA when a FAISS with GPU support imports and sees a GPU, else ``"torch"``."""
    if device.startswith("cuda") and installed("faiss"):
        from operators.index.shard import gpu_available

        if gpu_available():
            return "faiss-gpu"
    return "torch"


def torch_scan(db: torch.Tensor, queries: torch.Tensor, k: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` ``(scores, row ids)`` of ``queries`` against every row of ``db`` by inner product,
    ``block`` rows per matmul, each block's top-``k`` merged."""
    scores, ids = [], []
    for start in range(0, len(db), block):
        s, i = (queries @ db[start : start + block].T).topk(k, dim=1)
        scores.append(s)
        ids.append(i + start)
    best, where = torch.cat(scores, 1).topk(k, dim=1)
    return best, torch.cat(ids, 1).gather(1, where)


def scanner(engine: str, db: torch.Tensor, block: int) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``search(queries) -> (scores, ids)`` over ``db`` with ``engine``."""
    if engine == "torch":
        return lambda queries: torch_scan(db, queries, SCAN_K, block)
    import faiss
    import faiss.contrib.torch_utils  # noqa: F401 - lets FAISS read and return torch tensors on the GPU

    resources = faiss.StandardGpuResources()
    index = faiss.GpuIndexFlatIP(resources, db.shape[1])
    index.referenced_objects = [resources]  # FAISS's own way of keeping the GPU memory alive with its index
    index.add(db)
    return lambda queries: index.search(queries, SCAN_K)


def time_scans(engine: str, sizes: Sizes, bandwidth_gbs: float) -> dict[str, dict[str, float]]:
    """Per query batch: seconds per scan, vectors/s, GB/s and the share of ``bandwidth_gbs`` over a
    database generated on ``sizes.device`` (freed when this returns), and the self-match share."""
    from benchmarks.inference import best_time

    generator = torch.Generator(device=sizes.device).manual_seed(0)
    db = torch.randn(sizes.scan_rows, SCAN_DIM, device=sizes.device, generator=generator)
    db /= db.norm(dim=1, keepdim=True)
    search = scanner(engine, db, sizes.scan_block)
    database_bytes = db.numel() * db.element_size()
    by_batch = {}
    for n_queries in QUERY_BATCHES:
        rows = torch.randperm(sizes.scan_rows, device=sizes.device, generator=generator)[:n_queries]
        queries = db[rows].clone()
        seconds = best_time(synced(lambda: [search(queries) for _ in range(sizes.scan_passes)], sizes.device),
                            sizes.repeats) / sizes.scan_passes
        _, ids = search(queries)
        gbs = database_bytes / seconds / 1e9
        by_batch[str(n_queries)] = {
            "seconds_per_scan": seconds, "vectors_per_s": sizes.scan_rows / seconds,
            "queries_per_s": n_queries / seconds, "gb_per_s": gbs, "fraction_of_bandwidth": gbs / bandwidth_gbs,
            "self_match": float((ids[:, 0] == rows).float().mean()),
        }
    return by_batch


def measure_flat_scan(sizes: Sizes, bandwidth_gbs: float) -> dict[str, Any]:
    """Brute-force inner-product top-10 speed against the card's memory bandwidth (see the module docstring)."""
    engine = scan_engine(sizes.device)
    with torch.no_grad():
        by_batch = time_scans(engine, sizes, bandwidth_gbs)
    if sizes.device.startswith("cuda"):
        torch.cuda.empty_cache()
    row_bytes = SCAN_DIM * 4
    return {"engine": engine, "device": sizes.device, "rows": sizes.scan_rows, "dim": SCAN_DIM, "k": SCAN_K,
            "dtype": "float32", "database_bytes": sizes.scan_rows * row_bytes,
            "block_rows": sizes.scan_block if engine == "torch" else None,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "bandwidth_gbs": bandwidth_gbs, "bandwidth_vectors_per_s": bandwidth_gbs * 1e9 / row_bytes,
            "by_query_batch": by_batch, "passes_per_timing": sizes.scan_passes, "repeats": sizes.repeats}


def nvdec(codec: str) -> dict[str, Any]:
    """Which NVDEC (``*_cuvid``) decoders PyAV offers, and whether one decodes ``codec``."""
    import cv2

    if not installed("av"):
        return {"skipped": "PyAV is not installed on this machine, so its NVDEC (cuvid) decoders cannot be tried",
                "opencv_cudacodec": hasattr(cv2, "cudacodec")}
    import av

    cuvid = sorted(name for name in av.codecs_available if name.endswith("_cuvid"))
    if not cuvid:
        return {"skipped": "this PyAV build has no NVDEC (cuvid) decoders"}
    wanted = f"{codec}_cuvid"
    return {"cuvid_decoders": cuvid, "video_codec": codec, "decoder_for_video": wanted if wanted in cuvid else None,
            "timed": False,
            "note": (f"{wanted} is offered, but this check times decoding on CPU only" if wanted in cuvid
                     else f"vtest.avi is {codec}, which NVDEC does not decode (no {wanted}): nothing to time on the GPU")}


def measure_decode(video: Path, sizes: Sizes) -> dict[str, Any]:
    """CPU decoding frames/s of vtest.avi, best of ``sizes.repeats`` passes, and NVDEC's offer."""
    info = probe(video)
    best, frames = float("inf"), 0
    for _ in range(sizes.repeats):
        started = time.perf_counter()
        frames = sum(1 for _ in decoded_frames(video, sizes.decode_frames))
        best = min(best, time.perf_counter() - started)
    return {"cpu": {"decoder": decoder_name(), "frames": frames, "seconds": best, "frames_per_s": frames / best,
                    "cpus": os.cpu_count()},
            "video": info, "nvdec": nvdec(info["codec"])}


@dataclass(frozen=True)
class Step:
    """One operator node of the default pipeline, ready to run: the operator, its context and its edge's capacity."""

    operator: "Operator"
    context: "OperatorContext"
    capacity: int


def default_steps(video: Path, gpu: bool) -> tuple[list[Step], int]:
    """The operator steps of ``video_ingest_flow`` as it is built for one replica on this machine
    (every CPU, one GPU when ``gpu``), each with the context the Ray runtime would give it, and
    the source's frames per batch."""
    from operators.base import OperatorContext
    from streamvision.plan.pipelines import video_ingest_flow

    with tempfile.TemporaryDirectory() as data:  # the store sink is built, never opened
        flow = video_ingest_flow(video, data, replicas=1, cpus=float(os.cpu_count() or 1), gpus=1.0 if gpu else 0.0)
    steps = [Step(node.component, OperatorContext("cuda" if node.resources.num_gpus > 0 else "cpu",
                                                  max(1, int(node.resources.num_cpus))), node.resources.capacity)
             for node in flow.nodes if node.kind == "operator"]
    source = next(node for node in flow.nodes if node.kind == "source")
    return steps, int(source.resources.max_batch)


def feed(video: Path, camera: str, count: int, fps: float, out: queue.Queue, errors: list[BaseException]) -> None:
    """Decode ``count`` frames of ``video`` as camera ``camera`` into ``out``, then ``None``."""
    from streamvision.core.frames import Frame
    from streamvision.core.lineage import FileKey

    try:
        for number, image in enumerate(decoded_frames(video, count)):
            out.put(Frame(FileKey(camera, number), pts=number / fps, wall_time=0.0, image=image, camera=camera))
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        errors.append(exc)
    finally:
        out.put(None)


def batch_streams(inputs: list[queue.Queue], size: int, out: queue.Queue, errors: list[BaseException]) -> None:
    """Frames of every stream in turn, ``size`` to a batch, into ``out``, then ``None``."""
    from streamvision.core.frames import FrameBatch

    pending: list[Frame] = []
    live = list(inputs)
    try:
        while live:
            for stream in list(live):
                frame = stream.get()
                if frame is None:
                    live.remove(stream)
                    continue
                pending.append(frame)
                if len(pending) == size:
                    out.put(FrameBatch.from_frames(pending))
                    pending = []
        if pending:
            out.put(FrameBatch.from_frames(pending))
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        errors.append(exc)
    finally:
        out.put(None)


def run_step(operator: "Operator", inbox: queue.Queue, outbox: queue.Queue, errors: list[BaseException]) -> None:
    """Process every batch of ``inbox`` into ``outbox`` until ``None``; after any error, only drain."""
    while (batch := inbox.get()) is not None:
        if errors:
            continue
        try:
            outbox.put(operator.process(batch))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
    outbox.put(None)


def run_streams(video: Path, steps: list[Step], batch: int, streams: int, frames: int, tag: str) -> dict[str, Any]:
    """``streams`` concurrent copies of ``video`` (``frames`` each) through ``steps``: frames/s and patches."""
    info = probe(video)
    fps, frames = info["fps"] or 10.0, min(frames, info["frames"] or frames)
    errors: list[BaseException] = []
    inputs = [queue.Queue(maxsize=2 * batch) for _ in range(streams)]
    edges = [queue.Queue(maxsize=step.capacity) for step in steps] + [queue.Queue()]
    threads = [threading.Thread(target=feed, args=(video, f"{tag}/stream{i}", frames, fps, q, errors), daemon=True)
               for i, q in enumerate(inputs)]
    threads.append(threading.Thread(target=batch_streams, args=(inputs, batch, edges[0], errors), daemon=True))
    threads += [threading.Thread(target=run_step, args=(step.operator, edges[i], edges[i + 1], errors), daemon=True)
                for i, step in enumerate(steps)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    patches = tracked = 0
    while (out := edges[-1].get()) is not None:
        patches += len(out)
        tracked += sum(t is not None for t in out.extra.get("track_id", []))
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    total = streams * frames
    return {"streams": streams, "frames": total, "seconds": seconds, "frames_per_s": total / seconds,
            "frames_per_s_per_stream": total / seconds / streams, "patches": patches, "tracked_patches": tracked}


def measure_pipeline(video: Path, sizes: Sizes) -> dict[str, Any]:
    """The default pipeline's operators on concurrent streams (see the module docstring)."""
    from streamvision.core.frames import Frame, FrameBatch
    from streamvision.core.lineage import FileKey

    steps, batch = default_steps(video, sizes.device.startswith("cuda"))
    for step in steps:
        step.operator.setup(step.context)
    warm = FrameBatch.from_frames([Frame(FileKey("warm-up", i), pts=i / 10, wall_time=0.0, image=image, camera="warm-up")
                                   for i, image in enumerate(decoded_frames(video, batch))])
    for step in steps:  # traces the models and starts CUDA's kernels before anything is timed
        warm = step.operator.process(warm)
    runs = {str(n): run_streams(video, steps, batch, n, sizes.frames_per_stream, f"run{n}") for n in sizes.streams}
    computes = {step.operator.name: asdict(step.operator.compute(step.context))
                for step in steps if hasattr(step.operator, "compute")}
    for step in steps:
        step.operator.teardown()
    return {"runner": "in-process operator chain (no Ray on the device machine)",
            "chain": [step.operator.name for step in steps], "compute": computes,
            "contexts": {step.operator.name: asdict(step.context) for step in steps},
            "frame_batch": batch, "frames_per_stream": sizes.frames_per_stream, "decoder": decoder_name(),
            "sink": "none: the store (RocksDB + FAISS) is not run", "by_streams": runs}


def machine_facts(mode: str, imports: dict[str, Any]) -> dict[str, Any]:
    """Versions, the CUDA device and its properties, the mode and how the project was imported."""
    import cv2

    facts: dict[str, Any] = {"mode": mode, "python": platform.python_version(), "torch": torch.__version__,
                             "numpy": np.__version__, "opencv": cv2.__version__, "cpus": os.cpu_count(),
                             "cuda_available": torch.cuda.is_available(), "imports": imports}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["cuda"] = {
            "device": torch.cuda.get_device_name(0), "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "properties": {name: getattr(props, name, None) for name in (
                "name", "major", "minor", "total_memory", "multi_processor_count", "L2_cache_size",
                "max_threads_per_multi_processor", "warp_size")},
        }
    return facts


def plot(result: dict[str, Any], path: Path) -> bool:
    """Four small charts of the measured figures; ``False`` (nothing written) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    models, scan, pipe = result.get("models", {}), result.get("flat_scan", {}), result.get("pipeline", {})
    charts = [
        (axes[0, 0], models.get("nanodet_m", {}).get("frames_per_s"), "NanoDet-m frames/s", "batch size"),
        (axes[0, 1], models.get("efficientnet_lite0", {}).get("patches_per_s"), "EfficientNet-Lite0 patches/s",
         "batch size"),
        (axes[1, 0], {k: v["gb_per_s"] for k, v in scan.get("by_query_batch", {}).items()},
         f"flat scan GB/s ({scan.get('engine', '-')}; bandwidth {scan.get('bandwidth_gbs', '-')})", "query batch"),
        (axes[1, 1], {k: v["frames_per_s"] for k, v in pipe.get("by_streams", {}).items()},
         "pipeline frames/s (all streams)", "streams"),
    ]
    for ax, figures, title, xlabel in charts:
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        if figures:
            bars = ax.bar(list(figures), list(figures.values()), color="#3b7dd8")
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        else:
            ax.text(0.5, 0.5, "skipped", ha="center", va="center", transform=ax.transAxes)
    device = result.get("cuda", {}).get("device", "CPU")
    fig.suptitle(f"gpu_check ({result['mode']}): {device}, torch {result['torch']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def run_section(name: str, measure: Callable[[], dict[str, Any]], needs_cuda: bool, deadline: float) -> dict[str, Any]:
    """One section's figures and seconds, or ``{"skipped": reason}``; an error is printed and recorded."""
    if time.perf_counter() > deadline:
        return {"skipped": "the run's time budget was spent before this section"}
    if needs_cuda and not torch.cuda.is_available():
        return {"skipped": "CUDA is not available (torch.cuda.is_available() is False); use --cpu-smoke without a GPU"}
    started = time.perf_counter()
    try:
        section = measure()
    except Exception as exc:  # noqa: BLE001 - one section's failure must not lose the others
        traceback.print_exc()
        section = {"skipped": f"failed: {type(exc).__name__}: {exc}", "error": True}
    section["seconds"] = time.perf_counter() - started
    print(f"{name}: {json.dumps(section, default=str)[:600]}", flush=True)
    return section


def parse_counts(text: str) -> tuple[int, ...]:
    """``"1,4,16"`` -> ``(1, 4, 16)``."""
    counts = tuple(int(part) for part in text.split(",") if part.strip())
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"need positive stream counts, got {text!r}")
    return counts


def main() -> int:
    """Measure every section, writing ``gpu_check.json`` as it goes and ``gpu_check.png`` at the end."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes, everything on CPU (no GPU needed)")
    parser.add_argument("--streams", type=parse_counts, help="pipeline stream counts (default 1,4,16; smoke 1,2)")
    parser.add_argument("--bandwidth-gbs", type=float, default=4800.0, help="the card's memory bandwidth, GB/s")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="no section starts after this many seconds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = SMOKE if args.cpu_smoke else GPU
    if args.streams:
        sizes = replace(sizes, streams=args.streams)
    result = machine_facts("cpu-smoke" if args.cpu_smoke else "gpu", import_project())
    from operators.assets import vtest_video

    video = vtest_video()
    deadline = STARTED + args.budget_s
    gpu = not args.cpu_smoke
    sections = (
        ("models", lambda: measure_models(video, sizes), gpu),
        ("flat_scan", lambda: measure_flat_scan(sizes, args.bandwidth_gbs), gpu),
        ("decode", lambda: measure_decode(video, sizes), False),
        ("pipeline", lambda: measure_pipeline(video, sizes), gpu),
    )
    for name, measure, needs_cuda in sections:
        result[name] = run_section(name, measure, needs_cuda, deadline)
        result["wall_s"] = time.perf_counter() - STARTED
        (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str))
    result["png"] = plot(result, args.out / "gpu_check.png")
    result["wall_s"] = time.perf_counter() - STARTED
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out / 'gpu_check.json'} in {result['wall_s']:.1f} s", flush=True)
    return 1 if any(result[name].get("error") for name, _, _ in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
