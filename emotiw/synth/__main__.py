"""``python -m emotiw.synth out=DIR preset=tiny seed=0 [difficulty=easy] [workers=2] [force=true] [key=value...]``.

Keys other than out, preset, seed, difficulty, workers and force override preset sizes (``fer_per_class=200``,
``afew_train=70``, ``afew_max_s=3``, ...).
"""

from __future__ import annotations

import sys
import time

from emotiw.synth import generate
from emotiw.synth.presets import PRESETS

_USAGE = (
    "usage: python -m emotiw.synth out=DIR [preset=tiny|demo|paper] [seed=0] [difficulty=easy|paper] "
    "[workers=N] [force=true] [fer_per_class=N afew_train=N ...]"
)


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(_USAGE)
        return 0
    opts: dict = {}
    for a in args:
        key, sep, val = a.partition("=")
        if not sep or not key:
            print(f"emotiw.synth: argument {a!r} is not key=value\n{_USAGE}", file=sys.stderr)
            return 2
        opts[key.strip()] = _value(val.strip())
    if "out" not in opts:
        print(f"emotiw.synth: out=DIR is required\n{_USAGE}", file=sys.stderr)
        return 2
    out = str(opts.pop("out"))
    preset = str(opts.pop("preset", "demo"))
    if preset not in PRESETS:
        print(
            f"emotiw.synth: preset={preset!r} is unknown; expected one of {', '.join(PRESETS)}",
            file=sys.stderr,
        )
        return 2
    kwargs = {k: opts.pop(k) for k in ("seed", "difficulty", "workers", "force") if k in opts}
    start = time.perf_counter()
    try:
        path = generate(out, preset=preset, counts=opts or None, **kwargs)
    except ValueError as err:
        print(f"emotiw.synth: {err}", file=sys.stderr)
        return 2
    print(
        f"emotiw.synth: {preset} (seed {kwargs.get('seed', 0)}) in {path} ({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
