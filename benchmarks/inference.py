"""Model inference speed per core on each runtime and precision, and what int8 costs in accuracy.

    python benchmarks/inference.py --out DIR [--frames 32] [--repeats 3] [--label-frames 120]

NanoDet-m (frames/s) and EfficientNet-Lite0 (patches/s) on one thread each
(``torch.set_num_threads(1)``, ONNX Runtime ``intra_op_num_threads=1``, OpenVINO
``INFERENCE_NUM_THREADS=1``): traced torch fp32 (the path before ONNX), ONNX Runtime and
OpenVINO in fp32 and int8 (the convolutions statically quantized, calibrated on other real
vtest.avi frames, or for the featurizer on NanoDet-m's crops of them: an int8 featurizer is
measured here only, the operator does not offer it). Inputs are real: vtest.avi frames (none of them a calibration frame) in
batches of 4 as the pipeline sends them, and for the featurizer NanoDet-m's crops of those frames
plus the whole frames, stretched to 224, 8 per pass. Each figure is the best of ``--repeats``
timed passes after a warm-up.

Accuracy, against the fp32 torch outputs on the same frames:

* ``*_max_abs_diff``: raw outputs (detector scores and boxes in frame pixels; featurizer vectors
  and probabilities);
* ``detector_agreement``: box-level agreement of the detections after NMS (score >= 0.35) with
  torch's, same class and IoU >= 0.5: precision, recall and F1 of one against the other;
* ``featurizer_agreement``: mean and minimum cosine of the vectors, top-1 ImageNet agreement;
* ``detector_vs_labels``: precision and recall at IoU 0.5 for person and vehicle (car, truck,
  bus) against the hand labels of ``tests/data/vtest_gt/gt.txt`` (every 2nd of its 240 frames),
  when that file is there.

Writes ``DIR/inference.json`` (``detector_fps_per_core`` and ``featurizer_fps_per_core``, each
``{"torch", "onnxruntime", "openvino", "onnxruntime_int8", "openvino_int8"}``, plus the accuracy
figures) and ``DIR/inference.png``. Other benchmarks import :func:`measure_inference`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from operators.base import OperatorContext
from operators.featurizers.efficientnet import EfficientNetLite0Featurizer
from operators.featurizers.resize import stack_resized
from operators.models.calibration import vtest_frames
from operators.models.coco import COCO80
from operators.models.device import TorchDevice
from operators.models.efficientnet_lite import INPUT_SIZE
from operators.models.efficientnet_lite import onnx_model as lite0_onnx_model
from operators.models.nanodet import Detections, NanoDet
from operators.models.nms import iou_matrix
from operators.models.quantize import quantize_int8
from operators.models.runtimes import is_installed, open_session

#: Frames per detector call and patches per featurizer pass, as in the default pipeline.
FRAME_BATCH = 4
PATCH_BATCH = 8
SCORE_THRESHOLD = 0.35
#: Timed frames: 5, 24, 43, ...; never a calibration frame (250, 269, ...).
FRAME_OFFSET, FRAME_STEP = 5, 19
#: Calibration frames (operators.models.calibration) whose NanoDet-m crops calibrate the featurizer's int8 model.
FEATURIZER_CALIBRATION_FRAMES = 16
LABELS = Path(__file__).resolve().parents[1] / "tests" / "data" / "vtest_gt" / "gt.txt"
#: Label classes (tests/data/vtest_gt/README.md) -> the group they are scored in; COCO names likewise.
LABEL_GROUPS = {1: "person", 3: "vehicle", 5: "vehicle", 6: "vehicle", 7: "vehicle"}
COCO_GROUPS = {"person": "person", "car": "vehicle", "truck": "vehicle", "bus": "vehicle"}


def variants() -> list[tuple[str, str, str]]:
    """``(key, runtime, precision)`` of every installed configuration; ``"torch"`` first (the reference)."""
    out = [("torch", "torch", "fp32")]
    for runtime in ("onnxruntime", "openvino"):
        if is_installed(runtime):
            out += [(runtime, runtime, "fp32"), (f"{runtime}_int8", runtime, "int8")]
    return out


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def detect(model: NanoDet, frames: np.ndarray) -> list[Detections]:
    """Detections of ``frames``, ``FRAME_BATCH`` at a time, at the detector operator's defaults."""
    out: list[Detections] = []
    for start in range(0, len(frames), FRAME_BATCH):
        out += model.detect(frames[start : start + FRAME_BATCH], score_threshold=SCORE_THRESHOLD)
    return out


