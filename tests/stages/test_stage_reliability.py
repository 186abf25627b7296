"""A stage run that fails, is stopped or meets a second run of itself: `stage=all` reruns what did not finish, a
stopped stage exits non-zero with the command that resumes it (and the resumed run equals an uninterrupted one), one
run at a time holds a stage's folder, and command-line mistakes end in one line."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import stages.fusion
from emotiw.artifacts import load_json
from emotiw.locks import FolderLock, LockHeld
from stages.completion import RECORD
from stages.runtime import StageStopped
from tests.datamodules.test_afew_features import write_fake_features
from tests.fer_stills import write_face_root
from tests.helpers import assert_exit, env_for_subprocess, run, train_py
from tests.stages.fusion_fakes import write_fake_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]
SIZES = {"Train": 70, "Val": 35, "Test": 35}
SMALL_SEARCH = [
    "combine.estimator.n_samples=200",
    "combine.estimator.decay=0.5",
    "combine.estimator.sigma_min=0.1",
]
DIM = 16
# A short IRNN run on fake per-frame features: 6 batches an epoch, last.ckpt after every epoch.
IRNN = [
    "stage=irnn",
    f"model.input_size={DIM}",
    "trainer.max_epochs=4",
    "data.batch_size=8",
    "trainer.enable_progress_bar=false",
    "seed=0",
]
# The face CNN on 90 generated stills: 3 batches an epoch. Its resume is exact (epoch-seeded shuffling, RNG states in
# the checkpoint); the other trained stages resume from the same last.ckpt with another shuffle order.
CNN = [
    "stage=cnn",
    "data.val_source=fer_holdout",
    "data.afew_root=null",
    "data.batch_size=32",
    "trainer.max_epochs=3",
    "++trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def _irnn_run(root: Path, name: str) -> Path:
    run_dir = root / "runs" / name
    write_fake_features(run_dir, n_per_class=6, dim=DIM, signal=0.5, seed=0)
    return run_dir


def _hook(name: str, target: str, **kw: object) -> str:
    fields = ", ".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in kw.items())
    return f"+callbacks.{name}={{_target_: tests.stages.stage_hooks.{target}, {fields}}}"


def _statuses(summary: dict) -> dict[str, str]:
    return {k.removesuffix("/status"): v for k, v in summary.items() if k.endswith("/status")}


# --- defect 2: a failed or killed rerun is not "current" -------------------------------------------------------------


def test_all_reruns_a_stage_whose_rerun_with_new_settings_failed_or_was_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fake_run(tmp_path / "runs" / "exp", sizes=SIZES)

    def all_args(epochs: int) -> list[str]:
        per_stage = (
            f"all.stage_overrides={{fusion: ['trainer.max_epochs={epochs}'], combine: ["
            + ", ".join(f"'{o}'" for o in SMALL_SEARCH)
            + "]}"
        )
        return ["stage=all", "experiment_name=exp", "all.stages=[fusion,combine]", per_stage]

    assert _statuses(run(all_args(2), tmp_path)) == {"fusion": "ran", "combine": "ran"}
    fusion_out = tmp_path / "runs" / "exp" / "fusion"
    assert len(load_json(fusion_out / "curves.json")) == 2

    # the rerun with 3 epochs dies after it started (its config written, its outputs partly replaced)
    real_run = stages.fusion.run

    def dies(cfg):
        (fusion_out / "curves.json").write_text("[]")
        raise KeyboardInterrupt  # a kill: no exception handler of the stage gets to clean up

    monkeypatch.setattr(stages.fusion, "run", dies)
    with pytest.raises(KeyboardInterrupt):
        run(all_args(3), tmp_path)
    assert not (fusion_out / RECORD).exists()

    # the next stage=all reruns it, and the stage after it, instead of feeding the old model downstream
    monkeypatch.setattr(stages.fusion, "run", real_run)
    assert _statuses(run(all_args(3), tmp_path)) == {"fusion": "ran", "combine": "ran"}
    assert len(load_json(fusion_out / "curves.json")) == 3
    assert _statuses(run(all_args(3), tmp_path)) == {"fusion": "current", "combine": "current"}

    # a stage run on its own (as a resume is) with the same settings counts: stage=all only reruns what follows it
    run(["stage=fusion", "experiment_name=exp", "trainer.max_epochs=3"], tmp_path)
    assert _statuses(run(all_args(3), tmp_path)) == {"fusion": "current", "combine": "ran"}


def test_completion_record_is_stale_after_an_upstream_rerun_or_changed_corrupt_data(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from stages.completion import begin, config_hash, finish, incomplete_reason

    data = tmp_path / "data" / "clips"
    data.mkdir(parents=True)
    (data / "a.avi").write_bytes(b"clip")
    (tmp_path / "cache").mkdir()

    def cfg(stage: str, lr: float = 0.1):
        return OmegaConf.create(
            {
                "task_name": stage,
                "paths": {
                    "run_dir": str(tmp_path / "runs" / "r"),
                    "runs_dir": str(tmp_path / "runs"),
                    "cache_dir": str(tmp_path / "cache"),
                    "output_dir": str(tmp_path / "runs" / "r" / stage),
                },
                "data": {"afew_root": str(data), "cache_dir": str(tmp_path / "cache")},
                "model": {"lr": lr},
                "ckpt_path": None,
            }
        )

    cnn, irnn = cfg("cnn"), cfg("irnn")
    for c in (cnn, irnn):
        finish(c, config_hash(c), 1.0)
    assert incomplete_reason(cnn) is None and incomplete_reason(irnn) is None
    assert incomplete_reason(cfg("irnn", lr=0.2)) == "its config changed"
    resumed = cfg("irnn")
    resumed.ckpt_path = "/somewhere/last.ckpt"  # resuming changes no result
    assert incomplete_reason(resumed) is None

    finish(cnn, config_hash(cnn), 2.0)  # the CNN reran: the IRNN read the old one
    assert incomplete_reason(irnn) == "its input changed: stage cnn"
    finish(irnn, config_hash(irnn), 1.0)
    (data / "a.avi").write_bytes(b"a damaged clip")
    assert incomplete_reason(irnn) == f"its input changed: data {data.resolve()}"
    finish(irnn, config_hash(irnn), 1.0)
    (tmp_path / "cache" / "entry.npz").write_bytes(b"x")  # caches are keyed and verified on their own
    assert incomplete_reason(irnn) is None
    begin(irnn.paths.output_dir)
    assert incomplete_reason(irnn) == "not finished (never run, failed or stopped)"


# --- defect 4: a stopped stage exits non-zero and says how to resume ---------------------------------------------------


def _resume_args(message: str) -> list[str]:
    command = re.search(r"`(python train\.py [^`]*)`", message)
    assert command, message
    args = shlex.split(command.group(1))[2:]
    return [a for a in args if not a.startswith(("paths.root_dir=", "logger="))]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_stage_stopped_by_kill_signal_names_the_resume_command_and_resume_is_identical(
    tmp_path_factory: pytest.TempPathFactory, signum: int
) -> None:
    roots = {name: tmp_path_factory.mktemp(name) for name in ("straight", "stopped")}
    for root in roots.values():
        write_face_root(root, per_class=10, tfd=20)
    run([*CNN, "experiment_name=cnn"], roots["straight"])

    stop = _hook("stop", "SignalAt", epoch=1, batch=1, signum=int(signum))
    with pytest.raises(StageStopped) as stopped_by:
        run([*CNN, "experiment_name=cnn", stop], roots["stopped"])
    err = stopped_by.value
    out = roots["stopped"] / "runs" / "cnn" / "cnn"
    last = out / "checkpoints" / "last.ckpt"
    assert err.signum == signum and err.exit_status == 128 + signum
    assert f"ckpt_path={last}`" in str(err)
    assert not (out / "metrics.json").exists() and not (out / RECORD).exists()  # stage=all would rerun it
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0  # the last whole epoch

    run(_resume_args(str(err)), roots["stopped"])
    a, b = (
        torch.load(
            root / "runs" / "cnn" / "cnn" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
        )
        for root in roots.values()
    )
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (2, 9)
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)
    assert (out / RECORD).is_file()


def test_stage_killed_under_all_names_its_own_command_then_the_all_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fake_run(tmp_path / "runs" / "exp", sizes=SIZES)

    def killed(cfg):  # SIGTERM outside a Lightning loop (no checkpoint yet): the stage stops at once
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the stage")

    monkeypatch.setattr(stages.fusion, "run", killed)
    args = ["stage=all", "experiment_name=exp", "all.stages=[fusion,combine]"]
    with pytest.raises(StageStopped) as stopped_by:
        run(args, tmp_path)
    err = stopped_by.value
    assert err.exit_status == 143
    commands = [shlex.split(c)[2:] for c in re.findall(r"`(python train\.py [^`]*)`", str(err))]
    assert str(err).startswith("stage fusion stopped by SIGTERM before it saved a checkpoint. Run it again: ")
    assert len(commands) == 2, str(err)
    assert commands[0][0] == "stage=fusion" and "experiment_name=exp" in commands[0]
    assert commands[1] == [f"paths.root_dir={tmp_path}", "logger=csv", *args]
    assert not (tmp_path / "runs" / "exp" / "fusion" / RECORD).exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the stage's handler is gone


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_train_py_killed_by_signal_exits_128_plus_signal_with_the_resume_command(
    tmp_path: Path, signum: int
) -> None:
    write_face_root(tmp_path, per_class=10, tfd=20)
    stop = _hook("stop", "SignalAt", epoch=1, batch=1, signum=int(signum))
    done = train_py([*CNN, "experiment_name=cnn", stop], tmp_path, one_thread=True)
    assert_exit(done, 128 + signum)
    out = tmp_path / "runs" / "cnn" / "cnn"
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith(f"train.py: stage cnn stopped by {signal.Signals(signum).name}; ")
    assert message.endswith(f" ckpt_path={out / 'checkpoints' / 'last.ckpt'}`")
    assert "Traceback" not in done.stderr
    assert not (out / "metrics.json").exists() and not (out / RECORD).exists()


# --- defect 5: one run at a time per run directory and stage -----------------------------------------------------------


def test_locked_stage_is_refused_before_writing_and_a_killed_holders_lock_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = _irnn_run(tmp_path, "locked")
    out = run_dir / "irnn"
    with FolderLock(out / "stage.lock", "a first run"):
        with pytest.raises(
            LockHeld, match=rf"stage irnn of .*locked is already running: pid {os.getpid()} on "
        ):
            run([*IRNN, "experiment_name=locked"], tmp_path)
        assert not (out / "resolved_config.yaml").exists()  # nothing of the first run's folder was touched
    assert not (out / "stage.lock").exists()  # released

    # a holder killed with SIGKILL cannot release: its lock file stays, and the next run takes it over
    holder = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from emotiw.locks import FolderLock; "
            "FolderLock(sys.argv[1], 'x').acquire(); os.kill(os.getpid(), signal.SIGKILL)",
            str(out / "stage.lock"),
        ],
        cwd=REPO,
    )
    assert holder.returncode == -signal.SIGKILL and (out / "stage.lock").is_file()
    run([*IRNN, "experiment_name=locked"], tmp_path)
    assert "taking over the lock of pid" in caplog.text and "ended without releasing it" in caplog.text
    assert (out / RECORD).is_file() and not (out / "stage.lock").exists()


@pytest.mark.slow
def test_second_run_of_a_running_stage_is_refused_naming_it_and_a_killed_runs_lock_is_taken_over(
    tmp_path: Path,
) -> None:
    run_dir = _irnn_run(tmp_path, "twice")
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            "logger=csv",
            *IRNN,
            "experiment_name=twice",
            _hook("hold", "HoldAt", epoch=1, ready=str(ready), go=str(go)),
        ],
        cwd=REPO,
        env=env_for_subprocess(tmp_path) | {"OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(ready, first)
        # the second run, with other settings, would mix its config and checkpoints into the first one's folder
        with pytest.raises(LockHeld, match=rf"already running: pid {first.pid} on "):
            run([*IRNN, "experiment_name=twice", "trainer.max_epochs=2"], tmp_path)
        go.write_text("")
        assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
    finally:
        first.kill()
    assert load_json(run_dir / "irnn" / "metrics.json")["best_epoch"] >= 1
    assert "max_epochs: 4" in (run_dir / "irnn" / "resolved_config.yaml").read_text()

    ready.unlink()
    go.unlink()
    killed = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            "logger=csv",
            *IRNN,
            "experiment_name=twice",
            _hook("hold", "HoldAt", epoch=1, ready=str(ready), go=str(go)),
        ],
        cwd=REPO,
        env=env_for_subprocess(tmp_path) | {"OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(ready, killed)
    finally:
        killed.kill()
    killed.wait(timeout=60)
    assert not (run_dir / "irnn" / RECORD).exists()  # the killed run left an incomplete stage
    run([*IRNN, "experiment_name=twice", "trainer.max_epochs=2"], tmp_path)
    assert (run_dir / "irnn" / RECORD).is_file()


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"exited with {proc.returncode} before {path}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_stage_locks_on_rank_zero_only_is_refused_without_a_hang_and_runs_after_a_kill(
    tmp_path: Path,
) -> None:
    write_fake_run(tmp_path / "runs" / "ddp", sizes={"Train": 70, "Val": 36, "Test": 35})
    lock = tmp_path / "runs" / "ddp" / "fusion" / "stage.lock"
    args = ["stage=fusion", "experiment_name=ddp", "trainer=ddp_sim", "trainer.max_epochs=2"]
    with FolderLock(lock, "the test"):
        refused = train_py(args, tmp_path, timeout=300, one_thread=True)
    assert_exit(refused, 3)
    assert f"already running: pid {os.getpid()} on " in refused.stderr
    # the lock of a killed holder is taken over; rank 1 takes no lock of its own (it would find rank zero's)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from emotiw.locks import FolderLock; "
            "FolderLock(sys.argv[1], 'x').acquire(); os.kill(os.getpid(), signal.SIGKILL)",
            str(lock),
        ],
        cwd=REPO,
    )
    done = train_py(args, tmp_path, timeout=600, one_thread=True)
    assert_exit(done)
    assert "MEMBER: 2/2" in done.stdout + done.stderr
    assert (lock.parent / RECORD).is_file() and not lock.exists()


# --- checkpoints never run code, retraining keeps a last.ckpt ------------------------------------------------------------


class _Payload:
    """Unpickling this touches a file: what a tampered checkpoint could do with any callable."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_in_a_stage_checkpoint_is_refused(tmp_path: Path) -> None:
    from lightning_modules.fusion import FusionModule
    from stages.fusion import load_kept_weights
    from stages.lightning_fit import checkpoint_epochs

    marker = tmp_path / "code_ran"
    ckpt = tmp_path / "epoch_003.ckpt"
    torch.save({"epoch": 3, "state_dict": {}, "hook": _Payload(marker)}, ckpt)
    torch.load(ckpt, map_location="cpu", weights_only=False)  # the payload is live: full unpickling runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(Exception, match="Weights only load failed"):
        checkpoint_epochs(ckpt)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_kept_weights(FusionModule, ckpt)
    assert not marker.exists()


