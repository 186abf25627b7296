"""A tiny AFEW tree in the real layout, written with PyAV, for the face-pipeline tests (until emotiw.synth lands).

Faces are drawn at known 5-point landmarks so alignment can be checked; the landmark sidecars follow
docs/pipeline.md.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

LANDMARK_HEADER = (
    "frame,left_eye_x,left_eye_y,right_eye_x,right_eye_y,nose_x,nose_y,"
    "mouth_left_x,mouth_left_y,mouth_right_x,mouth_right_y"
)


def face_points(cx: float, cy: float, s: float) -> np.ndarray:
    """5 points (image-left eye first) of a face centred at (cx, cy) with inter-ocular distance 2*s."""
    return np.array(
        [
            [cx - s, cy - 0.6 * s],
            [cx + s, cy - 0.6 * s],
            [cx, cy + 0.3 * s],
            [cx - 0.8 * s, cy + 1.1 * s],
            [cx + 0.8 * s, cy + 1.1 * s],
        ],
        dtype=np.float64,
    )


def draw_face(img: np.ndarray, pts: np.ndarray, shade: int) -> None:
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = pts
    s = (rx - lx) / 2
    cv2.ellipse(img, (int(nx), int(ny - 0.1 * s)), (int(1.9 * s), int(2.4 * s)), 0, 0, 360, (shade,) * 3, -1)
    for x, y in ((lx, ly), (rx, ry)):
        cv2.circle(img, (int(round(x)), int(round(y))), max(1, int(0.25 * s)), (20, 20, 20), -1)
    cv2.circle(img, (int(round(nx)), int(round(ny))), max(1, int(0.15 * s)), (90, 90, 90), -1)
    cv2.line(img, (int(round(mlx)), int(round(mly))), (int(round(mrx)), int(round(mry))), (30, 30, 30), 2)


def write_clip(
    path: Path,
    n_frames: int,
    *,
    face_frames: set[int] | None = None,
    seed: int = 0,
    size: tuple[int, int] = (96, 80),
) -> dict[int, np.ndarray]:
    """Write an mpeg4 .avi at 25 fps; returns {frame: 5 points} for the frames that show a face."""
    rng = np.random.default_rng(seed)
    w, h = size
    face_frames = set(range(n_frames)) if face_frames is None else face_frames
    path.parent.mkdir(parents=True, exist_ok=True)
    points: dict[int, np.ndarray] = {}
    bg = rng.integers(60, 200)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for t in range(n_frames):
            img = np.full((h, w, 3), bg, np.uint8)
            if t in face_frames:
                pts = face_points(w / 2 + 3 * np.sin(t / 3), h / 2 + 2 * np.cos(t / 4), 0.16 * w)
                draw_face(img, pts, int(rng.integers(150, 240)))
                points[t] = pts
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return points


def write_landmarks(path: Path, points: dict[int, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [LANDMARK_HEADER]
    for t in sorted(points):
        rows.append(",".join([str(t), *(f"{v:.2f}" for v in points[t].ravel())]))
    path.write_text("\n".join(rows) + "\n")


def write_tiny_afew(root: Path) -> dict[str, dict]:
    """Train: 2 Happy + 1 Sad + 1 with no landmark file; Val: 1 Angry + 1 whose face never shows; Test: 2 flat
    clips with Test_labels.csv. Returns {clip_id: {"split", "label_name", "n_frames", "face_frames"}}."""
    spec = [
        ("100000001", "Train", "Happy", 12, None, True),
        ("100000002", "Train", "Happy", 7, {0, 1, 2, 5, 6}, True),
        ("100000003", "Train", "Sad", 1, None, True),
        ("100000004", "Train", "Sad", 5, None, False),
        ("200000001", "Val", "Angry", 9, None, True),
        ("200000002", "Val", "Angry", 6, set(), True),
        ("300000001", "Test", "Fear", 8, None, True),
        ("300000002", "Test", "Neutral", 10, {3, 4, 5, 6}, True),
    ]
    info: dict[str, dict] = {}
    for i, (cid, split, emo, n, faces, has_lm) in enumerate(spec):
        folder = root / split if split == "Test" else root / split / emo
        pts = write_clip(folder / f"{cid}.avi", n, face_frames=faces, seed=i)
        if has_lm:
            write_landmarks(root / "landmarks" / f"{cid}.csv", pts)
        info[cid] = {"split": split, "label_name": emo, "n_frames": n, "face_frames": sorted(pts)}
    (root / "Test_labels.csv").write_text("clip_id,emotion\n300000001,Fear\n300000002,Neutral\n")
    return info
