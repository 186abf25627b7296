"""Run one stage: hold its folder, save its resolved config, run it, report its metrics, record it complete.

- One run at a time: rank zero holds ``<output_dir>/stage.lock`` (:mod:`emotiw.locks`) for the whole stage, so a
  second run of the same stage and run directory stops at once naming the first (other ranks take no lock).
- Complete or not: the completion record is removed before anything is written and written again last
  (:mod:`stages.completion`), so a failed, stopped or killed run leaves a stage that ``stage=all`` reruns.
- Stopped: SIGINT and SIGTERM end the stage at a safe point (a Lightning loop finishes the batch in progress) with
  :class:`StageStopped`, whose message is the command that resumes it from ``last.ckpt``.
- Failed: the traceback goes to the log file (the console when there is none) and the error is raised again;
  ``train.py`` prints it as one line.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from callbacks.gather import is_rank_zero
from emotiw.artifacts import save_json
from emotiw.locks import FolderLock
from stages import completion

log = logging.getLogger(__name__)

Runner = Callable[[DictConfig], dict[str, Any]]
LOCK = "stage.lock"


class StageStopped(BaseException):
    """SIGINT or SIGTERM stopped a stage; the message says how to resume it. A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way up takes it for an error."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by the signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


def resolve_runner(dotted: str) -> Runner:
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        raise ValueError(f"runner={dotted!r} must be a dotted path like 'stages.lightning_fit.fit_and_test'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ValueError(f"runner={dotted!r}: cannot import module {module_name!r} ({err})") from err
    if not hasattr(module, attr):
        raise ValueError(f"runner={dotted!r}: module {module_name!r} has no function {attr!r}")
    return getattr(module, attr)


def run_stage(cfg: DictConfig, command: Sequence[str] | None = None) -> dict[str, Any]:
    """Run ``cfg.runner`` on ``cfg``; write ``resolved_config.yaml``, ``metrics.json`` and the completion record to the
    output dir. ``command``: the overrides that make this stage on the command line (default: the ones this process
    was started with), for the resume command a stop prints."""
    out = Path(cfg.paths.output_dir)
    runner = resolve_runner(cfg.runner)
    writer = is_rank_zero()
    with contextlib.ExitStack() as stack:
        if writer:
            stack.enter_context(FolderLock(out / LOCK, f"stage {cfg.task_name} of {cfg.paths.run_dir}"))
            completion.begin(out)
            OmegaConf.save(cfg, out / "resolved_config.yaml", resolve=True)
        out.mkdir(parents=True, exist_ok=True)
        config = completion.config_hash(cfg)
        stop = stack.enter_context(_StopSignals())
        start = time.time()
        try:
            metrics = runner(cfg) or {}
        except BaseException as err:
            if stop.signum is not None and not isinstance(err, StageStopped):
                message = _stopped_message(cfg, stop.signum, command, start)
                raise StageStopped(message, stop.signum) from err
            if isinstance(err, Exception):
                _log_failure(err, f"stage {cfg.task_name} failed; partial outputs are in {out}")
            raise
        finally:
            _close_wandb()
        metrics = {k: _to_python(v) for k, v in metrics.items()}
        metrics["seconds"] = round(time.time() - start, 2)
        if writer:
            save_json(out / "metrics.json", metrics)
            completion.finish(cfg, config, metrics["seconds"])
            shown = ", ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
            )
            print(f"[{cfg.task_name}] {shown}")
            print(f"[{cfg.task_name}] outputs in {out}")
    return metrics


def started_with() -> list[str]:
    """The overrides this process was started with (empty outside Hydra)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def shell_command(overrides: Sequence[str]) -> str:
    """``python train.py <overrides>``, each quoted for a POSIX shell."""
    return " ".join(["python train.py", *(shlex.quote(o) for o in overrides)])


def describe(err: BaseException) -> str:
    """``Type: message`` on one line; for Hydra's instantiation error, the error it wraps."""
    while type(err).__name__ == "InstantiationException" and err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


class _StopSignals:
    """While a stage runs, SIGINT and SIGTERM stop it and are remembered (``signum``). Within a Lightning loop, whose
    own SIGTERM handler calls this one after setting its flag, the loop stops after the batch in progress; elsewhere
    both interrupt at once, as Ctrl+C does. The handlers in place before are restored on exit (Lightning leaves
    SIGINT ignored after an interrupt). Forked children (pool workers) are not the stage: they start with the default
    handlers (``_default_stop_signals_in_children``)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> _StopSignals:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = self.signum or signum
        if signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) != self._handle:
            return  # Lightning's handler called this one: its loop raises at the end of the batch
        raise KeyboardInterrupt


def _default_stop_signals_in_children() -> None:
    """In a forked child, the stage's handlers give way to the defaults. A Python handler only runs when the child
    returns to the interpreter, so a worker waiting in C (a lock it inherited held) would outlive a pool's terminate
    and hang the stage joining it; and a pool's terminate is no reason to print a KeyboardInterrupt traceback."""
    for signum, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
        if isinstance(getattr(signal.getsignal(signum), "__self__", None), _StopSignals):
            signal.signal(signum, default)


os.register_at_fork(after_in_child=_default_stop_signals_in_children)


def _stopped_message(cfg: DictConfig, signum: int, command: Sequence[str] | None, start: float) -> str:
    name = signal.Signals(signum).name
    overrides = [
        o for o in (started_with() if command is None else command) if not o.startswith("ckpt_path=")
    ]
    folder = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    last = Path(folder or Path(cfg.paths.output_dir) / "checkpoints") / "last.ckpt"
    if last.is_file() and last.stat().st_mtime >= start:
        return (
            f"stage {cfg.task_name} stopped by {name}; its last whole epoch is in {last}. "
            f"Resume it: `{shell_command([*overrides, f'ckpt_path={last}'])}`"
        )
    return f"stage {cfg.task_name} stopped by {name} before it saved a checkpoint. Run it again: `{shell_command(overrides)}`"


def _log_failure(err: Exception, message: str) -> None:
    """Write the traceback to the log files (the console when there are none) once, and name them on ``err``."""
    if hasattr(err, "log_files"):  # an inner stage of stage=all logged it
        return
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if files:
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, sys.exc_info())
        for handler in files:
            handler.handle(record)
    else:
        log.exception(message)
    with contextlib.suppress(AttributeError, TypeError):
        err.log_files = [h.baseFilename for h in files]


def _to_python(v: Any) -> Any:
    if hasattr(v, "item"):
        try:
            return v.item()
        except (ValueError, RuntimeError):
            return v.tolist()
    return v


def _close_wandb() -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
