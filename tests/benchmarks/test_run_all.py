"""The benchmark suite: figures and tables collected from the scripts' output, the growth table's ratios, the
memory sampler of scaling.py, and (slow) the whole suite at its smallest setting."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import machine  # noqa: E402
import run_all  # noqa: E402
import scaling  # noqa: E402


def test_figures_and_tables_printed_by_a_script_are_collected(capsys):
    machine.figure("step", 12.0, "ms/step", "floor", 8.0, goal="<= 1.3x")
    machine.figure("rate", 5.0, "clips/s")
    machine.table("Growth", ["stage", "s/clip"], [["faces", "0.1"]])
    print("a line in between")
    figures, tables = run_all.parse_output(capsys.readouterr().out, run_all.BENCHMARKS[0])
    assert [f["name"] for f in figures] == ["step", "rate"]
    assert figures[0]["ratio"] == pytest.approx(1.5) and figures[0]["goal"] == "<= 1.3x"
    assert figures[1]["ratio"] is None and figures[1]["baseline"] is None
    assert tables == [{"title": "Growth", "lines": ["| stage | s/clip |", "|---|---|", "| faces | 0.1 |"]}]
    rows = run_all.figures_table([{"benchmark": "x", "setting": "short", "figures": figures}])
    assert "| x (short) | step | 12 ms/step | floor: 8 ms/step | 1.5x | <= 1.3x |" in rows[2]


def test_a_plain_number_on_the_last_line_is_the_figure_of_a_script_without_figure_lines():
    fer = next(b for b in run_all.BENCHMARKS if b.name == "fer2013")
    figures, _ = run_all.parse_output("machine: x\naccuracy: 0.5 (centre crop)\n0.5000\n", fer)
    assert len(figures) == 1 and figures[0]["value"] == 0.5
    assert figures[0]["ratio"] == pytest.approx(0.5 * 7)  # against chance, 1/7
    assert run_all.parse_output("machine: x\nno number here\n", fer) == ([], [])


def test_growth_table_ratios():
    def run(clips, wall, cpu, peak_gib, faces_s, encode_s):
        gib = 2**30
        return {
            "preset": f"scale{clips}",
            "clips": clips,
            "wall": wall,
            "cpu_seconds": cpu,
            "peak_bytes": peak_gib * gib,
            "stages": {
                "faces": {
                    "seconds": faces_s,
                    "cpu_seconds": faces_s / 2,
                    "peak_bytes": peak_gib * gib,
                    "parts": {},
                },
                "activity": {
                    "seconds": 2 * encode_s,
                    "cpu_seconds": encode_s,
                    "peak_bytes": gib,
                    "parts": {"encode": encode_s},
                },
            },
        }

    runs = [
        run(100, 100.0, 50.0, 1.0, 10.0, 5.0),
        run(400, 380.0, 200.0, 1.2, 48.0, 20.0),
        run(1600, 1700.0, 800.0, 1.5, 160.0, 96.0),
    ]
    header, rows = scaling.growth_table(runs)
    assert header[1:4] == ["s/clip at 100", "s/clip at 400", "s/clip at 1600"]
    assert header[-3:] == ["s/clip 1600/100", "CPU s/clip 1600/100", "peak 1600/400"]
    by_name = {r[0].strip(): r for r in rows}
    faces = by_name["faces"]
    # wall 0.1, 0.12, 0.1 s/clip; CPU half of it; peaks 1.0, 1.2, 1.5 GiB -> 1.5/1.2 against 400 clips
    assert faces[1:10] == ["0.100", "0.120", "0.100", "0.050", "0.060", "0.050", "1.00", "1.20", "1.50"]
    assert faces[-3:] == ["1.00x", "1.00x", "1.25x"]
    assert by_name["activity: encode"][-3] == "1.20x"  # 96/1600 over 5/100
    assert by_name["activity (SVM fit, excepted)"][-1] == "1.00x"
    whole = by_name["whole run (process start included)"]
    assert whole[-3:] == [f"{1700 / 1600:.2f}x", "1.00x", "1.25x"]
    # two sizes: the peak is compared with the smaller one
    assert scaling.growth_table(runs[:2])[0][-1] == "peak 400/100"


def test_a_size_past_the_budget_is_not_run_and_the_table_says_why(monkeypatch, capsys, tmp_path):
    calls = []

    def fake_run(size, root, interval, extra):
        calls.append(size)
        clips = int(size)
        stage = {"seconds": 0.6 * clips, "cpu_seconds": 0.3 * clips, "peak_bytes": 2**30, "parts": {}}
        return {
            "preset": f"scale{size}",
            "clips": clips,
            "wall": 0.6 * clips,  # 60 s at 100 clips: 400 clips estimated at 4 min, 1,600 at 16
            "cpu_seconds": 0.3 * clips,
            "peak_bytes": 2**30,
            "stages": {"faces": stage},
            "load": 1.0,
        }

    monkeypatch.setattr(scaling, "run_size", fake_run)
    scaling.main(["--sizes", "100", "400", "1600", "--work", str(tmp_path), "--budget-min", "10"])
    assert calls == ["100", "400"]  # 1,600 clips (16 min estimated from 400) do not fit in the 10 min
    _, tables = run_all.parse_output(capsys.readouterr().out, run_all.BENCHMARKS[0])
    note = tables[0]["lines"][-1]
    assert note.startswith("Not run: 1600 clips, estimated 16 min (linear from 400 clips") and "10" in note


def test_tree_stats_count_a_child_process():
    code = (
        "import time\n"
        "b = bytearray(300 * 2**20)\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print(1, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        own_held, _, own_cpu = scaling._process(os.getpid())
        assert child.stdout.readline().strip() == "1"  # the child holds 300 MiB and has run 0.3 s
        held, pss, cpu = scaling.tree_stats(os.getpid())
        assert 290 * 2**20 <= held - own_held <= 400 * 2**20, (held - own_held) / 2**20
        assert pss >= held and cpu - own_cpu >= 0.25
    finally:
        child.kill()
        child.wait()


@pytest.mark.slow
def test_the_suite_runs_every_benchmark_at_its_smallest_setting(tmp_path):
    out = tmp_path / "bench"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--setting", "smallest", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = json.loads((out / "results.json").read_text())
    expected = {b.name for b in run_all.BENCHMARKS if not b.optional or (BENCH / f"{b.name}.py").is_file()}
    assert {e["benchmark"] for e in store.values()} == expected
    markdown = (out / "results.md").read_text()
    for entry in store.values():
        assert entry["returncode"] == 0 and "error" not in entry, (entry["benchmark"], entry.get("error"))
        assert entry["figures"], entry["benchmark"]
        for f in entry["figures"]:
            assert math.isfinite(f["value"]) and f["load"] is not None
            if f["baseline_value"]:
                assert f["ratio"] == pytest.approx(f["value"] / f["baseline_value"])
            assert f["name"] in markdown
    assert "Growth with the number of clips" in markdown