def test_malicious_pickle_in_a_tuned_runs_sae_is_refused_by_activity_retrain(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    tuned = tmp_path / "runs" / "tuned" / "activity"
    tuned.mkdir(parents=True)
    torch.save(
        {"epoch": 0, "state_dict": {}, "hyper_parameters": {"hook": _Payload(marker)}}, tuned / "sae.ckpt"
    )
    (tuned / "codebook.npz").write_bytes(b"")
    with pytest.raises(Exception, match="Weights only load failed"):
        run(
            ["stage=activity", "experiment_name=final", "partition=retrain", "partition.from_run=tuned"],
            tmp_path,
        )
    assert not marker.exists()


def test_fusion_retrain_writes_last_ckpt_for_resume(tmp_path: Path) -> None:
    for name in ("tuned", "final"):
        write_fake_run(tmp_path / "runs" / name, sizes=SIZES)
    run(["stage=fusion", "experiment_name=tuned", "trainer.max_epochs=3"], tmp_path)
    best = load_json(tmp_path / "runs" / "tuned" / "fusion" / "chosen.json")["best_epoch"]
    run(["stage=fusion", "experiment_name=final", "partition=retrain", "partition.from_run=tuned"], tmp_path)
    last = tmp_path / "runs" / "final" / "fusion" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == best - 1


# --- command-line mistakes: one line -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "named"),
    [("trainer.max_epoch=3", "trainer.max_epoch"), ("stage=nope", "stage/nope")],
    ids=["bad_key", "bad_stage"],
)
def test_bad_override_ends_in_one_line_with_exit_status_2(tmp_path: Path, override: str, named: str) -> None:
    done = train_py([override], tmp_path, timeout=120, one_thread=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: ") and named in lines[0], done.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_setting_inside_a_stage_prints_one_line_naming_the_log_file(tmp_path: Path) -> None:
    _irnn_run(tmp_path, "bad")
    done = train_py([*IRNN, "experiment_name=bad", "model.lr=-0.5"], tmp_path, timeout=300, one_thread=True)
    assert done.returncode == 1
    log_file = tmp_path / "runs" / "bad" / "irnn" / "irnn.log"
    assert "Traceback" not in done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last
        == f"train.py: error: stage irnn: ValueError: model.lr == -0.5, must be >= 0. (traceback in {log_file})"
    )
    assert "Traceback" in log_file.read_text()