def match(found: list[tuple[np.ndarray, np.ndarray]], truth: list[tuple[np.ndarray, np.ndarray]],
          found_scores: list[np.ndarray]) -> tuple[int, int, int]:
    """``(true positives, found, true)`` over frames: greedy by score, same group, IoU >= 0.5.

    Each list item is one frame's ``(boxes (k, 4), groups (k,))``.
    """
    tp = n_found = n_true = 0
    for (boxes, groups), (t_boxes, t_groups), scores in zip(found, truth, found_scores):
        n_found, n_true = n_found + len(boxes), n_true + len(t_boxes)
        if not len(boxes) or not len(t_boxes):
            continue
        iou = iou_matrix(boxes, t_boxes) * (groups[:, None] == t_groups[None, :])
        used = np.zeros(len(t_boxes), bool)
        for i in np.argsort(-scores, kind="stable"):
            candidates = np.where(used, 0.0, iou[i])
            j = int(np.argmax(candidates))
            if candidates[j] >= 0.5:
                used[j] = True
                tp += 1
    return tp, n_found, n_true


def _prf(tp: int, n_found: int, n_true: int) -> dict[str, float]:
    precision = tp / n_found if n_found else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "found": n_found, "true": n_true}


def agreement(found: list[Detections], reference: list[Detections]) -> dict[str, float]:
    """Box-level agreement of ``found`` with ``reference``: same COCO class, IoU >= 0.5."""
    return _prf(*match([(d.boxes, d.classes) for d in found], [(d.boxes, d.classes) for d in reference],
                       [d.scores for d in found]))


def read_labels(path: Path, frames: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per video frame number in ``frames``: labelled ``(boxes x0 y0 x1 y1, groups)`` (MOT layout, 1-based frames)."""
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    out = []
    for number in frames:
        mine = rows[(rows[:, 0] == number + 1) & np.isin(rows[:, 7], list(LABEL_GROUPS))]
        boxes = np.column_stack([mine[:, 2], mine[:, 3], mine[:, 2] + mine[:, 4], mine[:, 3] + mine[:, 5]])
        out.append((boxes.astype(np.float32), np.array([LABEL_GROUPS[int(c)] for c in mine[:, 7]], dtype=object)))
    return out


def versus_labels(found: list[Detections], truth: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Precision and recall per group (person, vehicle) of ``found`` against the labels."""
    result = {}
    for group in ("person", "vehicle"):
        mine, theirs, scores = [], [], []
        for d, (t_boxes, t_groups) in zip(found, truth):
            keep = np.array([COCO_GROUPS.get(COCO80[c]) == group for c in d.classes], bool)
            mine.append((d.boxes[keep], np.full(int(keep.sum()), group, dtype=object)))
            scores.append(d.scores[keep])
            theirs.append((t_boxes[t_groups == group], t_groups[t_groups == group]))
        result[group] = _prf(*match(mine, theirs, scores))
    return result


def crops_of(frames: np.ndarray, found: list[Detections]) -> np.ndarray:
    """The featurizer's real inputs: every detection's crop and every whole frame, stretched to 224."""
    crops = []
    for frame, d in zip(frames, found):
        crops.append(frame)
        for x0, y0, x1, y1 in d.boxes:
            crops.append(frame[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))])
    return stack_resized(crops, INPUT_SIZE)


def _detector(runtime: str, precision: str) -> NanoDet:
    return NanoDet(TorchDevice(torch.device("cpu")), runtime=runtime, num_threads=1, precision=precision)


