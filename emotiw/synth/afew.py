"""AFEW look-alike clips: a face that emotes, moves and comes and goes over a textured scene, with a voice.

Layout (docs/pipeline.md): ``Train/<Emotion>/<clip_id>.avi``, ``Val/<Emotion>/<clip_id>.avi``,
``Test/<clip_id>.avi`` (labels withheld) with ``Test_labels.csv``, and ``landmarks/<clip_id>.csv`` (5 points per
frame, rows only where the face is visible). Video: 25 fps, MPEG-4 part 2 in AVI, RGB frames of ``frame_size``
(160x128 by default); audio: mono 16-bit PCM at 16 kHz (absent from no clip, silent in some).

Each modality can fail on its own, as in films: a faint or hidden face, a silent or flat voice, no motion. The kind
of motion (of the person and the camera) only leans towards the emotion (``MOTION_PRIOR``: agitated anger, trembling
fear, slow sadness, ...).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emotiw.artifacts import atomic_path
from emotiw.labels import EMOTIONS, NUM_CLASSES, UNLABELLED, afew_folder
from emotiw.synth import _items
from emotiw.synth.faces import (
    ACTION_UNITS,
    Pose,
    expression_aus,
    light_gradient,
    render_face,
    sample_identity,
    smooth_texture,
)
from emotiw.synth.presets import Difficulty, Preset, get_difficulty
from emotiw.synth.voice import SAMPLE_RATE, speech, to_pcm16

FPS = 25
LANDMARK_HEADER = (
    "frame,left_eye_x,left_eye_y,right_eye_x,right_eye_y,nose_x,nose_y,"
    "mouth_left_x,mouth_left_y,mouth_right_x,mouth_right_y"
)
MOTIONS = ("still", "slow", "calm", "agitated", "bob", "tremble", "recoil", "turn")
# How each emotion leans over MOTIONS (canonical order); mixed with uniform by Difficulty.motion_bias. Each emotion has
# a kind of its own (agitated anger, trembling fear, bouncing laughter, slumped sadness, a startled recoil, turning
# away in disgust, a still neutral) and shares some mass with the emotions it is confused with; with only four kinds
# (version 1) even a perfect motion model could not beat chance by much (22.6 % on the demo Val/Test, chance 16.7 %).
MOTION_PRIOR = np.array(
    [
        # still slow  calm  agit  bob   trem  recoil turn
        [0.02, 0.03, 0.08, 0.55, 0.05, 0.15, 0.07, 0.05],  # angry
        [0.08, 0.12, 0.08, 0.05, 0.02, 0.02, 0.08, 0.55],  # disgust
        [0.02, 0.03, 0.05, 0.15, 0.02, 0.55, 0.15, 0.03],  # fear
        [0.05, 0.03, 0.15, 0.05, 0.60, 0.02, 0.05, 0.05],  # happy
        [0.15, 0.60, 0.08, 0.02, 0.02, 0.03, 0.02, 0.08],  # sad
        [0.03, 0.02, 0.08, 0.05, 0.05, 0.12, 0.60, 0.05],  # surprise
        [0.55, 0.15, 0.20, 0.02, 0.03, 0.02, 0.01, 0.02],  # neutral
    ]
)
N_SUBJECTS = 60  # actors recur across clips, as in films
# The recording gain of a clip's sound, uniform in this range (dB): films are mixed and recorded at every level, so the
# absolute loudness must not name the emotion (with a fixed gain the peak amplitude alone named it for 84 % of voiced
# clips); the loudest voice (anger, +5 dB of effort) peaks near -7 dBFS at 0 dB.
RECORDING_GAIN_DB = (-24.0, 0.0)


def write_avi(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: int = FPS,
    audio: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    *,
    bit_rate: int = 600_000,
) -> Path:
    """Encode frames (T,H,W,3 RGB or T,H,W grey uint8; H and W even) as MPEG-4 in AVI, with optional mono audio.

    ``audio``: 1-D int16 PCM or float in [-1, 1]; ``None`` writes a file without an audio stream. Written
    atomically, single-threaded, so identical inputs give identical bytes.
    """
    import av

    path = Path(path)
    frames = [np.asarray(f) for f in frames]
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"{path}: frame size {w}x{h} must be even for yuv420p")
    pcm = None
    if audio is not None:
        a = np.asarray(audio)
        pcm = a.astype(np.int16) if a.dtype == np.int16 else to_pcm16(a)
        pcm = pcm.reshape(-1)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="avi") as container:
            vs = container.add_stream("mpeg4", rate=fps)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.bit_rate = bit_rate
            vs.codec_context.thread_count = 1
            # zero motion search: a third faster on these small frames, same decoder compatibility
            vs.codec_context.options = {"flags": "+bitexact", "motion_est": "zero"}
            as_ = None
            if pcm is not None:
                as_ = container.add_stream("pcm_s16le", rate=sample_rate, layout="mono")
                as_.codec_context.options = {"flags": "+bitexact"}
            per_frame = sample_rate // fps
            for i, f in enumerate(frames):
                if f.shape[:2] != (h, w):
                    raise ValueError(f"{path}: frame {i} is {f.shape[1]}x{f.shape[0]}, expected {w}x{h}")
                fmt = "gray" if f.ndim == 2 else "rgb24"
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f, dtype=np.uint8), format=fmt)
                vf.pts = i
                container.mux(vs.encode(vf))
                if as_ is not None:
                    _mux_audio(container, as_, pcm, i * per_frame, (i + 1) * per_frame, sample_rate)
            container.mux(vs.encode(None))
            if as_ is not None:
                _mux_audio(container, as_, pcm, len(frames) * per_frame, len(pcm), sample_rate)
                container.mux(as_.encode(None))
    return path


def _mux_audio(container, stream, pcm: np.ndarray, a: int, b: int, sample_rate: int) -> None:
    import av

    chunk = pcm[a:b]
    if chunk.size == 0:
        return
    af = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
    af.sample_rate = sample_rate
    af.pts = a
    container.mux(stream.encode(af))


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides one clip (picklable, so clips can be made in worker processes)."""

    seed: int
    index: int
    clip_id: str
    split: str
    label: int
    difficulty: Difficulty
    frame_size: tuple[int, int]
    min_s: float
    max_s: float


