"""Semi-automatic labelling of vtest.avi frames 0..239 into MOT Challenge ``gt.txt``.

Steps (run from the repository root; see README.md in this folder):

``propose``  NanoDet-m at a low score threshold on every frame, linked over frames by a greedy
             two-stage (confident boxes first) IoU tracker with constant-velocity prediction
             -> ``proposals.txt`` (MOT format, detector score in column 7).
``draft``    a first ``corrections`` file from the proposals (static false positives left out),
             to be rewritten by hand after looking at the frames.
``render``   frames with boxes and ids drawn large: full frames, 2x2 half-size sheets, or 2x
             zoomed crops with a pixel grid for reading coordinates -> PNG files to look at.
``build``    proposals + the hand-written ``corrections.json`` -> ``gt.txt``.

Frame numbers are 1-based everywhere (MOT convention): frame 1 is video frame 0.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
N_FRAMES = 240
WIDTH, HEIGHT = 768, 576
SNAP_IOU = 0.6  # an interpolated box snaps to a proposal overlapping it this much
CLASS_IDS = {"person": 1, "bicycle": 2, "car": 3, "motorcycle": 4, "van": 5, "truck": 6, "bus": 7}
COCO_TO_CLASS = {"person": 1, "bicycle": 2, "car": 3, "motorcycle": 4, "bus": 7, "truck": 6}

Row = dict  # keys: frame, id, box (x, y, w, h), conf, cls, vis


def vtest_path() -> Path:
    """vtest.avi as scripts/setup.sh caches it, else fetched through the project's asset helper."""
    cached = sorted((Path.home() / ".cache" / "streamvision").glob("**/vtest.avi"))
    if cached:
        return cached[0]
    from operators.assets import vtest_video

    return vtest_video()


def video_frames(n: int = N_FRAMES) -> np.ndarray:
    """The first ``n`` frames of vtest.avi as ``(n, h, w, 3)`` uint8 RGB."""
    capture = cv2.VideoCapture(str(vtest_path()))
    frames = []
    while len(frames) < n:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


def read_mot(path: Path) -> list[Row]:
    """Rows of a MOT text file (frame, id, x, y, w, h, conf, class, visibility)."""
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        f, i, x, y, w, h, conf, cls, vis = line.split(",")[:9]
        rows.append({"frame": int(f), "id": int(i), "box": [float(x), float(y), float(w), float(h)],
                     "conf": float(conf), "cls": int(float(cls)), "vis": float(vis)})
    return rows


def write_mot(path: Path, rows: list[Row]) -> None:
    """Write rows sorted by (frame, id), boxes rounded to 0.1 px."""
    lines = []
    for r in sorted(rows, key=lambda r: (r["frame"], r["id"])):
        x, y, w, h = r["box"]
        lines.append(f"{r['frame']},{r['id']},{x:.1f},{y:.1f},{w:.1f},{h:.1f},{r['conf']:g},{r['cls']},{r['vis']:g}")
    path.write_text("\n".join(lines) + "\n")


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of x0 y0 x1 y1 boxes ``a (m, 4)`` and ``b (n, 4)``."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def propose(score_threshold: float, out: Path, max_gap: int = 10, min_iou: float = 0.25) -> None:
    """Detect people and vehicles on every frame and link them into tracks by IoU."""
    from operators.models.coco import COCO80
    from operators.models.device import TorchDevice
    from operators.models.nanodet import NanoDet

    import torch

    frames = video_frames()
    model = NanoDet(TorchDevice(torch.device("cpu")))
    classes = np.array([COCO80.index(c) for c in COCO_TO_CLASS])
    found = model.detect(frames, score_threshold=score_threshold, iou_threshold=0.6, classes=classes)
    tracks: dict[int, dict] = {}  # id -> {"last": frame, "box": x0y0x1y1, "vel": per-frame shift}
    rows: list[Row] = []
    next_id = 1
    for f0, det in enumerate(found):
        frame = f0 + 1
        live = [t for t, s in tracks.items() if frame - s["last"] <= max_gap]
        predicted = [tracks[t]["box"] + tracks[t]["vel"] * (frame - tracks[t]["last"]) for t in live]
        assigned: dict[int, int] = {}
        for strong in (True, False):  # ByteTrack-style: confident boxes claim tracks first
            pool = [d for d in range(len(det.boxes)) if (det.scores[d] >= 0.45) == strong]
            free = [i for i, t in enumerate(live) if t not in assigned.values()]
            if not pool or not free:
                continue
            overlap = iou(np.array([predicted[i] for i in free]), det.boxes[pool])
            for k in np.argsort(-overlap, axis=None):
                ti, pi = divmod(int(k), len(pool))
                if overlap[ti, pi] < min_iou:
                    break
                if live[free[ti]] in assigned.values() or pool[pi] in assigned:
                    continue
                assigned[pool[pi]] = live[free[ti]]
        for di, (box, score, c) in enumerate(zip(det.boxes, det.scores, det.classes)):
            tid = assigned.get(di)
            if tid is None:
                tid, next_id = next_id, next_id + 1
                vel = np.zeros(4, np.float32)
            else:
                step = (box - tracks[tid]["box"]) / (frame - tracks[tid]["last"])
                shift = np.array([1, 0, 1, 0]) * (step[0] + step[2]) / 2 + np.array([0, 1, 0, 1]) * (step[1] + step[3]) / 2
                vel = 0.7 * tracks[tid]["vel"] + 0.3 * shift
            tracks[tid] = {"last": frame, "box": box, "vel": vel}
            x0, y0, x1, y1 = (float(v) for v in box)
            rows.append({"frame": frame, "id": tid, "box": [x0, y0, x1 - x0, y1 - y0], "conf": round(float(score), 3),
                         "cls": COCO_TO_CLASS[COCO80[int(c)]], "vis": 1.0})
    write_mot(out, rows)
    print(f"{len(rows)} proposals, {next_id - 1} tracks -> {out}")


