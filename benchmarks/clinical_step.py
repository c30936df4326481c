"""Clinical GRPO step timing: steps/s, share of step time per stage, Ray rollout overhead.

    .venv/bin/python -m benchmarks.clinical_step [--steps 6] [--set key=value ...]

Runs the real driver loop (tiny Gemma3 VLM, 2 rollout workers, 2 DeepSpeed ZeRO-2 learners on
CPU, local Ray) for ``--steps`` steps (step 1 is reported separately as warm-up), then times the
same rollout request in-process with one HF backend (baseline) against the Ray pool, printing the
ratio. Numbers are machine- and load-dependent; rerun on the machine you care about.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time


def main(argv: list[str]) -> int:
    from platform.cli import add_config_options, config_from_args, parser
    from platform.clinical.config import ClinicalConfig

    p = parser("python -m benchmarks.clinical_step", __doc__.split("\n")[0], ClinicalConfig)
    p.add_argument("--steps", type=int, default=6, help="training steps (iterations)")
    add_config_options(p)
    args = p.parse_args(argv)

    from platform import tracking
    from platform.clinical.backends import BACKENDS
    from platform.clinical.driver import STAGES, Pipeline, train
    from platform.cluster import init_ray

    import mlflow

    # the benchmark's defaults (no periodic evaluation or checkpoints), overridable by --set
    args.overrides = ["eval_every=0", "checkpoint_every=0", *args.overrides]
    cfg = config_from_args(ClinicalConfig, args, flags={"steps": "iterations"},
                           fixed={"algorithm": "fairgrpo"})
    with tempfile.TemporaryDirectory() as tmp:
        uri, _ = tracking.setup(f"sqlite:///{tmp}/mlflow.db", "clinical-bench")
        init_ray(num_cpus=cfg.num_cpus or None)
        t0 = time.perf_counter()
        pipe = Pipeline(cfg)
        pipe.start()
        startup = time.perf_counter() - t0
        try:
            with tracking.tracked_run(run_name="bench") as run:
                train(pipe, 0, run.info.run_id, f"{tmp}/ck")
            client = mlflow.MlflowClient(uri)

            def hist(key):
                return {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}

            steps = hist("time/step")
            warm = [s for s in steps if s > 1] or list(steps)
            step_s = statistics.mean(steps[s] for s in warm)
            print(f"actor start-up: {startup:.1f} s; first step (warm-up): {steps[1]:.2f} s")
            print(f"steps/s (steps 2..{args.steps}): {1 / step_s:.3f}  ({step_s:.2f} s/step, "
                  f"{cfg.data.prompts_per_step} prompts x G={cfg.rollout.group_size})")
            print("share of step time per stage (steps 2..):")
            for stage in STAGES:
                h = hist(f"time/{stage}")
                total = sum(h.get(s, 0.0) for s in warm)
                print(f"  {stage:<10} {total / (step_s * len(warm)):6.1%}   {total / len(warm):.3f} s/step")
            tok = hist("throughput/tokens_per_s")
            print(f"rollout tokens/s (Ray pool): {statistics.mean(tok[s] for s in warm):.0f}")

            # baseline: the same request in-process on one HF backend vs the Ray pool
            idx = list(range(cfg.data.prompts_per_step))
            _, req = pipe.request(pipe.train_df, idx, cfg.rollout.group_size, cfg.rollout.temperature, seed=1)
            n_opts = max(len(o) for o in pipe.train_df["options"])
            local = BACKENDS.get("hf").backend(model_path=pipe.model_path,
                                               answer_letters="ABCDEFGHIJ"[:n_opts])
            local.generate(req)
            t = time.perf_counter()
            for _ in range(3):
                local.generate(req)
            base = (time.perf_counter() - t) / 3
            t = time.perf_counter()
            for _ in range(3):
                pipe.pool.generate(req)
            pooled = (time.perf_counter() - t) / 3
            print(f"rollout of one step's request: in-process HF {base:.3f} s, Ray pool "
                  f"({cfg.rollout.num_workers} workers) {pooled:.3f} s, ratio pool/in-process "
                  f"{pooled / base:.2f}")
        finally:
            pipe.stop()
    return 0


if __name__ == "__main__":
    from platform.cli import run_main

    sys.exit(run_main(main))