def _sleep_forever(_: int) -> None:
    time.sleep(60)


def test_a_forked_pool_terminated_inside_a_stage_ends_quietly(capfd) -> None:
    """Pool workers inherit the stage's stop handler; terminating the pool must not print a KeyboardInterrupt
    traceback from every worker, nor count as the stage being stopped."""
    import multiprocessing

    from stages.runtime import _StopSignals

    with _StopSignals() as stop:
        pool = multiprocessing.get_context("fork").Pool(2)
        pool.map_async(_sleep_forever, range(2))
        time.sleep(0.5)  # both workers are inside the task
        pool.terminate()
        pool.join()
    assert stop.signum is None
    err = capfd.readouterr().err
    assert "KeyboardInterrupt" not in err and "Traceback" not in err, err


def test_a_forked_child_waiting_in_c_is_ended_by_a_pools_sigterm() -> None:
    """A child that waits in C on a lock its parent held at the fork never returns to the interpreter, so a Python
    SIGTERM handler inherited from the stage would never run and a pool's terminate would wait for it forever."""
    import ctypes

    from stages.runtime import _StopSignals

    libc = ctypes.CDLL(None)
    mutex = ctypes.create_string_buffer(64)  # zeroed: an unlocked default pthread mutex
    assert libc.pthread_mutex_lock(mutex) == 0
    try:
        with _StopSignals():
            pid = os.fork()
            if pid == 0:  # the child: blocks in C for good
                libc.pthread_mutex_lock(mutex)
                os._exit(0)
            time.sleep(0.5)
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("SIGTERM did not end a forked child waiting in C")
    finally:
        libc.pthread_mutex_unlock(mutex)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
