"""The GPU kit (benchmarks/gpu_kit.py) is known to work before a GPU appears.

* the HBM-bandwidth bound on a case computed by hand (KV cache, sliding window, batch);
* the decode weight bytes of a real Gemma3 (tied LM head counted once, vision tower not at all);
* the CPU-vs-device greedy check passes on equal weights and fails on a perturbed one;
* the whole dry run (every section inline: tiny model, CPU, DeepSpeed ZeRO-2/3 with gloo), with
  Ray, MLflow and vLLM imports refused as on the GPU machine, gives finite positive figures that
  agree with the formulas, and never touches docs/results;
* a section in its own process (the default) runs, and one over its limit is killed and
  reported; a failing section is reported while the others still run; bad flags exit 2.

About 40 s on a 2-core machine (the DeepSpeed CPU comm op, built once into .cache for the
whole suite, can add 30-45 s the first time); not marked slow: the issue asks CI to run it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from benchmarks import gpu_kit
from benchmarks import gpu_kit_model as km
from benchmarks import gpu_kit_sections as ks

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {**os.environ, **gpu_kit.section_env("dry-run")}
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    env.pop("RAY_ADDRESS", None)
    return env


# ------------------------------------------------------------------------------ formulas

def test_bandwidth_bound_known_case():
    """2 layers (one sliding, window 4; one global), 1 KV head of dim 2, 2-byte cache, batch 3,
    prompt 3, 4 new tokens: decode steps k=1..3 attend 4, 5, 6 positions; the sliding layer
    reads min(., 4). KV bytes = 2 (K,V) x 3 x 1 x 2 x 2 B x (4+4, 4+5, 4+6) = 192, 216, 240."""
    spec = km.ModelSpec(name="hand", vocab_size=10, hidden_size=4, intermediate_size=8,
                        num_layers=2, num_heads=1, num_kv_heads=1, head_dim=2, sliding_window=4,
                        global_every=2, vision_hidden_size=4, vision_intermediate_size=8,
                        vision_layers=1, vision_heads=1, image_size=8, patch_size=4,
                        mm_tokens_per_image=1)
    assert spec.layer_types == ["sliding_attention", "full_attention"]
    assert km.kv_bytes(spec.layer_types, 4, 1, 2, batch=3, context=6, dtype_bytes=2) == 240
    mean = km.mean_decode_bytes(1000, spec, batch=3, prompt_len=3, new_tokens=4, dtype_bytes=2)
    assert mean == 1000 + (192 + 216 + 240) / 3 == 1216
    assert km.bandwidth_bound(3, 1e6, mean) == pytest.approx(3e6 / 1216)  # 2467.1 tokens/s


def test_medgemma_spec_and_decode_weight_bytes():
    """MedGemma-4B's published numbers give 4.30B parameters; a decode step reads the text
    decoder once (tied head) and no vision weights: checked on the tiny model's real modules."""
    s = km.MEDGEMMA_4B
    assert (s.hidden_size, s.intermediate_size, s.num_layers, s.num_kv_heads, s.head_dim) == (2560, 10240, 34, 4, 256)
    assert s.layer_types.count("full_attention") == 5 and s.mm_tokens_per_image == 256
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = km.write_model_dir(km.TINY, tmp)
        model = km.build_random(str(path), "bfloat16", "cpu", seed=0)
    text = sum(p.numel() for p in model.model.language_model.parameters())
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert km.decode_weight_bytes(model) == 2 * text
    assert sum(p.numel() for p in model.parameters()) > text + vision  # + projector, not read


# ------------------------------------------------------------------------------ correctness check

def test_greedy_check_passes_on_equal_weights_and_fails_on_a_perturbed_one():
    from platform.clinical import models
    from platform.clinical.hf_backend import HFBackend

    path = str(models.cached_tiny_vlm())
    req = ks.greedy_request(n_prompts=2, max_new_tokens=8)
    ref, test = HFBackend(path), HFBackend(path)
    same = ks.compare_greedy(ref.generate(req), test.generate(req))
    assert same["passed"] and same["first_mismatch"] is None and same["tokens"] > 0
    name = "model.language_model.embed_tokens.weight"
    w = dict(test.model.named_parameters())[name].detach()
    test.load_weights([(name, w + 0.5 * torch.randn(w.shape, generator=torch.Generator().manual_seed(1)))])
    diff = ks.compare_greedy(ref.generate(req), test.generate(req))
    assert not diff["passed"] and diff["first_mismatch"] is not None


# ------------------------------------------------------------------------------ the dry run

# The GPU machine has no Ray, MLflow or vLLM: the dry run runs with their imports refused.
WITHOUT_RAY = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("ray", "mlflow", "vllm"):
            raise ImportError(f"{name}: not on the GPU machine")
