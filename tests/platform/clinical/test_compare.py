"""``platform.clinical.compare`` as the benchmark: sft once, every RL run from that model, the
paper's columns with Holm-corrected tests, the targets, curves, and ``--resume``."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

pytest.importorskip("torch")


def test_benchmark_runs_from_one_sft_start_and_resumes(ray_session, tmp_path, capsys):
    from platform.clinical.compare import main

    import pandas as pd

    out = tmp_path / "out"
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(
        "compare:\n  algorithms: fairgrpo,grpo\n  seeds: 0,1\n  iterations: 2\n"
        "  n_per_source: 30\n  sft_iterations: 3\n  sft_set: {data: {prompts_per_step: 8}}\n"
        "eval_every: 1\nlearner: {num_learners: 1, grad_accum: 1, num_cpus: 0.1}\n"
        "rollout: {num_workers: 1, num_cpus: 0.1, group_size: 2}\ndata: {prompts_per_step: 2}\n"
        "eval_bootstrap: 0\n")
    common = ["--config", str(cfg), "--out", str(out), "--tracking-uri",
              f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(common) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(zip(runs["algorithm"], runs["seed"])) == [("fairgrpo", 0), ("fairgrpo", 1),
                                                            ("grpo", 0), ("grpo", 1)]
    hist = pd.read_csv(out / "history.csv")
    start = json.loads((out / "summary.json").read_text())["start"]
    # every run starts from the one sft model: its step-0 evaluation is the sft run's last
    step0 = hist[(hist["step"] == 0) & (hist["key"] == "eval/accuracy")]
    assert len(step0) == 4 and (step0["value"] == start["eval/accuracy"]).all()
    assert sorted(set(hist["step"])) == [0, 1, 2]
    readme = (out / "README.md").read_text()
    for col in ("| PP ↓ | EOD ↓ | σF1 ↓ | ΔF1 ↓ | F1 ↑ | Acc ↑ | ES-F1 ↑ |", "(sft start)",
                "Holm", "Minimum detectable difference", "Targets of the benchmark", "MedGemma-4B"):
        assert col in readme, col
    assert (out / "curves.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["tests"]["fairness/f1_gap"]) == {"grpo"}
    # the tail view: each run's mean over its last evaluations after the start (steps 1-2 here)
    gaps = hist[(hist["key"] == "fairness/f1_gap") & (hist["step"] > 0) & (hist["algorithm"] == "grpo")]
    want = gaps.groupby("seed")["value"].mean().mean()
    assert summary["tail"]["algorithms"]["grpo"]["fairness/f1_gap"]["mean"] == pytest.approx(want)
    assert "last 4 evaluations (steps 1-2)" in readme and "p=" in readme
    assert summary["algorithms"]["grpo"]["fairness/f1_gap"]["n"] == 2
    # --resume with a third seed: the sft model is reused, only the two new runs train
    capsys.readouterr()
    assert main(common + ["--resume", "--seeds", "0,1,2"]) == 0
    printed = capsys.readouterr().out
    assert "sft start: reusing" in printed
    again = pd.read_csv(out / "runs.csv")
    assert len(again) == 6 and list(again["run_id"][:4]) == list(runs["run_id"])
    assert sorted(again.loc[again["seed"] == 2, "algorithm"]) == ["fairgrpo", "grpo"]
    # --report-only: the report again from the tables, with the hand-written reading kept
    (out / "reading.md").write_text("## Reading\n\nwritten by hand")
    before = json.loads((out / "summary.json").read_text())
    assert main(common + ["--report-only"]) == 0
    after = json.loads((out / "summary.json").read_text())
    assert after["start"] == before["start"]
    for alg, keys in before["algorithms"].items():  # the same numbers (the CSV round-trips floats)
        for key, v in keys.items():
            assert after["algorithms"][alg][key]["mean"] == pytest.approx(v["mean"], rel=1e-9, nan_ok=True)
    assert (out / "README.md").read_text().rstrip().endswith("written by hand")


def test_bad_compare_options_exit_2(tmp_path, run_env, repo_root):
    import subprocess
    import sys

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("compare:\n  sft_iters: 3\n")
    proc = subprocess.run([sys.executable, "-m", "platform.clinical.compare", "--config", str(cfg),
                           "--out", str(tmp_path / "o")], cwd=repo_root, env=run_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "sft_iters" in proc.stderr and "sft_iterations" in proc.stderr
    assert not (tmp_path / "o").exists()