def _embedder(runtime: str, precision: str, calibration: np.ndarray) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``embed(crops) -> (vectors, probabilities)``: the featurizer operator for fp32; for int8 (which the
    operator does not offer) a session on the int8 model calibrated on ``calibration`` crops."""
    if precision == "fp32":
        featurizer = EfficientNetLite0Featurizer(top_k=0, chunk=PATCH_BATCH, runtime=runtime)
        featurizer.setup(OperatorContext(num_threads=1))
        return featurizer.embed
    path = quantize_int8(lite0_onnx_model(), lambda: ((calibration[i : i + PATCH_BATCH],)
                                                      for i in range(0, len(calibration), PATCH_BATCH)),
                         tag=f"bench-crops{len(calibration)}")
    session = open_session(path, runtime, 1)

    def embed(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [session.run(images[i : i + PATCH_BATCH]) for i in range(0, len(images), PATCH_BATCH)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return embed


def measure_inference(frames: int = 32, repeats: int = 3, label_frames: int = 120) -> dict[str, Any]:
    """Per-core speed of NanoDet-m and EfficientNet-Lite0 on every installed runtime and precision,
    with their agreement with torch fp32 and (``label_frames`` > 0 and labels present) their
    precision / recall against the hand labels. See the module docstring for every key."""
    torch.set_num_threads(1)
    images = vtest_frames(frames, step=FRAME_STEP, offset=FRAME_OFFSET)
    configs = variants()
    labelled = list(range(0, 240, 2))[:label_frames] if LABELS.exists() and label_frames > 0 else []
    label_images = vtest_frames(len(labelled), step=2, offset=0) if labelled else None
    truth = read_labels(LABELS, labelled) if labelled else []

    det_fps: dict[str, float] = {}
    det_agree: dict[str, dict[str, float]] = {}
    det_diff: dict[str, dict[str, float]] = {}
    det_labels: dict[str, dict[str, dict[str, float]]] = {}
    reference: list[Detections] = []
    ref_raw: tuple[np.ndarray, np.ndarray] | None = None
    for key, runtime, precision in configs:
        model = _detector(runtime, precision)
        det_fps[key] = len(images) / best_time(lambda: detect(model, images), repeats)
        found = detect(model, images)
        scores, boxes = model.raw(images[:8])
        if ref_raw is None:
            reference, ref_raw = found, (scores, boxes)
        det_agree[key] = agreement(found, reference)
        det_diff[key] = {"scores": float(np.abs(scores - ref_raw[0]).max()), "boxes_px": float(np.abs(boxes - ref_raw[1]).max())}
        if label_images is not None:
            det_labels[key] = versus_labels(detect(model, label_images), truth)
        print(f"detector {key}: {det_fps[key]:.1f} frames/s, F1 vs torch {det_agree[key]['f1']:.3f}", flush=True)

    crops = crops_of(images, reference)
    calibration = vtest_frames(FEATURIZER_CALIBRATION_FRAMES)
    calibration_crops = crops_of(calibration, detect(_detector("torch", "fp32"), calibration))
    feat_fps: dict[str, float] = {}
    feat_agree: dict[str, dict[str, float]] = {}
    ref_vectors: tuple[np.ndarray, np.ndarray] | None = None
    for key, runtime, precision in configs:
        embed = _embedder(runtime, precision, calibration_crops)
        feat_fps[key] = len(crops) / best_time(lambda: embed(crops), repeats)
        vectors, probs = embed(crops)
        if ref_vectors is None:
            ref_vectors = (vectors, probs)
        cosine = np.sum(vectors * ref_vectors[0], axis=1)
        feat_agree[key] = {
            "mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "top1_agreement": float(np.mean(probs.argmax(1) == ref_vectors[1].argmax(1))),
            "vectors_max_abs_diff": float(np.abs(vectors - ref_vectors[0]).max()),
            "probabilities_max_abs_diff": float(np.abs(probs - ref_vectors[1]).max()),
        }
        print(f"featurizer {key}: {feat_fps[key]:.1f} patches/s, mean cosine vs torch {cosine.mean():.4f}", flush=True)

    return {
        "detector_fps_per_core": det_fps,
        "featurizer_fps_per_core": feat_fps,
        "detector_speedup_vs_torch": {k: v / det_fps["torch"] for k, v in det_fps.items()},
        "featurizer_speedup_vs_torch": {k: v / feat_fps["torch"] for k, v in feat_fps.items()},
        "detector_max_abs_diff": det_diff,
        "detector_agreement": det_agree,
        "detector_vs_labels": det_labels,
        "featurizer_agreement": feat_agree,
        "frames": len(images), "patches": len(crops), "label_frames": len(labelled),
        "frame_batch": FRAME_BATCH, "patch_batch": PATCH_BATCH, "threads": 1,
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import onnxruntime

    out = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    if is_installed("openvino"):
        import openvino

        out["openvino"] = openvino.__version__
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Two bar charts: detector frames/s and featurizer patches/s per core, per runtime and precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    charts = (("detector_fps_per_core", "NanoDet-m frames/s per core"),
              ("featurizer_fps_per_core", "EfficientNet-Lite0 patches/s per core"))
    for ax, (key, title) in zip(axes, charts):
        names = list(result[key])
        values = [result[key][n] for n in names]
        bars = ax.bar(names, values, color=["#888888" if n == "torch" else "#3b7dd8" if "int8" not in n else "#e08a2c"
                                            for n in names])
        for bar, value in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=25, labelsize=8)
    fig.suptitle("one thread, real vtest.avi inputs (grey: traced torch fp32; blue: ONNX fp32; orange: int8)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    """Measure and write ``inference.json`` and ``inference.png``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=32, help="vtest.avi frames timed")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per configuration; the fastest counts")
    parser.add_argument("--label-frames", type=int, default=120, help="labelled frames scored (0: none)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    result = measure_inference(args.frames, args.repeats, args.label_frames)
    result["loadavg_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    (args.out / "inference.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "inference.png")
    print(json.dumps({k: result[k] for k in ("detector_fps_per_core", "featurizer_fps_per_core")}, indent=2))


if __name__ == "__main__":
    main()
