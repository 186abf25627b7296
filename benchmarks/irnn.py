"""Training speed of the IRNN at the paper's sizes (batch 64, ~60 frames, 3872 features, hidden 200).

Measures training steps per second (forward, last-real-frame loss, backward, SGD step) of

- ``fused``: the project's IRNN (``lightning_modules.components.irnn.IRNN``: ``torch.nn.RNN``, time loop in ATen/cuDNN);
- ``cell_loop``: the same network written as a Python loop over ``torch.nn.RNNCell`` (the baseline);
- ``plain_rnn``: ``torch.nn.RNN`` fed the 3872-d frames itself (it first copies the batch to time-major order);
- ``floor``: the input projection of every padded frame alone, one (B*T, 3872) x (3872, 200) matmul forward and
  its weight-gradient matmul backward: the floor of the dense padded design, which projects the padding too (a third
  of the rows at lengths T/3..T);
- ``floor_real``: the same projection of the real frames only (sum of lengths rows): the compute no implementation
  can avoid (about 99% of the FLOPs);

and prints fused/floor (goal on CPU: <= 1.3), fused/floor_real and cell_loop/fused (goal on GPU: >= 5), each with the
load average. Methods are timed in interleaved rounds and the median round is reported, so load from other
processes hits all of them alike.

    python benchmarks/irnn.py                      # CPU
    python benchmarks/irnn.py --device cuda        # GPU
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from machine import cpu_name, figure
from torch import nn

from lightning_modules.components.irnn import IRNN


class PlainRNNIRNN(nn.Module):
    """nn.RNN fed the 3872-d frames directly (what IRNN did before projecting the input itself), for comparison."""

    def __init__(self, input_size: int, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size, nonlinearity="relu", bias=False, batch_first=True)
        self.out = nn.Linear(hidden_size, num_classes)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, _ = self.rnn(frames)
        last = hidden[torch.arange(len(lengths), device=frames.device), lengths - 1]
        return self.out(last), last


class CellLoopIRNN(nn.Module):
    """The IRNN as a Python loop over time steps (one RNNCell call per frame)."""

    def __init__(self, input_size: int, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        self.cell = nn.RNNCell(input_size, hidden_size, bias=False, nonlinearity="relu")
        self.out = nn.Linear(hidden_size, num_classes)
        with torch.no_grad():
            self.cell.weight_ih.normal_(0, 0.001)
            self.cell.weight_hh.copy_(torch.eye(hidden_size))

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = frames.new_zeros(frames.shape[0], self.cell.hidden_size)
        states = []
        for t in range(frames.shape[1]):
            h = self.cell(frames[:, t], h)
            states.append(h)
        hidden = torch.stack(states, dim=1)
        last = hidden[torch.arange(len(lengths), device=frames.device), lengths - 1]
        return self.out(last), last


def train_step_fn(model: nn.Module, frames, lengths, labels) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.005)
    t_max = frames.shape[1]

    def step() -> None:
        logits, _ = model(frames, lengths)
        loss = F.cross_entropy(logits, labels, reduction="sum") / (len(labels) * t_max)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return step


def floor_step_fn(
    frames: torch.Tensor, hidden: int, lengths: torch.Tensor | None = None
) -> Callable[[], None]:
    """Project every frame (or, given ``lengths``, the real frames only, gathered once beforehand)."""
    weight = nn.Parameter(torch.empty(hidden, frames.shape[-1], device=frames.device).normal_(0, 0.001))
    flat = frames.reshape(-1, frames.shape[-1])
    if lengths is not None:
        real = torch.arange(frames.shape[1], device=frames.device) < lengths[:, None]
        flat = flat[real.reshape(-1)].contiguous()

    def step() -> None:
        weight.grad = None
        (flat @ weight.t()).sum().backward()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rounds(
    steps: dict[str, Callable[[], None]], device: torch.device, rounds: int, per_round: int, warmup: int
) -> dict[str, float]:
    """Median seconds per step of each method over interleaved rounds."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync(device)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            sync(device)
            samples[name].append((time.perf_counter() - start) / per_round)
    return {name: statistics.median(s) for name, s in samples.items()}


def machine_info(device: torch.device) -> str:
    info = (
        f"machine: {platform.machine()} {cpu_name()}; cores: {os.cpu_count()}; "
        f"torch threads: {torch.get_num_threads()}; torch {torch.__version__}; python {platform.python_version()}"
    )
    if device.type == "cuda":
        info += f"; GPU: {torch.cuda.get_device_name(device)}"
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--features", type=int, default=3872)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    frames = torch.randn(args.batch, args.frames, args.features, device=device)
    # mixed lengths, the longest = the padded length (as in a real batch)
    lengths = torch.randint(args.frames // 3, args.frames + 1, (args.batch,), device=device)
    lengths[0] = args.frames
    labels = torch.randint(0, 7, (args.batch,), device=device)
    for i, n in enumerate(lengths.tolist()):
        frames[i, n:] = 0

    fused = IRNN(args.features, args.hidden).to(device)
    cell = CellLoopIRNN(args.features, args.hidden, 7).to(device)
    with torch.no_grad():  # identical weights, so both compute the same thing
        cell.cell.weight_ih.copy_(fused.input_proj.weight)
        cell.out.load_state_dict(fused.out.state_dict())
        same = torch.allclose(cell(frames, lengths)[0], fused(frames, lengths)[0], atol=1e-4)
    steps = {
        "fused": train_step_fn(fused, frames, lengths, labels),
        "cell_loop": train_step_fn(cell, frames, lengths, labels),
        "plain_rnn": train_step_fn(
            PlainRNNIRNN(args.features, args.hidden, 7).to(device), frames, lengths, labels
        ),
        "floor": floor_step_fn(frames, args.hidden),
        "floor_real": floor_step_fn(frames, args.hidden, lengths),
    }
    sec = time_rounds(steps, device, args.rounds, args.per_round, args.warmup)

    print(machine_info(device))
    real = int(lengths.sum())
    print(
        f"sizes: batch {args.batch}, frames {args.frames}, features {args.features}, hidden {args.hidden}; "
        f"real frames {real} of {args.batch * args.frames} padded ({real / (args.batch * args.frames):.0%}); "
        f"fused and cell loop agree: {same}"
    )
    for name, s in sec.items():
        print(f"{name:>10}: {1 / s:8.2f} steps/s  ({1000 * s:8.2f} ms/step)")
    load = os.getloadavg()[0]
    ratios = [
        ("fused / floor", "fused", "floor", "goal on CPU: <= 1.3x; the dense padded design's floor"),
        ("fused / floor_real", "fused", "floor_real", "the floor over real frames only"),
        ("cell_loop / fused", "cell_loop", "fused", "goal on GPU: >= 5x"),
        ("plain_rnn / fused", "plain_rnn", "fused", ""),
    ]
    for label, num, den, note in ratios:
        print(
            f"{label:<19}= {sec[num] / sec[den]:.2f}x  ({note + '; ' if note else ''}load average {load:.1f})"
        )
    figure(
        "IRNN training step (fused)",
        1000 * sec["fused"],
        "ms/step",
        "floor over real frames",
        1000 * sec["floor_real"],
    )
    figure(
        "IRNN training step (fused)",
        1000 * sec["fused"],
        "ms/step",
        "padded-design floor",
        1000 * sec["floor"],
        goal="<= 1.3x on CPU",
    )
    figure(
        "IRNN Python cell loop",
        1000 * sec["cell_loop"],
        "ms/step",
        "fused",
        1000 * sec["fused"],
        goal=">= 5x on GPU",
    )


if __name__ == "__main__":
    main()