def _interp(keys: dict[int, list[float]], frame: int) -> list[float]:
    """The box at ``frame``: a keyframe's own, else linear between the nearest keyframes around it."""
    if frame in keys:
        return list(keys[frame])
    lo = max(k for k in keys if k < frame)
    hi = min(k for k in keys if k > frame)
    t = (frame - lo) / (hi - lo)
    return [(1 - t) * a + t * b for a, b in zip(keys[lo], keys[hi])]


def _xyxy(box: list[float]) -> np.ndarray:
    x, y, w, h = box
    return np.array([[x, y, x + w, y + h]])


def build_track(tid: int, spec: dict, proposals: dict[int, dict[int, Row]], by_frame: dict[int, list[Row]]) -> list[Row]:
    """One labelled object from its correction entry (see README.md): keyframes, interpolation, snapping."""
    keys: dict[int, list[float]] = {}
    for pid, first, last in spec.get("segments", []):
        for f, r in proposals[pid].items():
            if first <= f <= last:
                keys[f] = r["box"]
    keys.update({int(f): [float(v) for v in k] for f, k in spec.get("keys", {}).items()})
    if not keys:
        raise ValueError(f"track {tid} has no keyframes")
    vis = {}
    for a, b, v in spec.get("visibility", []):
        vis.update({f: float(v) for f in range(a, b + 1)})
    rows = []
    for f in range(min(keys), max(keys) + 1):
        box = _interp(keys, f)
        if f not in keys and vis.get(f, 1.0) >= 1.0 and by_frame[f]:
            cand = by_frame[f]
            overlap = iou(_xyxy(box), np.array([_xyxy(r["box"])[0] for r in cand]))[0]
            if overlap.max() >= SNAP_IOU:
                box = list(cand[int(overlap.argmax())]["box"])
        rows.append({"frame": f, "id": tid, "box": box, "conf": 1, "cls": CLASS_IDS[spec.get("class", "person")],
                     "vis": vis.get(f, 1.0)})
    return rows


def apply_corrections(rows: list[Row], corr: dict) -> list[Row]:
    """The labelled objects of ``corr["tracks"]`` built on the proposal ``rows``; nothing else survives."""
    proposals: dict[int, dict[int, Row]] = defaultdict(dict)
    by_frame: dict[int, list[Row]] = defaultdict(list)
    for r in rows:
        proposals[r["id"]][r["frame"]] = r
        by_frame[r["frame"]].append(r)
    out = []
    for tid, spec in corr["tracks"].items():
        out += build_track(int(tid), spec, proposals, by_frame)
    out = [clip(r) for r in out if 1 <= r["frame"] <= N_FRAMES]
    return [r for r in out if r["box"][2] >= 2 and r["box"][3] >= 2]


def clip(r: Row) -> Row:
    """The row with its box clipped to the image."""
    x, y, w, h = r["box"]
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(WIDTH), x + w), min(float(HEIGHT), y + h)
    return {**r, "box": [x0, y0, x1 - x0, y1 - y0]}


