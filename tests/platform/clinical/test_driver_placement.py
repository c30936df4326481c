"""The clinical driver's GPU placement (issue #7, "dedicated GPUs").

``placement.placement_config`` maps the training config to ``placement.PlacementConfig`` (pure), and
``placement.placement_for`` reserves it and returns the Ray options the driver creates rollout workers
and learners with. The scheduling test runs in its own Ray (a subprocess with 2 *declared* GPUs,
since the shared ``ray_session`` has none) and places two tiny probe actors with exactly those
options: they must report disjoint GPU ids when dedicated and the same id when colocated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from platform.clinical.config import ClinicalConfig

import pytest

from base.config import build
from base.errors import ConfigError, UsageError


def cfg_of(rollout: dict | None = None, learner: dict | None = None, **top) -> ClinicalConfig:
    return build(ClinicalConfig, {"rollout": {"num_workers": 1, **(rollout or {})},
                                  "learner": {"num_learners": 1, **(learner or {})}, **top})


def test_cpu_config_reserves_nothing():
    from platform.clinical.placement import placement_config, placement_for

    cfg = build(ClinicalConfig, {})
    assert placement_config(cfg) is None
    got = placement_for(cfg)  # no Ray needed: nothing is reserved
    assert (got.placement, got.rollout_options, got.learner_options) == (None, None, None)


def test_dedicated_and_colocated_layouts():
    from platform.clinical.placement import placement_config, plan

    d = placement_config(cfg_of({"num_workers": 2, "num_gpus": 1}, {"num_learners": 2, "num_gpus": 1}))
    p = plan(d)
    assert (d.colocate, d.num_engines, d.num_learners, p.total_gpus) == (False, 2, 2, 4)
    # learners on GPUs, engines on CPU bundles
    d = placement_config(cfg_of({"num_gpus": 0}, {"num_gpus": 1}))
    assert (plan(d).gpus_rollout, plan(d).gpus_learners) == (0, 1)
    assert "GPU" not in plan(d).rollout_bundles[0]
    c = placement_config(cfg_of({"num_gpus": 0.5}, {"num_gpus": 0.5}, placement="colocated"))
    assert (c.colocate, plan(c).total_gpus) == (True, 1)
    v = placement_config(cfg_of({"backend": "vllm", "num_gpus": 1, "vllm": {"tensor_parallel_size": 2}},
                                {"num_gpus": 1}))
    assert plan(v).engine_bundles == [[0, 1]] and plan(v).total_gpus == 3


@pytest.mark.parametrize("kw, field, text", [
    ({"rollout": {"num_gpus": 0.5}, "learner": {"num_gpus": 1}}, "rollout.num_gpus", "placement=dedicated"),
    ({"rollout": {"num_gpus": 1}, "learner": {"num_gpus": 0.5}}, "learner.num_gpus", "whole GPUs"),
    ({"rollout": {"num_gpus": 1}, "learner": {"num_gpus": 1}, "placement": "colocated"},
     "rollout.num_gpus", "0.5"),
    ({"rollout": {"num_gpus": 0.5, "num_workers": 2}, "learner": {"num_gpus": 0.5}, "placement": "colocated"},
     "rollout.num_workers", "learner.num_learners"),
])
def test_layout_errors_name_the_field(kw, field, text):
    from platform.clinical.placement import placement_config

    with pytest.raises(ConfigError, match=text) as err:
        placement_config(cfg_of(kw.get("rollout"), kw.get("learner"),
                                **{k: v for k, v in kw.items() if k not in ("rollout", "learner")}))
    assert err.value.field == field


def test_placement_field_allowed_values():
    with pytest.raises(UsageError, match="placement") as err:
        build(ClinicalConfig, {"placement": "spread"})
    assert "dedicated" in str(err.value) and "colocated" in str(err.value)


PROBE = r"""
import json, ray
from platform import cluster
from platform.clinical.config import ClinicalConfig
from platform.clinical.placement import placement_for
from base.config import build
from base.errors import UsageError

ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
         runtime_env=cluster.worker_runtime_env())

@ray.remote
class Probe:
    def where(self):
        return [str(g) for g in ray.get_gpu_ids()]

def run(placement, rollout_gpus, learner_gpus):
    cfg = build(ClinicalConfig, {"placement": placement,
        "rollout": {"num_workers": 1, "num_gpus": rollout_gpus},
        "learner": {"num_learners": 1, "num_gpus": learner_gpus}})
    got = placement_for(cfg, name=f"probe-{placement}")
    engine = Probe.options(**{k: v for k, v in got.rollout_options[0].items() if v is not None}).remote()
    learner = Probe.options(**got.learner_options[0]).remote()
    ids = {"engine": ray.get(engine.where.remote(), timeout=60),
           "learner": ray.get(learner.where.remote(), timeout=60)}
    for a in (engine, learner):
        ray.kill(a, no_restart=True)
    got.remove()
    return ids

out = {"dedicated": run("dedicated", 1, 1), "colocated": run("colocated", 0.5, 0.5)}
try:
    run("dedicated", 1, 2)
    out["too_many"] = "reserved"
except UsageError as exc:
    out["too_many"] = str(exc)
out["states"] = sorted({g["state"] for g in ray.util.placement_group_table().values()})
print("RESULT " + json.dumps(out))
"""


@pytest.mark.timeout(120)
def test_driver_options_place_actors_on_disjoint_or_shared_gpus(run_env, repo_root):
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=repo_root, capture_output=True, text=True,
                          env=run_env(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled"), check=False,
                          timeout=110)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(lines[-1][len("RESULT "):])
    ded, col = out["dedicated"], out["colocated"]
    assert len(ded["engine"]) == 1 and len(ded["learner"]) == 1
    assert set(ded["engine"]).isdisjoint(ded["learner"]), ded
    assert len(col["engine"]) == 1 and col["engine"] == col["learner"], col
    assert "asked for 3 GPUs" in out["too_many"] and "has 2" in out["too_many"], out["too_many"]
    assert out["states"] == ["REMOVED"], out["states"]
