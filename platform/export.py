"""``python -m platform.export --run RUN_ID --out DIR [--step N]``: a clinical run's policy, from
any of its checkpoints, as a Hugging Face model dir.

The run's ``equirl.checkpoint`` tag names its checkpoint folder, and its ``model.path`` /
``model.dtype`` params name the base model. The step is ``--step`` or the newest complete one.
DeepSpeed's ``zero_to_fp32`` gathers the weights of any ZeRO stage on this machine, with no
Ray and no GPU. The output is what every clinical run writes at its end
(``platform.clinical.export``): safetensors, config, processor, chat template and
``equirl_export.json``. It is written under a temporary name and renamed into place.

An allocation run's policy is exported from its latest checkpoint as the RLModule plus a
TorchScript greedy policy (:mod:`platform.allocation.export`).
Bad input exits 2 before anything is written: an unknown run, a run without checkpoints, a
missing step, a checkpoint with files missing, or an ``--out`` folder that is not an earlier
export (it would be replaced).
"""

from __future__ import annotations

import sys
from pathlib import Path
from platform.cli import run_main

from base.errors import UsageError


def _parser():
    from platform.cli import add_tracking_options, parser

    p = parser("python -m platform.export", __doc__.split("\n")[0])
    p.add_argument("--run", required=True, metavar="RUN_ID", help="MLflow run id")
    p.add_argument("--out", required=True, metavar="DIR", help="the model dir to write")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    add_tracking_options(p)
    return p


def main(argv: list[str]) -> int:
    from platform import tracking
    from platform.clinical import checkpoint, models
    from platform.clinical.export import check_out, export_checkpoint

    import mlflow

    args = _parser().parse_args(argv)
    uri = args.tracking_uri or tracking.default_tracking_uri()
    tracking.check_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    try:
        run = client.get_run(args.run)
    except mlflow.exceptions.MlflowException:
        raise UsageError(f"--run: no run {args.run!r} in {uri}") from None
    track = run.data.tags.get(tracking.TAG_TRACK)
    if track == "allocation":
        return _export_allocation(run, args)
    if track != "clinical":
        raise UsageError(f"--run: {args.run} is a {track or 'untracked'} run; platform.export "
                         "exports clinical and allocation training runs")
    check_out(args.out, "--out")
    root = run.data.tags.get(tracking.TAG_CHECKPOINT)
    if not root or not Path(root).is_dir():
        raise UsageError(f"--run: {args.run} has no checkpoint folder ({root or 'no tag'})")
    if args.step is None:
        folder = checkpoint.latest(root)
        if folder is None:
            raise UsageError(f"--run: no complete checkpoint under {root}")
    else:
        folder = checkpoint.step_dir(root, args.step)
        if not (folder / "driver.pt").is_file():
            have = sorted(p.name for p in Path(root).glob("step-*"))
            raise UsageError(f"--step: no checkpoint {folder.name} under {root}; have {have}")
    checkpoint.require_complete(folder, "--run" if args.step is None else "--step")
    base = run.data.params.get("model.path", "tiny-gemma3")
    base_path = models.resolve_model_path("" if base == "tiny-gemma3" else base)
    step = int(folder.name.removeprefix("step-"))
    out = export_checkpoint(folder, base_path, args.out,
                            {"algorithm": run.data.tags.get(tracking.TAG_ALGORITHM), "step": step,
                             "run_id": args.run, "checkpoint": str(folder)},
                            dtype=run.data.params.get("model.dtype", "float32"))
    print(f"export: run {args.run} step {step} -> {out}")
    return 0


def _export_allocation(run, args) -> int:
    """An allocation run's policy (:mod:`platform.allocation.export`: the RLModule and a
    TorchScript greedy policy) from its checkpoint; runs keep only their latest one."""
    from platform import tracking
    from platform.allocation.export import META_FILE, export_policy
    from platform.clinical.export import check_out

    check_out(args.out, "--out", marker=META_FILE)
    folder = run.data.tags.get(tracking.TAG_CHECKPOINT)
    if not folder or not Path(folder).is_dir():
        raise UsageError(f"--run: {run.info.run_id} has no checkpoint folder ({folder or 'no tag'})")
    iteration = run.data.tags.get("equirl.checkpoint_iteration")
    if args.step is not None and str(args.step) != iteration:
        raise UsageError(f"--step: allocation runs keep only their latest checkpoint "
                         f"(iteration {iteration}); got {args.step}")
    params = run.data.params
    out = export_policy(folder, args.out, {
        "algorithm": run.data.tags.get(tracking.TAG_ALGORITHM), "run_id": run.info.run_id,
        "iteration": iteration, "scenario": params.get("scenario"),
        "group_key": params.get("group_key"), "checkpoint": folder})
    print(f"export: run {run.info.run_id} iteration {iteration} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
