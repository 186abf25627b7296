"""Training speed of the face CNN: images per second of full training steps (augmentation, forward, loss, backward,
SGD step) on faces already on the device.

    python benchmarks/cnn_throughput.py --device cuda --model cnn_deep --precision bf16   # the GPU check
    python benchmarks/cnn_throughput.py --model cnn_res --threads 1                      # this CPU

The model is ``model=<model>`` of the project's config (with the augmentation of the fer2013 experiments), so the step
is the one ``stage=cnn`` runs. Prints the machine, the load and the median of ``--rounds`` timed rounds; the last line
is images per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from machine import cpu_name
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"


def build(model: str, device: str):
    from hydra import compose, initialize_config_dir

    from lightning_modules.cnn import CNNModule

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={model}"])
    hparams = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if not k.startswith("_")}
    hparams.update(rotate_deg=10.0, scale_jitter=0.1, crop_per_batch=False, channels_last=True)
    module = CNNModule(**hparams).to(device)
    module.set_normaliser(
        torch.full((48, 48), 128.0, device=device), torch.full((48, 48), 64.0, device=device)
    )
    return module.train()


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="cnn_res", help="a conf/model/cnn_*.yaml name")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    module = build(args.model, args.device)
    opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    g = torch.Generator(device=device).manual_seed(0)
    faces = torch.randint(0, 256, (args.batch, 48, 48), dtype=torch.uint8, device=device, generator=g)
    labels = torch.randint(0, 7, (args.batch,), device=device, generator=g)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            logits, _ = module(module.preprocess(faces, train=True))
            loss = module.loss(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):  # warm-up: kernels chosen, memory allocated
        step()
    sync()
    rates = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        rates.append(args.steps * args.batch / (time.perf_counter() - start))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    params = sum(p.numel() for p in module.parameters())
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"machine: {name}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load}\n"
        f"model: {args.model} ({params:,} parameters), batch {args.batch}, {args.precision}, "
        f"{args.rounds} rounds of {args.steps} steps: " + ", ".join(f"{r:.0f}" for r in rates) + " images/s"
    )
    rate = statistics.median(rates)
    print(f"{rate:.0f}")
    return rate


if __name__ == "__main__":
    main()