def _plan(preset: Preset, seed: int, diff: Difficulty) -> list[ClipSpec]:
    counts = preset.afew_counts()
    total = sum(sum(c) for c in counts.values())
    rng = np.random.default_rng([int(seed), _items.AFEW_PLAN])
    ids = rng.choice(10**9, size=total, replace=False)
    specs = []
    i = 0
    for split in ("Train", "Val", "Test"):
        labels = np.repeat(np.arange(NUM_CLASSES), counts[split])
        for lab in rng.permutation(labels):
            specs.append(
                ClipSpec(
                    int(seed),
                    i,
                    f"{int(ids[i]):09d}",
                    split,
                    int(lab),
                    diff,
                    tuple(preset.frame_size),
                    preset.afew_min_s,
                    preset.afew_max_s,
                )
            )
            i += 1
    return specs


def clip_path(root: Path, spec: ClipSpec) -> Path:
    if spec.split == "Test":
        return root / "Test" / f"{spec.clip_id}.avi"
    return root / spec.split / afew_folder(spec.label) / f"{spec.clip_id}.avi"


def write_afew(
    root: str | os.PathLike,
    preset: Preset,
    *,
    seed: int = 0,
    difficulty: str | Difficulty = "paper",
    workers: int | None = 1,
) -> dict[str, Any]:
    """Write every clip, its landmark sidecar and ``Test_labels.csv``; return per-split, per-class counts."""
    root = Path(root)
    diff = get_difficulty(difficulty)
    specs = _plan(preset, seed, diff)
    for sub in ("Train", "Val"):
        for e in range(NUM_CLASSES):
            (root / sub / afew_folder(e)).mkdir(parents=True, exist_ok=True)
    (root / "Test").mkdir(parents=True, exist_ok=True)
    (root / "landmarks").mkdir(parents=True, exist_ok=True)
    stats = _items.map_items(_write_clip, [(str(root), s) for s in specs], workers, min_items=2)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["clip_id", "emotion"])
    for s in sorted((s for s in specs if s.split == "Test"), key=lambda s: s.clip_id):
        writer.writerow([s.clip_id, afew_folder(s.label)])
    with atomic_path(root / "Test_labels.csv") as tmp:
        tmp.write_text(buf.getvalue())
    counts: dict[str, Any] = {}
    for split in ("Train", "Val", "Test"):
        sel = [s for s in specs if s.split == split]
        counts[split] = {e: sum(1 for s in sel if s.label == i) for i, e in enumerate(EMOTIONS)}
    frames = [st["frames"] for st in stats]
    counts["frames"] = int(sum(frames))
    counts["frames_with_face"] = int(sum(st["visible"] for st in stats))
    counts["silent_clips"] = int(sum(st["silent"] for st in stats))
    return counts