sys.meta_path.insert(0, Refuse())
from benchmarks import gpu_kit
sys.exit(gpu_kit.main(sys.argv[1:]))
"""


def test_dry_run_every_section_gives_finite_positive_figures(tmp_path):
    results = REPO / "docs" / "results" / "gpu.md"
    before = results.stat().st_mtime_ns if results.exists() else None
    t = time.time()
    proc = subprocess.run([sys.executable, "-c", WITHOUT_RAY, "--dry-run", "--isolate", "inline",
                           "--out", str(tmp_path)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.time() - t < 240
    r = json.loads((tmp_path / "gpu.json").read_text())
    assert r["mode"] == "dry-run" and r["status"] == "ok"
    assert {n: s["status"] for n, s in r["sections"].items()} == dict.fromkeys(gpu_kit.ORDER, "ok")
    s, plan = r["summary"], r["plan"]

    def pos(x):
        return isinstance(x, (int, float)) and math.isfinite(x) and x > 0

    assert pos(s["copy_bandwidth_bytes_per_s"])
    assert sorted(s["rollout"], key=int) == ["2", "4"]
    steps = r["sections"]["rollout"]["steps"]
    for b, v in s["rollout"].items():
        step = steps[f"batch_{b}"]
        assert step["generated_tokens"] == int(b) * plan["new_tokens"]  # forced full length
        assert all(pos(v[k]) for k in ("decode_tokens_per_s", "bound_tokens_per_s", "end_to_end_tokens_per_s"))
        assert 0 < v["share_of_bound"] < 1  # a measured rate above the bound = a formula bug
        want = km.mean_decode_bytes(r["model"]["decode_weight_bytes"], km.TINY, int(b),
                                    v["prompt_tokens"], plan["new_tokens"], 2)
        assert v["bytes_per_decode_step"] == pytest.approx(want)
        assert v["prompt_tokens"] > plan["prompt_tokens"] + km.TINY.mm_tokens_per_image  # text + image
    for stage in ("zero2", "zero3"):
        v = s["learner"][stage]
        assert v["steady"] and pos(v["step_seconds"]) and pos(v["tokens_per_s"]) and pos(v["peak_rss_gib"])
        assert (v["sequences"], v["seq_len"]) == (plan["learner_seqs"], plan["learner_seq_len"])
        w = s["weight_sync"][stage]
        assert w["via_host_weights_match"] and w["on_device_weights_match"] and pos(w["bytes"])
    assert s["correctness"] == {"greedy_cpu_vs_device": True, "fairgrpo_step_moves_weights": True}
    fg = r["sections"]["correctness"]["steps"]["fairgrpo_step"]
    assert fg["tensors_moved"] > 0 and fg["advantage_abs_sum"] > 0 and fg["estimator"] == "fair_grpo"
    md = (tmp_path / "gpu.md").read_text()
    assert "Dry run" in md and "| 4 |" in md
    after = results.stat().st_mtime_ns if results.exists() else None
    assert after == before  # docs/results/gpu.md untouched


def test_section_process_runs_and_one_over_its_limit_is_killed(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_kit", "--dry-run", "--sections",
                           "rollout", "--batches", "2", "--out", str(tmp_path)], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((tmp_path / "gpu.json").read_text())
    assert r["isolate"] == "process" and r["sections"]["rollout"]["status"] == "ok"
    assert r["sections"]["rollout"]["env"]["device"] == "cpu"  # it ran in the child

    _, plan = gpu_kit.parse(["--dry-run", "--out", str(tmp_path)])
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(plan.to_json())
    t = time.time()
    rec = gpu_kit.run_process("rollout", plan_path, tmp_path / "killed.json", timeout=1.5)
    assert time.time() - t < 30
    assert rec["status"] == "timeout" and "killed after" in rec["error"]


def test_a_failing_section_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    for k, v in gpu_kit.section_env("dry-run").items():
        monkeypatch.setenv(k, v)  # main() sets them; restored after the test
    ran = []

    def ok(plan, rec, workdir):
        ran.append(rec.data["section"])
        with rec.step("figure") as out:
            out["value"] = 1.0

    def boom(plan, rec, workdir):
        ran.append(rec.data["section"])
        raise RuntimeError("planted failure")

    monkeypatch.setattr(ks, "device_info", lambda device: {"device": device})
    monkeypatch.setattr(ks, "SECTIONS", {"correctness": ok, "rollout": boom,
                                         "learner-zero2": ok, "learner-zero3": ok})
    rc = gpu_kit.main(["--dry-run", "--isolate", "inline", "--out", str(tmp_path)])
    assert rc == 1 and ran == gpu_kit.ORDER
    r = json.loads((tmp_path / "gpu.json").read_text())
    assert r["failed_sections"] == ["rollout"]
    assert "planted failure" in r["sections"]["rollout"]["steps"]["section"]["error"]
    assert [r["sections"][n]["status"] for n in gpu_kit.ORDER] == ["ok", "failed", "ok", "ok"]
    assert "planted failure" in (tmp_path / "gpu.md").read_text()


def test_a_step_that_would_overrun_is_skipped_and_says_so(tmp_path):
    rec = ks.Recorder("rollout", tmp_path / "r.json", deadline=time.time() + 5)
    with rec.step("cheap", estimate_s=1) as out:
        out["x"] = 1
    with rec.step("dear", estimate_s=60) as out:
        assert out is None
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["steps"]["cheap"]["status"] == "ok"
    assert saved["steps"]["dear"]["status"] == "skipped" and "would overrun" in saved["steps"]["dear"]["reason"]


@pytest.mark.parametrize("argv, flag", [
    (["--dry-run", "--batches", "0"], "--batches"),
    (["--dry-run", "--batches", "8,x"], "--batches"),
    (["--dry-run", "--sections", "rollout,warp"], "--sections"),
    (["--dry-run", "--new-tokens", "1"], "--new-tokens"),
    (["--dry-run", "--budget-s", "-3"], "--budget-s"),
    (["--dry-run", "--out", "docs/results"], "--out"),
    (["--dry-run", "--isolate", "thread"], "--isolate"),
    (["--dry-run", "--bogus"], "--bogus"),
])
def test_bad_flags_exit_2_naming_the_flag(argv, flag, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exc:
        gpu_kit.main(argv)
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_wheel_limit_check():
    from benchmarks.gpu_wheels import check_limit

    fits, report = check_limit({"a.whl": 40 * 2**20, "b.whl": 20 * 2**20}, 3 * 2**20)
    assert fits and "63.00 MiB" in report
    fits, report = check_limit({"a.whl": 40 * 2**20, "b.whl": 20 * 2**20}, 5 * 2**20)
    assert not fits and "OVER" in report
