"""A parametric grey-level face renderer: identity, FACS action units, pose, lighting, blur and noise.

The face is built from parts (head, hair, brows, eyes with lids, nose, mouth with lips, cheeks, beard, glasses) in
a canonical frame whose coordinates are those of the FER2013 48x48 crop (0-based pixels), then mapped into the output
image by a 2x3 similarity matrix plus a yaw that shifts each part by its depth. Every part is a polygon drawn with
OpenCV on a supersampled uint8 canvas and area-averaged down, which anti-aliases edges and keeps the output identical
for identical inputs.

Expressions are action-unit intensities in [0, 1] (Ekman & Friesen's prototypes, ``EMOTION_AUS``); emotions that
real data confuses share action units here too (fear/surprise: 1+2+5+26; anger/disgust: 4; sad/neutral at low
intensity). The renderer returns the 5 landmark points of what it drew, in the order of the paper's detector:
left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner (image-left first).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from emotiw.labels import EMOTIONS

# FER2013 mean shape (paper-spec §1), MATLAB 1-based values minus 1: the canonical frame of every face drawn here.
FER_MEAN_SHAPE = (
    np.array(
        [[14.99, 17.41], [34.20, 17.17], [24.56, 28.36], [16.80, 38.15], [32.73, 38.01]], dtype=np.float64
    )
    - 1.0
)

# Action units the renderer can move.
ACTION_UNITS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 16, 20, 23, 26)

# Prototype action units per emotion (weights at full intensity).
EMOTION_AUS: dict[str, dict[int, float]] = {
    "angry": {4: 1.0, 5: 0.5, 7: 1.0, 23: 1.0},
    "disgust": {4: 0.5, 9: 1.0, 10: 0.8, 15: 0.6, 16: 0.6},
    "fear": {1: 1.0, 2: 0.8, 4: 0.6, 5: 1.0, 20: 1.0, 26: 0.6},
    "happy": {6: 1.0, 12: 1.0, 26: 0.15},
    "sad": {1: 1.0, 4: 0.6, 15: 1.0},
    "surprise": {1: 1.0, 2: 1.0, 5: 1.0, 26: 1.0},
    "neutral": {},
}
assert set(EMOTION_AUS) == set(EMOTIONS)

_CANON_CX = 24.0  # vertical symmetry axis of the canonical face
_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Identity:
    """What stays the same for one subject: proportions, tones and accessories (canonical 48x48 units)."""

    head_cy: float = 26.5
    head_rx: float = 18.0
    head_ry: float = 24.0
    jaw: float = 0.5  # 0 round chin, 1 pointed chin
    skin: float = 160.0
    eye_dx: float = 9.6  # half the inter-ocular distance
    eye_y: float = 16.3
    eye_rx: float = 3.1
    eye_ry: float = 1.5
    iris: float = 45.0
    brow_gap: float = 3.6
    brow_thick: float = 1.3
    brow_arch: float = 0.8
    brow_tone: float = 60.0
    nose_y: float = 27.4
    nose_w: float = 3.2
    mouth_y: float = 37.1
    mouth_hw: float = 7.9
    lip_thick: float = 1.2
    lip_tone: float = 0.75  # lips relative to skin
    hair: int = 1  # 0 none, 1 short, 2 long
    hair_tone: float = 50.0
    hairline: float = 0.55  # fraction of head_ry above the head centre where the hair starts
    glasses: bool = False
    beard: bool = False
    resting: Mapping[int, float] = field(default_factory=dict)  # idiosyncratic resting action units


def sample_identity(
    rng: np.random.Generator, *, resting_scale: float = 0.0, accessories: float = 1.0
) -> Identity:
    """Draw a subject. ``resting_scale`` > 0 gives faces that look a little sad/angry/happy at rest."""
    u = rng.uniform
    skin = u(95, 205)
    dark_hair = rng.random() < 0.75
    hair_tone = u(20, 80) if dark_hair else u(150, 230)
    resting: dict[int, float] = {}
    if resting_scale > 0:
        for au in rng.choice(ACTION_UNITS, size=2, replace=False):
            resting[int(au)] = float(u(0.0, resting_scale))
    return Identity(
        head_cy=u(25.5, 27.5),
        head_rx=u(16.5, 20.0),
        head_ry=u(21.5, 25.5),
        jaw=u(0.0, 1.0),
        skin=skin,
        eye_dx=u(8.8, 10.4),
        eye_y=u(15.4, 17.2),
        eye_rx=u(2.6, 3.5),
        eye_ry=u(1.2, 1.8),
        iris=u(20, 70),
        brow_gap=u(3.0, 4.4),
        brow_thick=u(0.9, 1.8),
        brow_arch=u(0.3, 1.3),
        brow_tone=min(hair_tone, skin * u(0.3, 0.6)) if dark_hair else skin * u(0.45, 0.7),
        nose_y=u(26.2, 28.6),
        nose_w=u(2.6, 3.9),
        mouth_y=u(36.0, 38.4),
        mouth_hw=u(6.8, 8.8),
        lip_thick=u(0.9, 1.6),
        lip_tone=u(0.6, 0.85),
        hair=int(rng.choice(3, p=[0.15, 0.55, 0.30])),
        hair_tone=hair_tone,
        hairline=u(0.45, 0.7),
        glasses=bool(rng.random() < 0.15 * accessories),
        beard=bool(rng.random() < 0.1 * accessories),
        resting=resting,
    )


def expression_aus(
    emotion: int | str,
    intensity: float,
    *,
    rng: np.random.Generator | None = None,
    jitter: float = 0.0,
    resting: Mapping[int, float] | None = None,
) -> dict[int, float]:
    """Action-unit intensities of ``emotion`` at ``intensity`` (0 = neutral face, 1 = full prototype).

    ``jitter`` scales each unit by an independent factor in [1 - jitter, 1 + jitter] (people differ in how they
    express); ``resting`` adds the subject's idiosyncratic resting units.
    """
    name = EMOTIONS[emotion] if isinstance(emotion, (int, np.integer)) else str(emotion).lower()
    aus = {au: 0.0 for au in ACTION_UNITS}
    for au, w in EMOTION_AUS[name].items():
        scale = 1.0 if rng is None or jitter <= 0 else rng.uniform(1 - jitter, 1 + jitter)
        aus[au] = w * intensity * scale
    for au, v in (resting or {}).items():
        aus[au] = aus[au] + v
    return {au: float(np.clip(v, 0.0, 1.0)) for au, v in aus.items()}


@dataclass(frozen=True)
class Pose:
    """Canonical -> output mapping: a 2x3 similarity ``matrix`` (roll, scale, translation) and a ``yaw`` in degrees."""

    matrix: np.ndarray
    yaw: float = 0.0

    @staticmethod
    def make(*, center: tuple[float, float], scale: float, roll: float = 0.0, yaw: float = 0.0) -> Pose:
        """Put the canonical face centre (24, 27) at ``center`` (output pixels), ``scale`` output px per unit."""
        a = math.radians(roll)
        c, s = scale * math.cos(a), scale * math.sin(a)
        cx, cy = _CANON_CX, 27.0
        m = np.array([[c, -s, center[0] - (c * cx - s * cy)], [s, c, center[1] - (s * cx + c * cy)]])
        return Pose(m, yaw)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping ``src`` to ``dst``."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    # Solve [a -b; b a] minimising ||A s0 - d0||: closed form.
    denom = (s0**2).sum()
    a = (s0[:, 0] * d0[:, 0] + s0[:, 1] * d0[:, 1]).sum() / denom
    b = (s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum() / denom
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (md - rot @ ms)[:, None]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine ``outer`` after ``inner``."""
    o = np.vstack([outer, [0, 0, 1]])
    i = np.vstack([inner, [0, 0, 1]])
    return (o @ i)[:2]


