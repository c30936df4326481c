"""Placement groups for dedicated rollout/learner devices, and the checks that run before any
GPU is reserved (too many GPUs, vllm missing, unsupported head size), on the session Ray."""

from __future__ import annotations

import json
import sys
from platform.clinical import placement
from platform.clinical.placement import PlacementConfig, check_capacity, plan

import pytest

from base.errors import ConfigError, UsageError


def test_plan_dedicated_bundles_are_disjoint_per_role():
    cfg = PlacementConfig(num_engines=2, tensor_parallel_size=2, num_learners=3, gpus_per_learner=1)
    p = plan(cfg)
    assert p.rollout_bundles == [{"CPU": 1.0, "GPU": 1.0}] * 4
    assert p.learner_bundles == [{"CPU": 1.0, "GPU": 1.0}] * 3
    assert p.engine_bundles == [[0, 1], [2, 3]]
    assert (p.gpus_rollout, p.gpus_learners, p.total_gpus) == (4, 3, 7)


def test_plan_colocated_shares_one_gpu_per_pair():
    p = plan(PlacementConfig(num_engines=2, num_learners=2, colocate=True))
    assert p.colocated and p.total_gpus == 2 and p.actor_gpu_fraction == 0.5
    assert p.rollout_bundles is p.learner_bundles and p.engine_bundles == [[0], [1]]


def test_too_many_gpus_is_refused_before_reserving():
    cfg = PlacementConfig(num_engines=2, tensor_parallel_size=2, num_learners=2)
    with pytest.raises(UsageError) as err:
        check_capacity(cfg, plan(cfg), {"CPU": 64.0, "GPU": 4.0})
    msg = str(err.value)
    assert "asked for 6 GPUs" in msg and "has 4" in msg
    assert "placement.num_engines 2" in msg and "placement.tensor_parallel_size 2" in msg
    check_capacity(cfg, plan(cfg), {"CPU": 64.0, "GPU": 6.0})  # exactly enough: fine
    with pytest.raises(UsageError, match="placement.use_gpus=false"):
        check_capacity(cfg, plan(cfg), {"CPU": 2.0})


@pytest.mark.parametrize("data, field", [
    ({"num_engines": 0}, "placement.num_engines"),
    ({"colocate": True, "num_engines": 2, "num_learners": 1}, "placement.colocate"),
    ({"use_gpus": False, "tensor_parallel_size": 2}, "placement.tensor_parallel_size"),
    ({"strategy": "RANDOM"}, "placement.strategy"),
    ({"gpus": 3}, "placement.gpus"),
])
def test_bad_placement_fields_name_the_field(data, field):
    with pytest.raises(ConfigError) as err:
        placement.from_dict(data)
    assert err.value.field == field


@pytest.mark.timeout(120)
def test_reserve_on_cpu_places_each_role_in_its_bundle(ray_session):
    ray = ray_session

    @ray.remote(num_cpus=0)
    class Probe:
        def where(self):
            from ray.util import get_current_placement_group

            ctx = ray.get_runtime_context()
            return ctx.get_placement_group_id(), get_current_placement_group() is not None

    cfg = PlacementConfig(num_engines=1, num_learners=1, use_gpus=False, cpus_per_bundle=0.5,
                          ready_timeout_s=60)
    plc = placement.reserve(cfg, name="test-cpu")
    try:
        engine = Probe.options(**plc.engine_options(0)).remote()
        learner = Probe.options(**plc.learner_options(0)).remote()
        (e_pg, e_in), (l_pg, l_in) = ray.get([engine.where.remote(), learner.where.remote()],
                                             timeout=60)
        assert e_in and l_in
        assert e_pg == plc.rollout_group.id.hex() and l_pg == plc.learner_group.id.hex()
        assert e_pg != l_pg
        with pytest.raises(UsageError, match="CPUs"):
            placement.reserve(PlacementConfig(num_engines=8, num_learners=8, use_gpus=False),
                              name="too-big")
    finally:
        plc.remove()


def test_vllm_not_installed_is_a_usage_error(tmp_path):
    from platform.clinical import vllm_backend

    # The engines' interpreter (EQUIRL_VLLM_PYTHON) lacks vllm: checked in a subprocess.
    with pytest.raises(UsageError) as err:
        vllm_backend.check_vllm_installed(python=str(tmp_path / "no-python"))
    assert "rollout.backend" in str(err.value) and "make install-vllm" in str(err.value)
    # This interpreter: the main environment never has vllm (it lives in .venv-vllm).
    if not vllm_backend.vllm_installed():
        with pytest.raises(UsageError, match=sys.executable.replace(".", r"\.")):
            vllm_backend.check_vllm_installed()


def _model_dir(tmp_path, **cfg):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_head_size_the_cpu_backend_lacks_is_refused(tmp_path):
    from platform.clinical.vllm_backend import CPU_HEAD_SIZES, check_head_size, head_size

    odd = _model_dir(tmp_path, hidden_size=144, num_attention_heads=3)  # head size 48
    assert head_size(odd) == 48 and 48 not in CPU_HEAD_SIZES
    with pytest.raises(UsageError, match="head size 48") as err:
        check_head_size(odd, "cpu")
    assert "rollout.model_path" in str(err.value) and "64" in str(err.value)
    check_head_size(odd, "cuda")  # GPU backends handle it: no error
    vlm = _model_dir(tmp_path, text_config={"head_dim": 256, "hidden_size": 640})
    check_head_size(vlm, "cpu")
    with pytest.raises(UsageError, match="cannot read"):
        check_head_size(tmp_path / "missing", "cpu")


def test_vllm_backend_constructor_checks_before_starting_an_engine(tmp_path):
    """The constructor runs the preflight first: nothing is allocated on bad input."""
    from platform.clinical import vllm_backend
    from platform.clinical.backends import BACKENDS

    if vllm_backend.vllm_installed():
        pytest.skip("vllm installed here: covered by tests/vllm")
    with pytest.raises(UsageError, match="vllm is not installed"):
        BACKENDS.get("vllm").backend(model_path=str(_model_dir(tmp_path, head_dim=64)),
                                     device="cpu")


@pytest.mark.timeout(60)
def test_wait_named_names_the_stuck_worker(ray_session):
    from platform.clinical.weight_sync import WeightSyncTimeout, wait_named

    ray = ray_session

    @ray.remote(num_cpus=0)
    class Worker:
        def recv(self, seconds):
            import time

            time.sleep(seconds)
            return seconds

    fast, slow = Worker.remote(), Worker.remote()
    assert wait_named({"a": fast.recv.remote(0)}, 30, "noop") == {"a": 0}
    with pytest.raises(WeightSyncTimeout) as err:
        wait_named({"rollout-engine-0": fast.recv.remote(0), "rollout-engine-1": slow.recv.remote(30)},
                   2.0, "weight broadcast")
    assert err.value.stuck == ["rollout-engine-1"]
    assert "rollout-engine-1" in str(err.value) and "rollout-engine-0" not in str(err.value)
    ray.kill(slow)
