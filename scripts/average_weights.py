"""Stochastic weight averaging: the epoch checkpoints of one ``stage=cnn`` run averaged into one weights file.

    python scripts/average_weights.py runs/fer2013_res_kd_swa/cnn/checkpoints/epoch_0*.ckpt \\
        --out runs/fer2013_res_kd_swa/cnn/swa.pt

The nets' parameters are averaged (``torch.optim.swa_utils.AveragedModel``); then the batch-norm statistics are
estimated again over the run's training faces under its training augmentation (``update_bn``), because the averaged
weights match the statistics of none of the checkpoints. The faces are the run's own: the datamodule settings stored in
the first checkpoint (relative paths read from the working directory, or ``--data-root``). The file keeps the
checkpoints' hparams and gets the test-time views of ``--views``; score it with ``benchmarks/fer2013.py --weights``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, update_bn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datamodules.fer_tfd import FerTfdDataModule  # noqa: E402
from lightning_modules.cnn import VIEWS, load_cnn, save_weights  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="the epoch checkpoints to average")
    ap.add_argument("--out", type=Path, required=True, help="the weights file to write (save_weights)")
    ap.add_argument("--views", choices=list(VIEWS), default="flip+five")
    ap.add_argument(
        "--data-root", default=None, help="the faces' root, if not the one stored in the checkpoint"
    )
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument(
        "--seed", type=int, default=0, help="seed of the augmentation draws of the statistics pass"
    )
    args = ap.parse_args(argv)

    modules = [load_cnn(checkpoint=path) for path in args.checkpoints]
    base = modules[0]
    for path, module in zip(args.checkpoints, modules, strict=True):
        if type(module.net) is not type(base.net) or module.hparams.arch != base.hparams.arch:
            raise ValueError(
                f"{path}: arch {module.hparams.arch!r}, but {args.checkpoints[0]} is {base.hparams.arch!r}"
            )
        if not torch.equal(module.norm_mean, base.norm_mean):
            raise ValueError(
                f"{path}: another normaliser than {args.checkpoints[0]} (a checkpoint of another run?)"
            )
    averaged = AveragedModel(base.net)
    for module in modules:
        averaged.update_parameters(module.net)
    base.net.load_state_dict(averaged.module.state_dict())

    blob = torch.load(args.checkpoints[0], map_location="cpu", weights_only=True)
    settings = dict(blob.get("datamodule_hyper_parameters") or {})
    if not settings:
        raise ValueError(f"{args.checkpoints[0]}: no datamodule settings stored; not a stage=cnn checkpoint")
    if args.data_root:
        settings["root"] = args.data_root
    dm = FerTfdDataModule(**settings)
    dm.setup("fit")
    faces = torch.from_numpy(dm.data["train"].images)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        batches = (
            base.preprocess(faces[i : i + args.batch_size], train=True)
            for i in range(0, len(faces), args.batch_size)
        )
        update_bn(batches, base.net)
    flip, crops = VIEWS[args.views]
    base.eval().use_views(flip=flip, crops=crops)
    out = save_weights(base, args.out)
    print(
        f"averaged {len(modules)} checkpoints; batch-norm statistics from {len(faces)} training faces -> {out}"
    )
    return out


if __name__ == "__main__":
    main()