def _write_clip(root: str, spec: ClipSpec) -> dict[str, int]:
    frames, landmarks, audio, info = render_clip(spec)
    write_avi(clip_path(Path(root), spec), frames, FPS, audio, SAMPLE_RATE)
    lines = [LANDMARK_HEADER]
    lines += [f"{t}," + ",".join(f"{v:.2f}" for v in pts.ravel()) for t, pts in landmarks]
    with atomic_path(Path(root) / "landmarks" / f"{spec.clip_id}.csv") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return {"frames": len(frames), "visible": len(landmarks), "silent": int(info["silent"])}


# ------------------------------------------------------------------------------------------------------ rendering


def _motion(rng: np.random.Generator, kind: str, n: int) -> dict[str, np.ndarray]:
    """Per-frame head offset (px), yaw/roll (deg), camera pan (px) and gesture flag for a kind of motion.

    Every kind moves the camera as well as the head, so the motion shows in most 16x16x10 blocks of the frame, not
    only around the face: a steady drift (slow), a vertical bounce (bob), a fast small tremor (tremble), one or two
    sudden jerks (recoil), a horizontal sweep back and forth (turn), random shake and a waving hand (agitated).
    """
    t = np.arange(n) / FPS
    u = rng.uniform
    # (head amplitude px, head frequency Hz, camera drift px over the clip, camera shake px per frame)
    amp, freq, pan, shake = {
        "still": lambda: (0.3, 0.1, 0.0, 0.0),
        "slow": lambda: (u(3, 6), u(0.08, 0.25), u(4, 12), 0.0),
        "calm": lambda: (u(1.5, 3.5), u(0.4, 0.9), u(0, 4), 0.0),
        "agitated": lambda: (u(3, 7), u(1.4, 2.8), u(0, 6), u(0.8, 2.0)),
        "bob": lambda: (u(1.0, 2.5), u(0.4, 0.9), 0.0, 0.0),
        "tremble": lambda: (u(0.5, 1.5), u(0.4, 0.9), 0.0, 0.0),
        "recoil": lambda: (u(0.5, 1.5), u(0.2, 0.5), 0.0, 0.0),
        "turn": lambda: (u(1.0, 2.5), u(0.2, 0.5), 0.0, 0.0),
    }[kind]()

    def wave(a: float, f: float) -> np.ndarray:
        p1, p2 = rng.uniform(0, 2 * math.pi, 2)
        return a * (0.7 * np.sin(2 * math.pi * f * t + p1) + 0.3 * np.sin(2 * math.pi * 2.3 * f * t + p2))

    dx, dy = wave(amp, freq), wave(0.6 * amp, freq * 1.1)
    yaw, roll = wave(amp * 2.0, freq * 0.9), wave(amp * 0.8, freq * 1.2)
    direction = rng.uniform(0, 2 * math.pi)
    pan_t = pan * (t / max(t[-1], 1e-6) - 0.5) if n > 1 else np.zeros(n)
    camera = np.stack([pan_t * math.cos(direction), pan_t * math.sin(direction)], 1)
    if shake > 0:
        camera += rng.normal(0, shake, size=(n, 2))
    head = np.stack([dx, dy], 1)
    if kind == "bob":  # laughing: the body bounces up and down, the camera follows
        a, f, ph = u(2.5, 4.5), u(1.6, 2.6), u(0, 2 * math.pi)
        camera[:, 1] += a * np.sin(2 * math.pi * f * t + ph)
        head[:, 1] += 0.5 * a * np.sin(2 * math.pi * f * t + ph)
    elif kind == "tremble":  # a fast small tremor of body and camera
        a, f = u(1.0, 2.0), u(6.0, 9.0)
        ph = u(0, 2 * math.pi, 2)
        tremor = a * np.stack(
            [np.sin(2 * math.pi * f * t + ph[0]), np.sin(2 * math.pi * 1.3 * f * t + ph[1])], 1
        )
        camera += tremor
        head += 0.5 * tremor
    elif kind == "recoil":  # one or two sudden jerks, then stillness
        for _ in range(int(rng.integers(1, 3))):
            at, span, size, angle = u(0.1, 0.9) * n, u(2.0, 5.0), u(8.0, 14.0), u(0, 2 * math.pi)
            step = np.clip((np.arange(n) - at) / span, 0, 1)
            step = (
                (0.5 - 0.5 * np.cos(math.pi * step))[:, None]
                * size
                * np.array([math.cos(angle), math.sin(angle)])
            )
            camera += step
            head += 0.5 * step
        camera -= camera.mean(0)
    elif kind == "turn":  # sweeping sideways and back at a steady speed
        speed, width, ph = u(0.7, 1.2), u(10.0, 20.0), u(0, 1)
        phase = (np.arange(n) * speed / (2 * width) + ph) % 1.0
        camera[:, 0] += width * (2 * np.abs(2 * phase - 1) - 1)
        yaw = yaw + u(6.0, 12.0) * rng.choice([-1, 1])
    return {
        "head": head,
        "yaw": yaw,
        "roll": roll,
        "pan": camera,
        "gesture": np.full(n, kind == "agitated"),
    }


