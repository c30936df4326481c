"""FairGrad step overhead against a plain optimizer step (arXiv 2504.14388 projection).

    python -m benchmarks.fairgrad_overhead [--steps 30] [--batch 256] [--threads N]

Model: MLP 512 -> 1024 -> 512 -> 1 (1,050,625 parameters), Adam, batch of 256. Objectives: the
BCE task loss plus K-1 smooth EO-gap surrogates over random binary groups (K = 2 and 4).
Plain step = ``backward`` of the SUM of the K losses + ``step``; FairGrad step = K gradient
passes + projection + ``step``. Prints median milliseconds per step and the ratio, both
measured in the same run with the two kinds of step interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from algorithms.fairgrad import FairGrad, eo_gap_surrogate


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(),
                               torch.nn.Linear(1024, 512), torch.nn.ReLU(), torch.nn.Linear(512, 1))


def losses(model, x, y, groups):
    logits = model(x).squeeze(-1)
    task = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    return [task] + [eo_gap_surrogate(logits, y, g) for g in groups]


def time_steps(steps, n: int) -> list[float]:
    """Median ms per call of each function; calls are interleaved so load drift hits all alike."""
    for _ in range(3):
        for step in steps:
            step()
    samples: list[list[float]] = [[] for _ in steps]
    for _ in range(n):
        for k, step in enumerate(steps):
            t0 = time.perf_counter()
            step()
            samples[k].append(time.perf_counter() - t0)
    return [1000 * statistics.median(s) for s in samples]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 512)
    y = (torch.rand(args.batch) > 0.5).float()
    model = make_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters; batch {args.batch}; torch threads {torch.get_num_threads()}")
    print(f"{'objectives':>10} {'plain ms':>10} {'fairgrad ms':>12} {'ratio':>7}")
    for k in (2, 4):
        groups = [(torch.rand(args.batch) > 0.5).long() for _ in range(k - 1)]
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        fg = FairGrad(opt, seed=0)

        def plain(opt=opt, groups=groups):
            opt.zero_grad(set_to_none=True)
            sum(losses(model, x, y, groups)).backward()
            opt.step()

        def fair(fg=fg, groups=groups):
            fg.step(losses(model, x, y, groups))

        t_plain, t_fair = time_steps([plain, fair], args.steps)
        print(f"{k:>10} {t_plain:>10.1f} {t_fair:>12.1f} {t_fair / t_plain:>7.2f}")


if __name__ == "__main__":
    main()
