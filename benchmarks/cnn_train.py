"""Lightning's cost on the paper CNN: one training epoch through the project's stage=cnn pieces against a plain loop.

- ``lightning``: ``trainer.fit`` for one epoch of the module, trainer, callbacks and loggers that ``stage=cnn``
  composes (conf/), fed by the stage's datamodule (``FerTfdDataModule``'s sampler, dataset and loader) over
  in-memory faces; validation off (the plain loop has none).
- ``plain`` (the baseline): a PyTorch loop over the same uint8 tensors: one permutation per epoch, slice a batch,
  the module's own ``preprocess`` (z-score, random crop, flip), forward, the module's loss, SGD with the same
  hyperparameters. Same model, same batch size, same augmentation work.

The figures are epoch seconds of ``lightning`` over ``plain`` (goal <= 1.10x), wall and CPU time of this process,
timed from the first training batch to the epoch's end (a callback) so the trainer's once-per-run setup is apart;
the whole ``fit`` call is printed beside them. Methods alternate over rounds and the median round counts. When the
load exceeds the cores, the wall ratio mostly measures the scheduler (each method gets a few percent of a core, in
bursts); the CPU ratio still measures the work, best with one thread (``OMP_NUM_THREADS=1``).

    python benchmarks/cnn_train.py [--faces 8192] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import describe, figure  # noqa: E402

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def make_faces(n: int, seed: int = 0):
    """Random uint8 faces and labels: the compute per step does not depend on the pixels."""
    from emotiw.io import FaceSet

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 48, 48), dtype=np.uint8)
    labels = rng.integers(0, 7, size=n).astype(np.int64)
    return FaceSet(images, labels, np.array([str(i) for i in range(n)]))


def compose_cnn_stage(root: Path, batch_size: int):
    from hydra import compose, initialize_config_dir

    overrides = [
        "stage=cnn",
        f"paths.root_dir={root}",
        f"data.batch_size={batch_size}",
        "trainer.max_epochs=1",
        "+trainer.limit_val_batches=0",
        "+trainer.num_sanity_val_steps=0",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


class EpochTimer:
    """Wall and CPU seconds from the first training batch's start to the epoch's end (a Lightning callback)."""

    def __init__(self) -> None:
        import lightning as L

        timer = self

        class _Callback(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx == 0:
                    timer.start = (time.perf_counter(), time.process_time())

            def on_train_epoch_end(self, trainer, pl_module):
                timer.seconds = (time.perf_counter() - timer.start[0], time.process_time() - timer.start[1])

        self.callback = _Callback()
        self.start = self.seconds = (float("nan"), float("nan"))


def lightning_epoch(cfg, faces, state: dict) -> tuple[float, float, float]:
    """(epoch wall seconds, epoch CPU seconds, whole fit wall seconds) of one epoch through the stage's trainer."""
    import hydra

    from datamodules.fer_tfd import FerTfdDataModule
    from emotiw.preprocess import MeanStdImage
    from stages.lightning_fit import build_trainer, instantiate_callbacks

    dm: FerTfdDataModule = hydra.utils.instantiate(cfg.data)
    dm.data = {"train": faces, "val": faces.subset(np.arange(1)), "test": faces.subset(np.arange(1))}
    dm.normaliser = MeanStdImage().fit(faces.images)
    model = hydra.utils.instantiate(cfg.model)
    model.load_state_dict(state)
    timer = EpochTimer()
    trainer = build_trainer(cfg, [*instantiate_callbacks(cfg.get("callbacks")), timer.callback])
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit = time.perf_counter() - start
    _close_wandb()
    return (*timer.seconds, fit)


def plain_epoch(cfg, faces, state: dict, seed: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one epoch of a plain PyTorch loop over the same tensors, model, loss and optimizer."""
    import hydra

    from emotiw.preprocess import MeanStdImage

    model = hydra.utils.instantiate(cfg.model)
    model.load_state_dict(state)
    stats = MeanStdImage().fit(faces.images)
    model.set_normaliser(torch.from_numpy(stats.mean_), torch.from_numpy(stats.std_))
    model.train()
    opt = model.configure_optimizers()["optimizer"]
    images, labels = torch.from_numpy(faces.images), torch.from_numpy(faces.labels)
    batch = int(cfg.data.batch_size)
    start, cpu = time.perf_counter(), time.process_time()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    for idx in order.split(batch):
        x = model.preprocess(images[idx], train=True)
        logits, _ = model(x)
        loss = model.loss(logits, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start, time.process_time() - cpu


def _close_wandb() -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--faces", type=int, default=8192, help="training faces per epoch (FER2013 Training: 28,709)"
    )
    ap.add_argument("--batch-size", type=int, default=128, help="the stage's data.batch_size")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    import lightning as L

    faces = make_faces(args.faces)
    with tempfile.TemporaryDirectory(prefix="bench_cnn_train_") as tmp:
        cfg = compose_cnn_stage(Path(tmp), args.batch_size)
        L.seed_everything(0, verbose=False)
        import hydra

        state = hydra.utils.instantiate(cfg.model).state_dict()
        print(
            f"machine: {describe()}; torch {torch.__version__}, lightning {L.__version__}; "
            f"{args.faces} faces, batch {args.batch_size}, {args.rounds} rounds"
        )
        plain_epoch(cfg, faces.subset(np.arange(min(512, args.faces))), state, 0)  # warm-up
        samples: dict[str, list[float]] = {
            k: [] for k in ("lightning", "lightning_cpu", "fit", "plain", "plain_cpu")
        }
        for r in range(args.rounds):
            order = ("plain", "lightning") if r % 2 == 0 else ("lightning", "plain")
            for name in order:
                if name == "plain":
                    wall, cpu = plain_epoch(cfg, faces, state, r)
                else:
                    wall, cpu, fit = lightning_epoch(cfg, faces, state)
                    samples["fit"].append(fit)
                samples[name].append(wall)
                samples[f"{name}_cpu"].append(cpu)
                print(
                    f"  round {r}: {name} {wall:.2f} s (CPU {cpu:.2f} s), load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    sec = {k: statistics.median(v) for k, v in samples.items()}
    ratio, cpu_ratio = sec["lightning"] / sec["plain"], sec["lightning_cpu"] / sec["plain_cpu"]
    print(
        f"plain loop (baseline): {sec['plain']:.2f} s/epoch (CPU {sec['plain_cpu']:.2f} s), "
        f"{args.faces / sec['plain']:.0f} faces/s"
    )
    print(
        f"Lightning (stage=cnn config): {sec['lightning']:.2f} s/epoch (CPU {sec['lightning_cpu']:.2f} s), "
        f"{args.faces / sec['lightning']:.0f} faces/s; whole fit() {sec['fit']:.2f} s "
        f"(once-per-run setup and teardown {sec['fit'] - sec['lightning']:.2f} s)"
    )
    print(f"load average at the end: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"lightning / plain epoch = {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (goal <= 1.10x)")
    figure(
        f"CNN epoch, Lightning stage=cnn config ({args.faces} faces, batch {args.batch_size})",
        sec["lightning"],
        "s/epoch",
        "plain PyTorch loop",
        sec["plain"],
        goal="<= 1.10x",
    )
    figure(
        "CNN epoch CPU time, Lightning",
        sec["lightning_cpu"],
        "CPU s/epoch",
        "plain PyTorch loop",
        sec["plain_cpu"],
        goal="<= 1.10x",
    )
    print(f"{ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