@dataclass(frozen=True)
class FaceRender:
    """A rendered face layer: grey levels and coverage (alpha) over ``roi`` of the frame, and its 5 points."""

    grey: np.ndarray  # (y1-y0, x1-x0) float32, 0..255, meaningful where alpha > 0
    alpha: np.ndarray  # same shape, float32, 0..1
    landmarks: np.ndarray  # (5, 2) float64, output pixel coordinates (of the whole frame)
    roi: tuple[int, int, int, int]  # x0, y0, x1, y1 in the frame (empty when the face is out of frame)

    def full(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Grey and alpha over the whole (H, W) frame."""
        grey = np.zeros(hw, np.float32)
        alpha = np.zeros(hw, np.float32)
        x0, y0, x1, y1 = self.roi
        grey[y0:y1, x0:x1] = self.grey
        alpha[y0:y1, x0:x1] = self.alpha
        return grey, alpha


# --------------------------------------------------------------------------------------------------------- geometry


@functools.cache
def _circle(a0: float, a1: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(a0, a1, n)
    return np.cos(t), np.sin(t)


@functools.cache
def _bezier_basis(n: int) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return np.hstack([(1 - t) ** 2, 2 * (1 - t) * t, t**2])


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, a0: float = 0.0, a1: float = 2 * math.pi, n: int = 28
):
    c, s = _circle(a0, a1, n)
    out = np.empty((n, 2))
    out[:, 0] = cx + rx * c
    out[:, 1] = cy + ry * s
    return out


def _bezier(p0, p1, p2, n: int = 12) -> np.ndarray:
    """Quadratic curve through p0 and p2 whose middle point is p1 (the control point is solved for)."""
    ctrl = (2 * p1[0] - (p0[0] + p2[0]) / 2, 2 * p1[1] - (p0[1] + p2[1]) / 2)
    return _bezier_basis(n) @ np.array([[p0[0], p0[1]], ctrl, [p2[0], p2[1]]], dtype=np.float64)


def _head_outline(idn: Identity, jaw_drop: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x = np.cos(t)
    y = np.sin(t)
    lower = y > 0
    ry = np.where(lower, idn.head_ry * (1 + 0.07 * jaw_drop), idn.head_ry)
    # A pointed chin narrows the lower half towards the bottom.
    narrow = np.where(lower, 1 - 0.22 * idn.jaw * y**2, 1.0)
    return np.stack([_CANON_CX + idn.head_rx * x * narrow, idn.head_cy + ry * y], axis=1)


class _Canvas:
    """Supersampled uint8 canvas for one region of interest; vertices given in canonical units with a depth.

    Parts are recorded, then projected in one batch and drawn in order (far fewer numpy calls per face).
    """

    def __init__(self, pose: Pose, roi: tuple[int, int, int, int], ss: int) -> None:
        x0, y0, x1, y1 = roi
        self.roi = roi
        self.ss = ss
        m = pose.matrix.astype(np.float64).copy()
        m[:, 2] -= (x0, y0)
        self.m = m * ss
        self.m[:, 2] += (ss - 1) / 2.0  # pixel centres: output pixel i covers supersampled [i*ss, (i+1)*ss)
        self.sin_yaw = math.sin(math.radians(pose.yaw))
        self.cos_yaw = math.cos(math.radians(pose.yaw))
        self.px_per_unit = float(np.hypot(*pose.matrix[:, 0])) * ss
        self.parts: list[
            tuple[np.ndarray, float, float, float, bool]
        ] = []  # pts, depth, tone, width(0=fill), cover

    def fill(self, pts, tone: float, depth: float = 0.0, cover: bool = False) -> None:
        self.parts.append((np.asarray(pts, np.float64), depth, tone, 0.0, cover))

    def line(self, pts, tone: float, width: float, depth: float = 0.0) -> None:
        self.parts.append((np.asarray(pts, np.float64), depth, tone, width, False))

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        x0, y0, x1, y1 = self.roi
        ss = self.ss
        img = np.zeros(((y1 - y0) * ss, (x1 - x0) * ss), np.uint8)
        mask = np.zeros_like(img)
        if self.parts:
            pts = np.concatenate([p[0] for p in self.parts])
            depth = np.repeat([p[1] for p in self.parts], [len(p[0]) for p in self.parts])
            x = _CANON_CX + (pts[:, 0] - _CANON_CX) * self.cos_yaw + depth * self.sin_yaw
            proj = np.empty_like(pts)
            proj[:, 0] = self.m[0, 0] * x + self.m[0, 1] * pts[:, 1] + self.m[0, 2]
            proj[:, 1] = self.m[1, 0] * x + self.m[1, 1] * pts[:, 1] + self.m[1, 2]
            fixed = np.round(proj * _ONE).astype(np.int32)
            start = 0
            for p, _, tone, width, cover in self.parts:
                poly = [fixed[start : start + len(p)]]
                start += len(p)
                t = int(min(255.0, max(0.0, tone)))
                if width == 0.0:
                    cv2.fillPoly(img, poly, t, cv2.LINE_8, _SHIFT)
                    if cover:
                        cv2.fillPoly(mask, poly, 255, cv2.LINE_8, _SHIFT)
                else:
                    thick = max(1, int(round(width * self.px_per_unit)))
                    cv2.polylines(img, poly, False, t, thick, cv2.LINE_8, _SHIFT)
        size = (x1 - x0, y1 - y0)
        grey = cv2.resize(img, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        alpha = cv2.resize(mask, size, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1 / 255)
        return grey, alpha


# Depth (canonical units towards the camera) of each part: what a yaw shifts sideways.
_D_EYE, _D_BROW, _D_NOSE, _D_NOSE_BASE, _D_MOUTH, _D_CHEEK = 6.0, 6.5, 12.0, 9.0, 7.5, 5.0


def face_landmarks(idn: Identity, aus: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """Canonical 5 points of ``idn`` with expression ``aus`` and the depth of each point."""
    a = _au(aus)
    ml, mr, _ = _mouth_corners(idn, a)
    pts = np.array(
        [
            [_CANON_CX - idn.eye_dx, idn.eye_y],
            [_CANON_CX + idn.eye_dx, idn.eye_y],
            [_CANON_CX, idn.nose_y - 0.5 * a(9)],
            ml,
            mr,
        ]
    )
    depth = np.array([_D_EYE, _D_EYE, _D_NOSE, _D_MOUTH - 1.5, _D_MOUTH - 1.5])
    return pts, depth


def _au(aus: Mapping[int, float]):
    return lambda k: float(aus.get(k, 0.0))


def _mouth_corners(idn: Identity, a) -> tuple[np.ndarray, np.ndarray, float]:
    out = 1.8 * a(12) + 2.6 * a(20) - 1.8 * a(23) - 0.3 * a(15) - 0.6 * a(26)
    up = 3.2 * a(12) - 2.8 * a(15) - 0.3 * a(20) - 0.6 * a(16) + 0.5 * a(10)
    hw = idn.mouth_hw + out
    y = idn.mouth_y - up
    return np.array([_CANON_CX - hw, y]), np.array([_CANON_CX + hw, y]), hw


def render_face(
    idn: Identity,
    aus: Mapping[int, float],
    pose: Pose,
    out_hw: tuple[int, int],
    *,
    ss: int = 4,
    body: bool = False,
    shirt: float = 90.0,
) -> FaceRender:
    """Draw ``idn`` with expression ``aus`` under ``pose`` into an (H, W) frame; return grey, alpha, landmarks."""
    h, w = out_hw
    a = _au(aus)
    outline = _head_outline(idn, a(26))

    # Region of interest: the head (and hair, neck, body) bounding box in output pixels, clipped to the frame.
    probe = np.vstack(
        [
            outline * [1.0, 1.0],
            [[_CANON_CX - 1.4 * idn.head_rx, idn.head_cy + 2.2 * idn.head_ry]],
            [[_CANON_CX + 1.4 * idn.head_rx, idn.head_cy - 1.2 * idn.head_ry]],
        ]
    )
    if body:
        probe = np.vstack(
            [
                probe,
                [
                    [_CANON_CX - 3.2 * idn.head_rx, idn.head_cy + 5 * idn.head_ry],
                    [_CANON_CX + 3.2 * idn.head_rx, idn.head_cy + 5 * idn.head_ry],
                ],
            ]
        )
    box = _project_plain(pose, probe)
    x0 = int(max(0, math.floor(box[:, 0].min()) - 2))
    y0 = int(max(0, math.floor(box[:, 1].min()) - 2))
    x1 = int(min(w, math.ceil(box[:, 0].max()) + 2))
    y1 = int(min(h, math.ceil(box[:, 1].max()) + 2))
    lm_c, lm_d = face_landmarks(idn, aus)
    landmarks = _project_plain(pose, lm_c, lm_d)
    if x1 <= x0 or y1 <= y0:
        empty = np.zeros((0, 0), np.float32)
        return FaceRender(empty, empty, landmarks, (0, 0, 0, 0))
    cv = _Canvas(pose, (x0, y0, x1, y1), ss)
    _draw(cv, idn, a, outline, body=body, shirt=shirt)
    grey, alpha = cv.render()
    return FaceRender(grey, alpha, landmarks, (x0, y0, x1, y1))


def _project_plain(pose: Pose, pts: np.ndarray, depth: float | np.ndarray = 0.0) -> np.ndarray:
    sy, cy = math.sin(math.radians(pose.yaw)), math.cos(math.radians(pose.yaw))
    x = _CANON_CX + (pts[:, 0] - _CANON_CX) * cy + np.asarray(depth) * sy
    return np.stack([x, pts[:, 1]], 1) @ pose.matrix[:, :2].T + pose.matrix[:, 2]


def _draw(cv: _Canvas, idn: Identity, a, outline: np.ndarray, *, body: bool, shirt: float) -> None:
    cx = _CANON_CX
    skin = idn.skin
    dark = skin * 0.62  # creases and shadows

    if body:
        shoulders = _ellipse(cx, idn.head_cy + 2.6 * idn.head_ry, 2.9 * idn.head_rx, 1.4 * idn.head_ry, n=32)
        cv.fill(shoulders, shirt, depth=-2.0, cover=True)
    if idn.hair == 2:  # long hair falls behind the head
        back = _ellipse(cx, idn.head_cy + 0.25 * idn.head_ry, 1.22 * idn.head_rx, 1.15 * idn.head_ry)
        cv.fill(back, idn.hair_tone, depth=-4.0, cover=True)
    neck = np.array(
        [
            [cx - 0.5 * idn.head_rx, idn.head_cy + 0.5 * idn.head_ry],
            [cx + 0.5 * idn.head_rx, idn.head_cy + 0.5 * idn.head_ry],
            [cx + 0.55 * idn.head_rx, idn.head_cy + 1.9 * idn.head_ry],
            [cx - 0.55 * idn.head_rx, idn.head_cy + 1.9 * idn.head_ry],
        ]
    )
    cv.fill(neck, skin * 0.8, depth=-3.0, cover=True)
    cv.fill(outline, skin, cover=True)

    if idn.beard:
        low = outline[(outline[:, 1] > idn.mouth_y - 1.0)]
        low = low[np.argsort(-low[:, 0])]
        top = _bezier(
            (cx - idn.mouth_hw - 2.5, idn.mouth_y - 1.0),
            (cx, idn.nose_y + 2.5),
            (cx + idn.mouth_hw + 2.5, idn.mouth_y - 1.0),
        )
        cv.fill(np.vstack([top, low]), skin * 0.78, depth=_D_MOUTH - 3)

    # Cheeks: raised and lit by AU6 (and a little by a broad smile).
    lift = a(6) + 0.3 * a(12)
    if lift > 0.02:
        for s in (-1, 1):
            ch = _ellipse(cx + s * (idn.eye_dx + 1.0), idn.eye_y + 6.5 - 1.2 * lift, 3.6, 2.4)
            cv.fill(ch, skin * (1 + 0.05 * lift) + 4 * lift, depth=_D_CHEEK)

    # Hair on top: a cap from the hairline up to beyond the outline.
    if idn.hair:
        hl = idn.head_cy - idn.hairline * idn.head_ry
        t = np.linspace(math.pi, 2 * math.pi, 24)
        cap_top = np.stack(
            [cx + 1.08 * idn.head_rx * np.cos(t), idn.head_cy + 1.08 * idn.head_ry * np.sin(t)], 1
        )
        cap_top = cap_top[cap_top[:, 1] <= hl + 2.5]
        fringe = _bezier((cap_top[-1, 0], hl + 2.5), (cx, hl), (cap_top[0, 0], hl + 2.5))
        cv.fill(np.vstack([cap_top, fringe]), idn.hair_tone, depth=1.0, cover=True)

    _draw_brows(cv, idn, a)
    _draw_eyes(cv, idn, a)
    _draw_nose(cv, idn, a, dark)
    _draw_mouth(cv, idn, a, dark)

    # Creases: nasolabial folds (smile, upper-lip raise), crow's feet (AU6).
    fold = 0.9 * a(12) + 0.8 * a(10) + 0.5 * a(9)
    if fold > 0.05:
        ml, mr, _ = _mouth_corners(idn, a)
        for s, corner in ((-1, ml), (1, mr)):
            p0 = (cx + s * (idn.nose_w + 0.8), idn.nose_y - 0.5)
            p2 = (corner[0] + s * 1.4, corner[1] + 1.0)
            mid = ((p0[0] + p2[0]) / 2 + s * 1.0, (p0[1] + p2[1]) / 2)
            cv.line(_bezier(p0, mid, p2, 8), skin - (skin - dark) * min(1.0, fold), 0.55, depth=_D_CHEEK + 1)
    if a(6) > 0.1:
        for s in (-1, 1):
            ex = cx + s * (idn.eye_dx + idn.eye_rx + 1.0)
            for k in (-1, 0, 1):
                cv.line(
                    [(ex, idn.eye_y + 0.8 * k), (ex + s * 1.6, idn.eye_y + 1.4 * k)],
                    skin - (skin - dark) * a(6),
                    0.3,
                    depth=_D_EYE - 2,
                )
    if idn.glasses:
        frame = min(40.0, skin * 0.3)
        for s in (-1, 1):
            cv.line(
                _ellipse(cx + s * idn.eye_dx, idn.eye_y + 0.3, idn.eye_rx + 2.2, idn.eye_ry + 2.4, n=24),
                frame,
                0.5,
                depth=_D_EYE + 1.5,
            )
        cv.line(
            [
                (cx - idn.eye_dx + idn.eye_rx + 2.2, idn.eye_y),
                (cx + idn.eye_dx - idn.eye_rx - 2.2, idn.eye_y),
            ],
            frame,
            0.5,
            depth=_D_NOSE - 2,
        )


def _draw_brows(cv: _Canvas, idn: Identity, a) -> None:
    cx = _CANON_CX
    by = idn.eye_y - idn.brow_gap
    lower = 2.2 * a(4)
    for s in (-1, 1):
        inner = np.array(
            [
                cx + s * (idn.eye_dx - idn.eye_rx - 0.6 - 1.3 * a(4)),
                by + 0.2 + lower + 0.5 * a(4) - 3.0 * a(1),
            ]
        )
        mid = np.array([cx + s * idn.eye_dx, by - idn.brow_arch + lower - 1.0 * a(1) - 1.8 * a(2)])
        outer = np.array([cx + s * (idn.eye_dx + idn.eye_rx + 1.4), by + 0.5 + 0.6 * lower - 3.0 * a(2)])
        cv.line(_bezier(inner, mid, outer, 10), idn.brow_tone, idn.brow_thick, depth=_D_BROW)
    if a(4) > 0.1:  # vertical furrows between the brows
        tone = idn.skin - (idn.skin - idn.skin * 0.6) * a(4)
        for s in (-1, 1):
            x = cx + s * 0.9
            cv.line([(x, by - 0.5 + lower), (x + s * 0.3, by + 2.5 + lower)], tone, 0.5, depth=_D_BROW)


def _draw_eyes(cv: _Canvas, idn: Identity, a) -> None:
    cx = _CANON_CX
    upper = idn.eye_ry * max(0.15, 1 + 1.0 * a(5) - 0.55 * a(7) - 0.4 * a(6))
    lower = idn.eye_ry * max(0.12, 0.8 + 0.25 * a(5) - 0.45 * a(6) - 0.4 * a(7))
    sclera = min(240.0, idn.skin + 55)
    for s in (-1, 1):
        ex, ey = cx + s * idn.eye_dx, idn.eye_y
        left, right = (ex - idn.eye_rx, ey), (ex + idn.eye_rx, ey)
        top = _bezier(left, (ex, ey - upper), right, 12)
        bot = _bezier(right, (ex, ey + lower), left, 12)
        cv.fill(np.vstack([top, bot]), sclera, depth=_D_EYE)
        r = 0.62 * idn.eye_ry + 0.35
        iris = _ellipse(ex, ey + 0.1 * (lower - upper), r, min(r, 0.5 * (upper + lower) + 0.15), n=20)
        cv.fill(iris, idn.iris, depth=_D_EYE)
        cv.fill(_ellipse(ex, ey, 0.4 * r, 0.4 * min(r, upper + 0.1), n=12), idn.iris * 0.4, depth=_D_EYE)
        cv.line(top, min(idn.iris, idn.skin * 0.35), 0.45, depth=_D_EYE)  # upper lid and lashes
        cv.line(bot, idn.skin * 0.78, 0.25, depth=_D_EYE)


def _draw_nose(cv: _Canvas, idn: Identity, a, dark: float) -> None:
    cx = _CANON_CX
    ny = idn.nose_y - 0.5 * a(9)
    nw = idn.nose_w * (1 + 0.25 * a(9))
    shade = idn.skin * 0.82
    for s in (-1, 1):
        cv.line(
            _bezier(
                (cx + s * 1.1, idn.eye_y + 1.5),
                (cx + s * 1.3, (idn.eye_y + ny) / 2),
                (cx + s * 0.75 * nw, ny - 1.0),
                8,
            ),
            shade,
            0.35,
            depth=_D_NOSE - 2,
        )
        cv.fill(_ellipse(cx + s * 0.5 * nw, ny + 0.5, 0.85, 0.45, n=12), idn.skin * 0.42, depth=_D_NOSE_BASE)
    cv.line(
        _bezier((cx - 0.9 * nw, ny - 0.2), (cx, ny + 1.2), (cx + 0.9 * nw, ny - 0.2), 10),
        shade,
        0.3,
        depth=_D_NOSE_BASE,
    )
    if a(9) > 0.1:  # wrinkles on the bridge
        tone = idn.skin - (idn.skin - dark) * a(9)
        for k in range(3):
            y = idn.eye_y + 1.5 + 1.0 * k
            cv.line([(cx - 1.8, y), (cx + 1.8, y - 0.2)], tone, 0.45, depth=_D_NOSE - 3)


def _draw_mouth(cv: _Canvas, idn: Identity, a, dark: float) -> None:
    cx = _CANON_CX
    ml, mr, hw = _mouth_corners(idn, a)
    line_y = idn.mouth_y + 0.3 * a(12) - 0.4 * a(15)  # mid-line centre stays while the corners move
    open_up = 1.4 * a(10) + 0.4 * a(26) + 0.3 * a(12)
    open_dn = 4.5 * a(26) + 1.6 * a(16) + 1.2 * a(12) + 0.8 * a(20)
    thin = max(0.3, 1 - 0.6 * a(23) - 0.35 * a(20))
    tu = idn.lip_thick * thin
    tl = idn.lip_thick * 1.3 * thin
    up_outer = _bezier(ml, (cx, line_y - open_up - 2 * tu), mr, 14)
    up_inner = _bezier(ml, (cx, line_y - open_up), mr, 14)
    lo_inner = _bezier(ml, (cx, line_y + open_dn), mr, 14)
    lo_outer = _bezier(ml, (cx, line_y + open_dn + 2 * tl), mr, 14)
    lip = idn.skin * idn.lip_tone
    cv.fill(np.vstack([up_outer, lo_outer[::-1]]), lip, depth=_D_MOUTH)
    if open_up + open_dn > 0.35:
        cv.fill(np.vstack([up_inner, lo_inner[::-1]]), 28.0, depth=_D_MOUTH - 1)
        if a(12) + a(10) + a(26) > 0.3:  # upper teeth show in an open smile or snarl
            teeth_lo = _bezier(ml, (cx, line_y - open_up + min(1.4, 0.5 * (open_up + open_dn))), mr, 14)
            cv.fill(np.vstack([up_inner, teeth_lo[::-1]]), min(230.0, idn.skin + 40), depth=_D_MOUTH - 1)
    cv.line(up_inner, min(dark, lip * 0.6), 0.35, depth=_D_MOUTH)
    if a(26) > 0.3:  # chin shadow under a dropped jaw
        cv.line(
            _bezier(
                (cx - 3, line_y + open_dn + 2 * tl + 2.5),
                (cx, line_y + open_dn + 2 * tl + 3.2),
                (cx + 3, line_y + open_dn + 2 * tl + 2.5),
                8,
            ),
            idn.skin * 0.8,
            0.4,
            depth=_D_MOUTH - 2,
        )


# ------------------------------------------------------------------------------------------------- image effects


def smooth_texture(
    rng: np.random.Generator,
    hw: tuple[int, int],
    *,
    cells: int = 4,
    lo: float = 0.0,
    hi: float = 255.0,
    channels: int = 1,
) -> np.ndarray:
    """Low-frequency random texture (bicubic upsampling of a coarse grid), float32 in [lo, hi]."""
    h, w = hw
    grid = rng.uniform(lo, hi, size=(cells, cells, channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    out = np.clip(out, lo, hi)
    return out if channels > 1 else out.reshape(h, w)


@functools.lru_cache(maxsize=8)
def _grid(hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float32)
    return yy, xx


def light_gradient(hw: tuple[int, int], strength: float, angle: float) -> np.ndarray:
    """Multiplicative lighting field 1 +/- strength across the frame along ``angle`` (radians)."""
    yy, xx = _grid(hw)
    h, w = hw
    d = ((xx - w / 2) * math.cos(angle) + (yy - h / 2) * math.sin(angle)) / (0.5 * max(h, w))
    return (1.0 + strength * d).astype(np.float32)


def finish(img: np.ndarray, rng: np.random.Generator, *, blur: float, noise: float) -> np.ndarray:
    """Gaussian blur (sigma px), additive sensor noise (sigma grey levels), clip and round to uint8."""
    if blur > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    if noise > 0:
        img = img + rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class StillStyle:
    """How loosely a still is aligned and how degraded it is."""

    shift: float = 1.0  # px jitter of the crop
    roll: float = 4.0  # degrees
    yaw: float = 8.0  # degrees
    scale: float = 0.05  # relative
    blur: float = 0.6  # max sigma px
    noise: tuple[float, float] = (1.0, 5.0)
    light: float = 0.35  # max gradient strength


def render_still(
    idn: Identity,
    aus: Mapping[int, float],
    rng: np.random.Generator,
    *,
    size: int = 48,
    target: np.ndarray = FER_MEAN_SHAPE,
    style: StillStyle = StillStyle(),
    ss: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """A loosely aligned grey still: the face's 5 points land near ``target`` (``size`` x ``size`` frame).

    Returns (uint8 image, (5, 2) landmarks in the image).
    """
    yaw = rng.uniform(-style.yaw, style.yaw)
    pts, depth = face_landmarks(idn, aus)
    # Align the yawed canonical points onto the target, then jitter the crop as a loose detector would.
    sy, cy = math.sin(math.radians(yaw)), math.cos(math.radians(yaw))
    yawed = np.stack([_CANON_CX + (pts[:, 0] - _CANON_CX) * cy + depth * sy, pts[:, 1]], 1)
    align = fit_similarity(yawed, target)
    c = target.mean(0)
    jit = Pose.make(
        center=(c[0] + rng.normal(0, style.shift), c[1] + rng.normal(0, style.shift)),
        scale=1.0 + rng.uniform(-style.scale, style.scale),
        roll=rng.uniform(-style.roll, style.roll),
    )
    # jit maps (24, 27) -> jittered centre; re-centre it on the target mean so that it only perturbs.
    recentre = np.array([[1.0, 0.0, _CANON_CX - c[0]], [0.0, 1.0, 27.0 - c[1]]])
    m = compose(jit.matrix, compose(recentre, align))
    face = render_face(idn, aus, Pose(m, yaw), (size, size), ss=ss)
    grey, alpha = face.full((size, size))
    bg = smooth_texture(rng, (size, size), cells=3, lo=20, hi=235)
    img = bg * (1 - alpha) + grey * alpha
    img = img * light_gradient((size, size), rng.uniform(0, style.light), rng.uniform(0, 2 * math.pi))
    out = finish(img, rng, blur=rng.uniform(0, style.blur), noise=rng.uniform(*style.noise))
    return out, face.landmarks