def _colour(tid: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(tid * 7919)
    c = rng.integers(60, 256, 3)
    return int(c[0]), int(c[1]), int(c[2])


def draw(frame_rgb: np.ndarray, rows: list[Row], frame: int, scale: float) -> np.ndarray:
    """One frame (BGR) with its boxes, ids and frame number drawn, resized by ``scale``."""
    img = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale != 1 else img.copy()
    for r in rows:
        x, y, w, h = (v * scale for v in r["box"])
        col = _colour(r["id"])
        cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), col, 2 if r["vis"] >= 1 else 1)
        tag = f"{r['id']}" + ("" if r["cls"] == 1 else f"c{r['cls']}") + (f" {r['conf']:.2f}" if r["conf"] != 1 else "")
        fs = 0.55 if scale < 1 else 0.7
        (tw, th), _ = cv2.getTextSize(tag, cv2.FONT_HERSHEY_SIMPLEX, fs, 2)
        ty = int(y) - 2 if y > th + 4 else int(y + h) + th + 2
        cv2.rectangle(img, (int(x), ty - th - 2), (int(x) + tw + 2, ty + 2), (0, 0, 0), -1)
        cv2.putText(img, tag, (int(x) + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, fs, col, 2, cv2.LINE_AA)
    cv2.putText(img, f"f{frame}", (6, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 5, cv2.LINE_AA)
    cv2.putText(img, f"f{frame}", (6, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 255, 255), 2, cv2.LINE_AA)
    return img


def _zoom(img: np.ndarray, crop: list[int], frame: int) -> np.ndarray:
    """``crop`` (x0, y0, x1, y1) of a drawn frame at 2x, with a frame-pixel grid every 10 px (labels every 20)."""
    x0, y0, x1, y1 = crop
    tile = cv2.resize(img[y0:y1, x0:x1], None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    for x in range(x0 - x0 % 10 + 10, x1, 10):
        cv2.line(tile, (2 * (x - x0), 0), (2 * (x - x0), tile.shape[0]), (0, 110, 110), 1)
        if x % 20 == 0:
            cv2.putText(tile, str(x), (2 * (x - x0) + 1, tile.shape[0] - 4), 0, 0.35, (0, 255, 255), 1)
    for y in range(y0 - y0 % 10 + 10, y1, 10):
        cv2.line(tile, (0, 2 * (y - y0)), (tile.shape[1], 2 * (y - y0)), (0, 110, 110), 1)
        if y % 20 == 0:
            cv2.putText(tile, str(y), (1, 2 * (y - y0) - 2), 0, 0.35, (0, 255, 255), 1)
    cv2.putText(tile, f"f{frame}", (tile.shape[1] - 60, 18), 0, 0.6, (0, 0, 255), 2)
    return tile


def render(source: Path | None, frames: list[int], out: Path, grid: bool, crop: list[int] | None) -> None:
    """Write PNGs of ``frames`` (1-based) with the boxes of ``source`` (``None``: bare frames) drawn.

    ``grid`` without ``crop``: 2x2 sheets at half size; with ``crop``: sheets of six 2x zoomed
    crops with a pixel grid (for reading keyframe coordinates). ``crop`` alone: one zoomed PNG a frame.
    """
    video = video_frames(max(frames))
    by_frame = defaultdict(list)
    for r in read_mot(source) if source else []:
        by_frame[r["frame"]].append(r)
    out.mkdir(parents=True, exist_ok=True)
    if grid and crop:
        for i in range(0, len(frames), 6):
            chunk = frames[i : i + 6]
            tiles = [_zoom(draw(video[f - 1], by_frame[f], f, 1.0), crop, f) for f in chunk]
            tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 3)
            sheet = np.vstack([np.hstack(tiles[j : j + 3]) for j in range(0, len(tiles), 3)])
            cv2.imwrite(str(out / f"zoom_{chunk[0]:03d}.png"), sheet)
    elif grid:
        for i in range(0, len(frames), 4):
            chunk = frames[i : i + 4]
            tiles = [draw(video[f - 1], by_frame[f], f, 0.5) for f in chunk]
            tiles += [np.zeros_like(tiles[0])] * (4 - len(tiles))
            sheet = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
            cv2.imwrite(str(out / f"sheet_{chunk[0]:03d}.png"), sheet)
    else:
        for f in frames:
            img = draw(video[f - 1], by_frame[f], f, 1.0)
            cv2.imwrite(str(out / f"frame_{f:03d}.png"), _zoom(img, crop, f) if crop else img)
    print(f"rendered {len(frames)} frames -> {out}")


# Bottom-centre points (x, y) of things in the scene that the detector calls people: cones, a rock,
# a flower bed, sign posts, bollards. Found by looking at the rendered proposals.
STATIC_NON_OBJECTS = [(171, 207), (177, 276), (41, 193), (290, 215), (444, 204), (39, 142), (754, 200),
                      (603, 146), (160, 219), (6, 199)]


def draft(proposals: Path, out: Path) -> None:
    """A first corrections file: one object per plausible proposal track, to be edited by hand."""
    tracks = defaultdict(list)
    for r in read_mot(proposals):
        tracks[r["id"]].append(r)
    spec = {}
    for pid, rs in sorted(tracks.items()):
        feet = np.array([[r["box"][0] + r["box"][2] / 2, r["box"][1] + r["box"][3]] for r in rs])
        centre = np.median(feet, 0)
        score = float(np.mean([r["conf"] for r in rs]))
        moving = np.ptp(feet, 0).max() >= 15
        if rs[0]["cls"] != 1:
            if len(rs) == N_FRAMES:
                spec[str(pid)] = {"class": "car", "segments": [[pid, 1, N_FRAMES]]}
            continue
        near_static = any(np.hypot(*(centre - p)) < 22 for p in STATIC_NON_OBJECTS)
        if near_static or len(rs) < 3 or score < (0.3 if moving else 0.45):
            continue
        spec[str(pid)] = {"class": "person", "segments": [[pid, rs[0]["frame"], rs[-1]["frame"]]]}
    out.write_text(json.dumps({"tracks": spec}, indent=1) + "\n")
    print(f"{len(spec)} draft objects -> {out}")


def build(proposals: Path, corrections: Path, out: Path) -> None:
    """Apply ``corrections`` to ``proposals`` and write ``out`` (gt.txt)."""
    rows = apply_corrections(read_mot(proposals), json.loads(corrections.read_text()))
    write_mot(out, rows)
    ids = defaultdict(set)
    for r in rows:
        ids[r["cls"]].add(r["id"])
    print(f"{len(rows)} boxes, frames {len({r['frame'] for r in rows})}, ids per class "
          f"{ {c: len(s) for c, s in sorted(ids.items())} } -> {out}")


def main() -> None:
    """Command line: ``propose``, ``draft``, ``render``, ``build``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("propose")
    p.add_argument("--score", type=float, default=0.25)
    p.add_argument("--out", type=Path, default=HERE / "proposals.txt")
    r = sub.add_parser("render")
    r.add_argument("--source", type=Path, default=HERE / "gt.txt")
    r.add_argument("--bare", action="store_true", help="draw no boxes")
    r.add_argument("--frames", default="1:241:5", help="start:stop:step (1-based, stop exclusive) or a,b,c")
    r.add_argument("--grid", action="store_true", help="sheets: 2x2 at half size, or 3x2 zoomed crops with --crop")
    r.add_argument("--crop", default=None, help="x0,y0,x1,y1 region, shown at 2x with a pixel grid")
    r.add_argument("--out", type=Path, default=Path("/tmp/vtest_gt_render"))
    d = sub.add_parser("draft")
    d.add_argument("--proposals", type=Path, default=HERE / "proposals.txt")
    d.add_argument("--out", type=Path, default=HERE / "corrections.draft.json")
    b = sub.add_parser("build")
    b.add_argument("--proposals", type=Path, default=HERE / "proposals.txt")
    b.add_argument("--corrections", type=Path, default=HERE / "corrections.json")
    b.add_argument("--out", type=Path, default=HERE / "gt.txt")
    args = parser.parse_args()
    if args.cmd == "propose":
        propose(args.score, args.out)
    elif args.cmd == "render":
        spec = args.frames
        frames = list(range(*map(int, spec.split(":")))) if ":" in spec else [int(v) for v in spec.split(",")]
        crop = [int(v) for v in args.crop.split(",")] if args.crop else None
        render(None if args.bare else args.source, frames, args.out, args.grid, crop)
    elif args.cmd == "draft":
        draft(args.proposals, args.out)
    else:
        build(args.proposals, args.corrections, args.out)


if __name__ == "__main__":
    main()
