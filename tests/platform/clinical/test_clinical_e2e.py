"""The real clinical pipeline end to end: tiny Gemma3 VLM, 2 rollout workers, DeepSpeed ZeRO-2
world size 2 on CPU (gloo), 2 training steps, MLflow checked; then ``--resume`` continues it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

torch = pytest.importorskip("torch")

ARGS = ["--set", "data.prompts_per_step=4", "--set", "rollout.group_size=4",
        "--set", "rollout.max_new_tokens=2", "--set", "rollout.num_cpus=0.1",
        "--set", "learner.num_cpus=0.1", "--set", "eval_every=2", "--set", "checkpoint_every=1",
        "--set", "learner.lr=0.01", "--experiment", "clinical-e2e", "--run-name", "e2e"]


def canary_dataset(out: Path) -> Path:
    """The default synthetic data with values a scan can find: unique row ids and fractional
    ages (integer - 0.377131: every age band stays the same, and a metric value that happens
    to share 6 decimals with an age is unlikely)."""
    import pandas as pd

    from envs.clinical import synth
    from envs.clinical.dataset import save_dataset

    df = pd.read_parquet(synth.default_dataset_path() / "data.parquet")
    df["id"] = [f"pt-canary-{i:05d}-q7" for i in range(len(df))]
    df["age"] = [round(a - 0.377131, 6) if a == a else a for a in df["age"]]
    save_dataset(df, out / "data.parquet")
    return out / "data.parquet"


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory):
    """One 2-step fairgrpo run on the canary copy of the default data; returns (tracking
    uri, checkpoint dir, run, argv)."""
    from platform.clinical.train import main

    import mlflow

    tmp = tmp_path_factory.mktemp("clinical-e2e")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    ck = tmp / "ck"
    argv = ARGS + ["--iterations", "2", "--tracking-uri", uri, "--set", f"checkpoint_dir={ck}",
                   "--data", str(canary_dataset(tmp))]
    assert main("fairgrpo", argv) == 0
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("clinical-e2e")
    (r,) = client.search_runs([exp.experiment_id])
    return uri, ck, r, argv


def test_e2e_mlflow_metrics_and_parameters_changed(run):
    from platform.clinical import models

    import mlflow

    uri, ck, r, _ = run
    assert r.info.status == "FINISHED"
    assert r.data.params["algorithm"] == "fairgrpo" and r.data.params["estimator"] == "fair_grpo"
    assert r.data.params["learner.zero_stage"] == "2" and r.data.params["learner.num_learners"] == "2"
    assert r.data.tags["equirl.track"] == "clinical" and r.data.tags["equirl.algorithm"] == "fairgrpo"
    m = r.data.metrics
    by_group = [k for k in m if k.startswith("fairness/by_group/")]
    assert by_group and any(k.endswith("/f1") for k in by_group), sorted(m)
    # the paper's headline (each attribute on its own) and the intersectional view, with CIs
    for key in ("fairness/f1_gap", "fairness/pp_gap", "fairness/es_f1", "overall/f1",
                "fairness/intersectional/f1_gap"):
        assert key in m, (key, sorted(m))
    for attr in ("sex", "age_band"):  # each attribute on its own, per data source
        assert any(k.startswith("fairness/dataset/") and k.endswith(f"/{attr}/f1_gap") for k in m)
    assert m["fairness/f1_gap_ci_low"] <= m["fairness/f1_gap_ci_high"]
    assert 1 / 3 <= m["eval/top_answer_share"] <= 1.0
    assert any(k.startswith("reward/by_group/") for k in m)
    stages = ("rollout", "reward", "advantage", "update", "sync", "evaluate")
    assert all(m[f"time/{s}"] > 0 for s in stages), {s: m[f"time/{s}"] for s in stages}
    # the stages run one after another inside the step: their sum cannot exceed it
    assert sum(m[f"time/{s}"] for s in stages) <= m["time/step"]
    assert m["throughput/tokens_per_s"] > 0 and "advantage/adv/std" in m
    history = mlflow.MlflowClient(uri).get_metric_history(r.info.run_id, "reward/mean")
    assert sorted(h.step for h in history) == [1, 2]
    # parameters changed: the step-2 checkpoint (ZeRO-2 keeps full module weights) vs the build
    state = torch.load(ck / "step-000002" / "learner" / "ds" / "mp_rank_00_model_states.pt",
                       weights_only=False)["module"]
    init = dict(models.load_model(models.cached_tiny_vlm()).named_parameters())
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert name in state and name in init
    changed = [k for k, v in init.items() if not torch.equal(state[k].float(), v.detach().float())]
    assert name in changed and len(changed) > len(init) // 2, changed
    # a run worth opening: its resolved config, a per-group table per evaluation, a figure and
    # a summary (readable group names; sizes and rates only)
    from platform.clinical.config import ClinicalConfig

    import pandas as pd
    import yaml

    from base.config import build

    client = mlflow.MlflowClient(uri)
    rid = r.info.run_id
    names = {a.path for a in client.list_artifacts(rid)} | {
        a.path for a in client.list_artifacts(rid, "eval/by_group")} | {
        a.path for a in client.list_artifacts(rid, "eval")}
    assert {"config.yaml", "summary.md", "eval/by_group.png", "eval/by_group/step-000002.csv"} <= names
    cfg = yaml.safe_load(Path(client.download_artifacts(rid, "config.yaml")).read_text())
    assert build(ClinicalConfig, cfg).learner.lr == 0.01 and cfg["algorithm"] == "fairgrpo"
    table = pd.read_csv(client.download_artifacts(rid, "eval/by_group/step-000002.csv"))
    assert set(table.columns) >= {"group", "n", "accuracy", "f1"} and table["n"].sum() > 0
    assert all("|" in g or g == "unknown" for g in table["group"])  # F|26-50, not F_26-50
    # privacy: groups under report_min_group_size (default 10) keep their size, not their rates
    assert (table["withheld"] == (table["n"] < 10)).all(), table
    assert table.loc[table["withheld"], "accuracy"].isna().all()
    assert table.loc[~table["withheld"], "accuracy"].notna().all()
    summary = Path(client.download_artifacts(rid, "summary.md")).read_text()
    assert "ΔF1" in summary and "eval/by_group.png" in summary
    # the exported policy (a Hugging Face dir, from_pretrained) holds exactly the step-2 weights
    exported = dict(models.load_model(r.data.tags["equirl.model_dir"]).named_parameters())
    assert all(torch.equal(exported[k].detach(), state[k].float()) for k in init), "export != step 2"


def _leaks(texts: list[str], blobs: list[bytes], df) -> list[str]:
    """Patient-level values of ``df`` found in ``texts`` or ``blobs``: row ids, ages (as
    text or as a metric value), image bytes (a 32-byte slice of each image)."""
    haystack = "\n".join(texts) + "\n".join(b.decode("utf-8", "replace") for b in blobs)
    found = [f"id {i}" for i in df["id"] if i in haystack]
    ages = {float(a) for a in df["age"] if a == a}
    found += [f"age {a!r}" for a in sorted(ages) if repr(a) in haystack]
    for img in (bytes(b) for b in df["image"] if b is not None):
        piece = img[len(img) // 2:len(img) // 2 + 32]
        if any(piece in b for b in blobs):
            found.append(f"image bytes ({len(img)} B)")
    return found


def test_the_run_record_holds_no_patient_level_data(run, tmp_path):
    """Privacy (issue 17 item 9): the whole MLflow record (params, tags, metric names and
    values, dataset inputs, every artifact) and the exported model hold no row id, no age and
    no image bytes of the training data."""
    import mlflow
    import pandas as pd

    uri, _, r, argv = run
    df = pd.read_parquet(argv[argv.index("--data") + 1])
    client = mlflow.MlflowClient(uri)
    rec = client.get_run(r.info.run_id)
    texts = [*rec.data.params, *rec.data.params.values(), *rec.data.tags, *rec.data.tags.values(),
             *rec.data.metrics, *(repr(v) for v in rec.data.metrics.values())]
    for name in rec.data.metrics:  # every logged value, not only the last
        texts += [repr(m.value) for m in client.get_metric_history(r.info.run_id, name)]
    for di in rec.inputs.dataset_inputs if rec.inputs else ():
        texts += [di.dataset.name, di.dataset.source, di.dataset.schema or "", di.dataset.profile or ""]
    root = Path(client.download_artifacts(r.info.run_id, "", dst_path=str(tmp_path / "art")))
    files = [f for f in root.rglob("*") if f.is_file()]
    files += [f for f in Path(rec.data.tags["equirl.model_dir"]).rglob("*") if f.is_file()]
    assert {"config.yaml", "summary.md"} <= {f.name for f in files} and len(files) > 8
    texts += [str(f) for f in files]
    blobs = [f.read_bytes() for f in files if f.stat().st_size < 50_000_000]
    assert _leaks(texts, blobs, df) == []
    # the scan finds a leak when there is one: an id in a tag, an age as a metric, an image
    planted = _leaks(texts + [df["id"].iloc[7], repr(float(df["age"].dropna().iloc[3]))],
                     blobs + [bytes(df["image"].iloc[5])], df)
    assert len(planted) == 3, planted


def test_export_any_checkpoint_as_a_model_dir(run, tmp_path):
    """platform.export --run: the newest checkpoint is the run's final export; --step 1 holds
    the step-1 weights (DeepSpeed's zero_to_fp32, no Ray)."""
    from platform.clinical import models
    from platform.export import main

    uri, ck, r, _ = run
    assert main(["--run", r.info.run_id, "--out", str(tmp_path / "last"), "--tracking-uri", uri]) == 0
    assert main(["--run", r.info.run_id, "--out", str(tmp_path / "one"), "--step", "1",
                 "--tracking-uri", uri]) == 0
    final = dict(models.load_model(r.data.tags["equirl.model_dir"]).named_parameters())
    last = dict(models.load_model(tmp_path / "last").named_parameters())
    one = dict(models.load_model(tmp_path / "one").named_parameters())
    step1 = torch.load(ck / "step-000001" / "learner" / "ds" / "mp_rank_00_model_states.pt",
                       weights_only=False)["module"]
    assert all(torch.equal(last[k], final[k]) for k in final)
    assert all(torch.equal(one[k].detach(), step1[k].float()) for k in one)
    assert not all(torch.equal(one[k], final[k]) for k in final)  # step 1 is not step 2
    assert models.is_builtin(tmp_path / "one")
    from base.errors import UsageError

    with pytest.raises(UsageError, match="--step: no checkpoint step-000007"):
        main(["--run", r.info.run_id, "--out", str(tmp_path / "x"), "--step", "7", "--tracking-uri", uri])
    assert not (tmp_path / "x").exists()


def test_resume_continues_same_run(run):
    """Resume from step 1 although MLflow already holds step 2 (a crash between a step's log and
    its checkpoint): step 2 is replayed but not logged twice, then step 3 is logged once."""
    from platform.clinical import checkpoint
    from platform.clinical.driver import DEDUPE_KEY
    from platform.clinical.train import main

    import mlflow

    uri, ck, r, argv = run
    assert checkpoint.latest(ck).name == "step-000002" and (ck / "step-000001" / "driver.pt").is_file()
    (ck / checkpoint.LATEST).write_text("step-000001")  # as if step 2's checkpoint never finished
    before = checkpoint.load_driver_state(checkpoint.latest(ck))
    assert before["step"] == 1 and before["run_id"] == r.info.run_id
    client = mlflow.MlflowClient(uri)
    logged_before = {k: [(h.step, h.value) for h in client.get_metric_history(r.info.run_id, k)]
                     for k in ("reward/mean", "eval/accuracy", DEDUPE_KEY)}
    assert [s for s, _ in logged_before[DEDUPE_KEY]] == [1, 2]
    argv3 = [a if a != "2" or argv[i - 1] != "--iterations" else "3" for i, a in enumerate(argv)]
    assert main("fairgrpo", argv3 + ["--resume"]) == 0
    after = checkpoint.load_driver_state(checkpoint.latest(ck))
    assert after["step"] == 3 and after["run_id"] == r.info.run_id
    # data position moved on (steps 2 and 3 replayed/run from the step-1 resume point)
    d0, d1 = before["data"], after["data"]
    assert (d1["epoch"] * 10**6 + d1["cursor"]) > (d0["epoch"] * 10**6 + d0["cursor"])
    assert str(after["estimator"]) != str(before["estimator"])  # FairGRPO history moved on
    history = client.get_metric_history(r.info.run_id, "reward/mean")
    assert sorted(h.step for h in history) == [1, 2, 3]  # one row per step: no duplicate step 2
    for key, rows in logged_before.items():  # steps 1-2 untouched, step 3 added once
        after_rows = [(h.step, h.value) for h in client.get_metric_history(r.info.run_id, key)]
        assert sorted(after_rows)[: len(rows)] == sorted(rows) and len(after_rows) == len(rows) + 1, key
    sync = client.get_metric_history(r.info.run_id, "time/sync")  # weight-sync seconds, every step
    assert sorted(h.step for h in sync) == [1, 2, 3] and all(h.value > 0 for h in sync)
    assert client.get_run(r.info.run_id).info.status == "FINISHED"


def test_fairgrad_option_trains_through_deepspeed(ray_session, tmp_path):
    """``learner.fairgrad: true`` on a real DeepSpeed ZeRO-2 learner: the step runs, FairGrad
    sees the per-group objectives (conflict count logged) and the weights move, finitely."""
    from platform.clinical import models
    from platform.clinical.train import main

    import mlflow

    uri, ck = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "ck"
    argv = ARGS + ["--iterations", "1", "--tracking-uri", uri, "--set", f"checkpoint_dir={ck}",
                   "--set", "learner.fairgrad=true", "--set", "learner.num_learners=1",
                   "--set", "rollout.num_workers=1", "--set", "eval_every=0"]
    assert main("fairgrpo", argv) == 0
    client = mlflow.MlflowClient(uri)
    (r,) = client.search_runs([client.get_experiment_by_name("clinical-e2e").experiment_id])
    assert r.info.status == "FINISHED" and r.data.params["learner.fairgrad"] == "True"
    # conflicts: pairs of group objectives whose gradients point against each other, counted
    # per micro-batch, so a whole number of at most micro-batches x C(groups of the step, 2)
    # (the projection's effect itself: test_clinical_units.py::test_fairgrad_surrogate_...)
    conflicts = r.data.metrics["learner/fairgrad_conflicts"]
    groups = sum(k.startswith("reward/by_group/") for k in r.data.metrics)
    micro = int(r.data.params["learner.grad_accum"])
    assert groups >= 2 and float(conflicts).is_integer()
    assert 0 <= conflicts <= micro * groups * (groups - 1) // 2, (conflicts, groups, micro)
    state = torch.load(ck / "step-000001" / "learner" / "ds" / "mp_rank_00_model_states.pt",
                       weights_only=False)["module"]
    init = dict(models.load_model(models.cached_tiny_vlm()).named_parameters())
    assert all(torch.isfinite(v.float()).all() for v in state.values() if v.is_floating_point())
    assert any(not torch.equal(state[k].float(), v.detach().float()) for k, v in init.items())


def test_dapo_dynamic_sampling_tis_and_fairness_end_to_end(ray_session, tmp_path):
    """``platform.train dapo`` with TIS and the fairgrpo weighting on the real pipeline (1
    rollout worker, 1 DeepSpeed learner, 2 steps): the preset reaches MLflow, dynamic sampling
    logs per-group drop counts that add up, the rollout/learner log-prob mismatch is logged
    and TIS weights are applied, and the weights move, finitely."""
    from platform.clinical import models
    from platform.clinical.train import main

    import mlflow

    uri, ck = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "ck"
    argv = ARGS + ["--iterations", "2", "--tracking-uri", uri, "--set", f"checkpoint_dir={ck}",
                   "--set", "learner.num_learners=1", "--set", "rollout.num_workers=1",
                   "--set", "eval_every=0", "--set", "learner.tis_cap=2",
                   "--set", "rollout.max_gen_batches=3", "--set", "advantage.fairness=fairgrpo"]
    assert main("dapo", argv) == 0
    client = mlflow.MlflowClient(uri)
    (r,) = client.search_runs([client.get_experiment_by_name("clinical-e2e").experiment_id])
    p, m = r.data.params, r.data.metrics
    assert r.info.status == "FINISHED" and p["estimator"] == "grpo" and p["advantage.fairness"] == "fairgrpo"
    assert (p["learner.loss_agg"], p["learner.clip_eps_high"], p["rollout.dynamic_sampling"]) == \
        ("token-mean", "0.28", "True")
    # max_new_tokens 2: DAPO's buffer is max(1, 2 // 5) = 1 token, so a 2-token answer costs 1
    assert p["reward.overlong_buffer"] == "1" and 0 <= m["reward/overlong_fraction"] <= 1
    for step in (1, 2):
        hist = {k: {h.step: h.value for h in client.get_metric_history(r.info.run_id, k)}
                for k in m if k.startswith("filter/")}
        dropped = sum(v.get(step, 0) for k, v in hist.items()
                      if k.startswith("filter/by_group/") and k.endswith("/dropped"))
        assert dropped == hist["filter/dropped"][step]
        assert 1 <= hist["filter/rounds"][step] <= 3
    assert m["filter/trained_prompts"] >= 1 and any(k.startswith("advantage/T_d/") for k in m)
    assert 0 <= m["rollout/logprob_diff/mean"] <= m["rollout/logprob_diff/max"]
    assert 0 < m["learner/tis_weight"] <= 2 and 0 <= m["learner/tis_clipfrac"] <= 1
    # the filter stage (its extra rollout + reward rounds included) is part of the step
    assert 0 < m["time/filter"] and m["time/filter"] + m["time/rollout"] <= m["time/step"]
    state = torch.load(ck / "step-000002" / "learner" / "ds" / "mp_rank_00_model_states.pt",
                       weights_only=False)["module"]
    init = dict(models.load_model(models.cached_tiny_vlm()).named_parameters())
    assert all(torch.isfinite(v.float()).all() for v in state.values() if v.is_floating_point())
    assert any(not torch.equal(state[k].float(), v.detach().float()) for k, v in init.items())