def _timeline(rng: np.random.Generator, n: int) -> np.ndarray:
    """Expression strength per frame: neutral, onset, apex, maybe an offset."""
    onset = rng.uniform(0.0, 0.4) * n
    rise = max(1.0, rng.uniform(0.2, 1.0) * FPS)
    t = np.arange(n, dtype=np.float64)
    e = np.clip((t - onset) / rise, 0, 1)
    e = 0.5 - 0.5 * np.cos(math.pi * e)  # smooth rise
    if rng.random() < 0.4:
        off = onset + rise + rng.uniform(0.3, 1.0) * max(1.0, n - onset - rise)
        fall = max(1.0, rng.uniform(0.3, 1.0) * FPS)
        keep = rng.uniform(0.2, 0.7)
        d = np.clip((t - off) / fall, 0, 1)
        e = e * (1 - (1 - keep) * (0.5 - 0.5 * np.cos(math.pi * d)))
    return e


def _background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Textured colour scene (RGB float32) with a few flat objects; larger than the frame so the camera can pan."""
    h, w = hw
    base = rng.uniform(50, 190, 3).astype(np.float32)
    cells = int(rng.integers(3, 7))
    tex = smooth_texture(rng, (h, w), cells=cells, lo=-50, hi=50)[..., None]
    tex = tex + smooth_texture(rng, (h, w), cells=cells, lo=-15, hi=15, channels=3)
    img = np.ascontiguousarray(np.clip(base + tex, 0, 255))
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
        cv2.rectangle(img, (x0, y0), (x1, y1), rng.uniform(20, 235, 3).tolist(), -1)
    fine = rng.normal(0, 6, size=(h, w, 1)).astype(np.float32)
    return np.clip(img + fine, 0, 255).astype(np.uint8)


def _face_layer(
    idn,
    aus: dict[int, float],
    scale: float,
    yaw: float,
    shirt: float,
    colour: np.ndarray,
    light: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, int]:
    """Upright face layer, (H, W, 4) float32: RGB premultiplied by coverage (lit and tinted), then coverage; the
    canonical point (24, 27) at (W / 2, top). Also its 5 landmarks in layer pixels."""
    # Room for hair above and the shoulders below, as far as a 4:5 frame can show them.
    half_w = int(math.ceil(3.0 * idn.head_rx * scale))
    top = int(math.ceil(1.3 * idn.head_ry * scale))
    hw = (top + int(math.ceil(3.0 * idn.head_ry * scale)), 2 * half_w)
    pose = Pose.make(center=(half_w, top), scale=scale, yaw=yaw)
    face = render_face(idn, aus, pose, hw, ss=2, body=True, shirt=shirt)
    layer = np.zeros(hw + (4,), np.float32)
    x0, y0, x1, y1 = face.roi
    if x1 > x0:  # grey is already premultiplied: the canvas is black where nothing is drawn
        lit = face.grey * light_gradient(hw, *light)[y0:y1, x0:x1]
        layer[y0:y1, x0:x1, :3] = lit[..., None] * colour
        layer[y0:y1, x0:x1, 3] = face.alpha
    return layer, face.landmarks, top


def render_clip(spec: ClipSpec) -> tuple[list[np.ndarray], list[tuple[int, np.ndarray]], np.ndarray, dict]:
    """Frames (RGB uint8), visible-face landmarks [(frame, (5,2))], int16 audio and facts about the clip."""
    rng = _items.item_rng(spec.seed, _items.AFEW_CLIP, spec.index)
    diff = spec.difficulty
    w, h = spec.frame_size
    seconds = spec.min_s + (spec.max_s - spec.min_s) * rng.beta(1.3, 3.7)
    n = max(1, int(round(seconds * FPS)))
    subject = int(rng.integers(N_SUBJECTS))
    idn = sample_identity(
        _items.item_rng(spec.seed, _items.AFEW_SUBJECT, subject), resting_scale=diff.resting
    )

    # Face: what it shows and how strongly (a faint face carries no emotion).
    shown, intensity = _items.shown_expression(rng, spec.label, diff)
    if rng.random() < diff.face_uninformative:  # a face that gives nothing away, as in many film scenes
        intensity = float(rng.uniform(0.0, 0.08))
    apex = expression_aus(shown, intensity, rng=rng, jitter=diff.au_jitter)
    strength = _timeline(rng, n)

    # Voice: its own chance to be silent or flat, independent of the face.
    n_audio = n * (SAMPLE_RATE // FPS)
    silent = bool(rng.random() < diff.silent)
    voice_emotion = shown if rng.random() >= diff.audio_uninformative else EMOTIONS.index("neutral")
    base_pitch = rng.uniform(95, 140) if rng.random() < 0.5 else rng.uniform(170, 240)
    wave, talk = speech(
        rng,
        voice_emotion,
        n_audio,
        base_pitch=base_pitch,
        silent=silent,
        noise_db=rng.uniform(-45, -30),
        gain_db=rng.uniform(*RECORDING_GAIN_DB),
    )
    talk_per_frame = talk[: n * (SAMPLE_RATE // FPS)].reshape(n, -1).mean(1) if n_audio else np.zeros(n)

    # Motion: its kind leans towards the emotion; sometimes there is none.
    if rng.random() < diff.motion_uninformative:
        kind = "still"
    else:
        p = diff.motion_bias * MOTION_PRIOR[spec.label] + (1 - diff.motion_bias) / len(MOTIONS)
        kind = MOTIONS[int(rng.choice(len(MOTIONS), p=p / p.sum()))]
    mot = _motion(rng, kind, n)

    # Camera and scene.
    pad = 24
    scene = _background(rng, (h + 2 * pad, w + 2 * pad))
    tint = np.array([1.0, rng.uniform(0.82, 0.95), rng.uniform(0.7, 0.88)], np.float32)
    base_scale = rng.uniform(1.1, 1.8)  # px per canonical unit: inter-ocular distance about 21-35 px
    cx = w / 2 + rng.uniform(-0.18, 0.18) * w
    cy = h / 2 + rng.uniform(-0.12, 0.05) * h
    zoom = rng.uniform(-0.1, 0.1)  # slow dolly in or out over the clip
    base_yaw, base_roll = rng.uniform(-12, 12), rng.uniform(-5, 5)
    light = (
        rng.uniform(0.05, 0.45),
        rng.uniform(0, 2 * math.pi),
    )  # gradient strength and direction on the face
    colour = (tint * rng.uniform(0.75, 1.15)).astype(np.float32)  # skin tint times overall brightness
    blur = rng.uniform(0.0, 0.8)
    sigma = rng.uniform(1.0, 2.5)
    noise_bank = []  # sensor noise as saturating add/subtract images (cheap per frame)
    for _ in range(4):
        z = np.repeat(np.rint(rng.normal(0, sigma, size=(h, w, 1))), 3, axis=2)
        noise_bank.append((np.clip(z, 0, 255).astype(np.uint8), np.clip(-z, 0, 255).astype(np.uint8)))
    shirt = rng.uniform(30, 200)

    # Where the face is lost: a hand or object in front, the person out of frame, or a cut away.
    lost = np.zeros(n, dtype=bool)
    loss_kind = None
    if n > 10 and rng.random() < diff.face_loss:
        loss_kind = str(rng.choice(["occlude", "away", "cut"]))
        length = int(rng.integers(5, max(6, min(n // 2, 40))))
        start = int(rng.integers(0, n - length))
        lost[start : start + length] = True
        if loss_kind == "away":
            side = rng.choice([-1, 1])
            ramp = np.zeros(n)
            ramp[start : start + length] = np.sin(np.linspace(0, math.pi, length)) ** 0.5
            mot["head"][:, 0] += side * ramp * (0.5 * w + 30 * base_scale)
    occluder_colour = rng.uniform(40, 220, 3)
    gesture_phase = rng.uniform(0, 2 * math.pi)

    # The face layer (head, hair, neck, shoulders) is drawn upright at the clip's largest scale and cached by its
    # quantised expression, speech and yaw; each frame only warps it (roll, scale, position) into place.
    layer_scale = base_scale * (1 + abs(zoom))
    layers: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, int]] = {}
    resting = idn.resting
    skin_rgb = (idn.skin * tint).tolist()
    frames: list[np.ndarray] = []
    landmarks: list[tuple[int, np.ndarray]] = []
    for t in range(n):
        px, py = mot["pan"][t]
        ox, oy = int(round(pad + px)), int(round(pad + py))
        ox, oy = min(max(ox, 0), 2 * pad), min(max(oy, 0), 2 * pad)
        frame = scene[oy : oy + h, ox : ox + w].copy()
        pts = None
        if not (loss_kind == "cut" and lost[t]):
            yaw = float(np.clip(base_yaw + diff.pose_motion * mot["yaw"][t], -30, 30))
            key = (int(round(strength[t] * 6)), int(talk_per_frame[t] > 0.4), int(round(yaw / 4)))
            if key not in layers:
                aus = {au: min(1.0, apex[au] * key[0] / 6 + resting.get(au, 0.0)) for au in ACTION_UNITS}
                aus[26] = min(1.0, aus[26] + 0.2 * key[1])  # the jaw opens while speaking
                layers[key] = _face_layer(idn, aus, layer_scale, 4.0 * key[2], shirt, colour, light)
            layer, layer_pts, anchor_y = layers[key]
            scale = base_scale * (1 + zoom * t / max(1, n - 1))
            # Similarity from the layer to the frame: rotate by the roll, scale, and put the layer centre in place.
            centre = (cx + mot["head"][t, 0] - (ox - pad), cy + mot["head"][t, 1] - (oy - pad))
            m = Pose.make(
                center=centre, scale=scale / layer_scale, roll=base_roll + diff.pose_motion * mot["roll"][t]
            ).matrix
            m = m @ np.array(
                [[1.0, 0.0, 24.0 - layer.shape[1] / 2], [0.0, 1.0, 27.0 - anchor_y], [0.0, 0.0, 1.0]]
            )
            # Warp and blend only where the layer lands in the frame.
            lh, lw = layer.shape[:2]
            corners = np.array([[0, 0], [lw, 0], [0, lh], [lw, lh]], np.float64) @ m[:, :2].T + m[:, 2]
            x0, y0 = (max(0, int(v)) for v in corners.min(0))
            x1, y1 = (
                min(w, int(math.ceil(corners[:, 0].max())) + 1),
                min(h, int(math.ceil(corners[:, 1].max())) + 1),
            )
            if x1 > x0 and y1 > y0:
                m_roi = m.copy()
                m_roi[:, 2] -= (x0, y0)
                warped = cv2.warpAffine(
                    layer, m_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
                )
                under = frame[y0:y1, x0:x1].astype(np.float32)
                under *= 1.0 - warped[..., 3:]
                under += warped[..., :3]
                frame[y0:y1, x0:x1] = cv2.convertScaleAbs(under)  # rounds and saturates to uint8
            pts = layer_pts @ m[:, :2].T + m[:, 2]
            if mot["gesture"][t]:  # a hand waving in front of the body
                gx = centre[0] + 0.9 * scale * 24 * math.sin(2 * math.pi * 2.0 * t / FPS + gesture_phase)
                gy = (
                    centre[1] + scale * 40 + 5 * scale * math.cos(2 * math.pi * 3.0 * t / FPS + gesture_phase)
                )
                cv2.ellipse(
                    frame, (int(gx), int(gy)), (int(5 * scale), int(7 * scale)), 0, 0, 360, skin_rgb, -1
                )
            if loss_kind == "occlude" and lost[t]:
                mid = pts.mean(0)
                size = int(scale * rng.uniform(14, 20))
                cv2.ellipse(
                    frame,
                    (int(mid[0] + rng.normal(0, 2)), int(mid[1] + rng.normal(0, 2))),
                    (size, int(size * 1.3)),
                    float(rng.uniform(0, 180)),
                    0,
                    360,
                    occluder_colour.tolist(),
                    -1,
                )
        if blur > 0.05:
            frame = cv2.GaussianBlur(frame, (0, 0), blur)
        up, down = noise_bank[t % len(noise_bank)]
        frames.append(cv2.subtract(cv2.add(frame, up), down))
        inside = pts is not None and bool(np.all((pts >= 1) & (pts <= [w - 2, h - 2])))
        if inside and not (lost[t] and loss_kind == "occlude"):
            jitter = rng.normal(0, 0.6, size=pts.shape)
            landmarks.append((t, np.clip(pts + jitter, 0, [w - 1, h - 1])))
    info = {
        "silent": silent,
        "motion": kind,
        "shown": shown,
        "intensity": intensity,
        "loss": loss_kind,
        "label": spec.label if spec.split != "Test" else UNLABELLED,
    }
    return frames, landmarks, to_pcm16(wave), info
