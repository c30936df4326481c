"""The rollout-backend registry: each backend's spec answers for it, and the driver only asks.

No Ray and no model here: specs, config validation, GPU counts, weight-sync choice, placement,
and a fake backend registered for one test to show that nothing outside a backend's own module
decides by its name.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path
from platform.clinical import backends
from platform.clinical.backends import BACKENDS, BackendSpec, spec
from platform.clinical.config import ClinicalConfig
from platform.clinical.generation import WorkerImpl

import pytest

from base.config import build
from base.errors import ConfigError, UsageError

CLINICAL = Path(__file__).resolve().parents[3] / "platform" / "clinical"
BACKEND_MODULES = {"hf_backend.py", "vllm_backend.py"}


def test_unknown_backend_names_the_field_and_the_allowed_values():
    with pytest.raises(ConfigError) as exc:
        build(ClinicalConfig, {"rollout": {"backend": "sglang"}})
    assert exc.value.field == "rollout.backend"
    assert "'sglang'; allowed: hf, vllm" in str(exc.value)
    assert isinstance(exc.value, UsageError)  # exit 2 from every CLI


@pytest.mark.parametrize("name, module", [("hf", "platform.clinical.hf_backend"),
                                          ("vllm", "platform.clinical.vllm_backend")])
def test_each_spec_lives_in_its_backend_module(name, module):
    s = spec(name)
    assert s.name == name and s.backend.__module__ == module and s.worker.__name__.endswith("WorkerImpl")


@pytest.mark.parametrize("rollout, gpus, broadcast", [
    ({"backend": "hf", "num_gpus": 0.5}, 0.5, False),
    ({"backend": "hf", "num_gpus": 0}, 0.0, False),
    ({"backend": "vllm", "num_gpus": 1, "vllm": {"tensor_parallel_size": 4}}, 4.0, True),
    ({"backend": "vllm", "num_gpus": 0}, 0.0, True),
])
def test_specs_gpu_counts_and_broadcast_support(rollout, gpus, broadcast):
    r = build(ClinicalConfig, {"rollout": rollout}).rollout
    s = spec(r.backend)
    assert s.gpus_per_worker(r) == gpus and s.supports_broadcast is broadcast


def test_specs_build_their_backend_arguments():
    import inspect
    from platform.clinical.models import cached_tiny_vlm

    tiny = str(cached_tiny_vlm())
    cfg = build(ClinicalConfig, {"seed": 3})
    hf = spec("hf").engine_kwargs(cfg, tiny, 3)
    assert hf == {"model_path": tiny, "dtype": "float32", "device": "cpu", "answer_letters": "ABC"}
    assert set(hf) <= set(inspect.signature(spec("hf").backend.__init__).parameters)
    # answer_only: on for the built-in model and models exported from it (its spec file), off
    # for any other model dir
    with_model = build(ClinicalConfig, {"model": {"path": "/m"}})
    assert spec("hf").engine_kwargs(with_model, "/m", 3)["answer_letters"] == ""


class FakeBackend:
    def __init__(self, model_path: str, n: int):
        self.model_path, self.n = model_path, n

    def generate(self, req):
        raise NotImplementedError

    def load_weights(self, named_tensors) -> None:
        self.loaded = list(named_tensors)


@pytest.fixture
def fake_backend():
    """A test-registered backend whose spec differs from both real ones in every answer."""
    calls: list[str] = []

    def validate(rollout):
        calls.append("validate")
        if rollout.num_workers > 3:
            raise ConfigError("rollout.num_workers", "fake backend: at most 3")

    fake = BackendSpec(
        name="fake", backend=FakeBackend, worker=WorkerImpl,
        engine_kwargs=lambda cfg, model_path, n: {"model_path": model_path, "n": n},
        supports_broadcast=True, tensor_parallel=lambda r: 3,
        tensor_parallel_field="rollout.fake.parallel", validate=validate,
        preflight=lambda cfg, path: calls.append(f"preflight {path}"),
        runtime_env=lambda env: {**(env or {}), "env_vars": {"FAKE": "1"}})
    BACKENDS.register("fake", fake)
    yield fake, calls
    BACKENDS._entries.pop("fake")
    BACKENDS._help.pop("fake", None)


def test_driver_side_code_asks_the_spec(fake_backend):
    from platform.clinical import placement
    from platform.clinical.weight_sync import sync_method

    fake, calls = fake_backend
    gpu = {"backend": "fake", "num_workers": 1, "num_gpus": 1}
    cfg = build(ClinicalConfig, {"rollout": gpu, "learner": {"num_learners": 1, "num_gpus": 1}})
    assert calls == ["validate"]
    with pytest.raises(ConfigError, match="at most 3"):
        build(ClinicalConfig, {"rollout": {"backend": "fake", "num_workers": 4}})
    # GPUs per worker: num_gpus x the spec's tensor parallelism, named in the capacity error
    assert placement.requested_gpus(cfg) == (3.0, 1.0)
    with pytest.raises(UsageError, match=r"x rollout\.fake\.parallel 3 = 3"):
        placement.check_gpu_capacity(cfg, {"GPU": 2.0})
    assert placement.placement_config(cfg).tensor_parallel_size == 3
    # broadcast support comes from the spec, not the name
    assert sync_method(cfg) == "broadcast-nccl"
    cpu = build(ClinicalConfig, {"rollout": {"backend": "fake", "weight_sync": "broadcast"}})
    assert sync_method(cpu) == "broadcast-gloo"
    BACKENDS._entries["fake"] = replace(fake, supports_broadcast=False)
    with pytest.raises(ConfigError, match="needs rollout.backend=vllm"):
        sync_method(cpu)
    # preflight runs the spec's checks
    backends.preflight(cfg, "/model")
    assert calls[-1] == "preflight /model"


def test_pool_and_worker_build_what_the_spec_names(fake_backend):
    from platform.clinical.rollout import RolloutPool

    worker = WorkerImpl("fake", {"model_path": "/m", "n": 2})  # the actor body, without Ray
    assert isinstance(worker.backend, FakeBackend) and worker.backend.n == 2
    assert worker.load_weights([("w", 1)], version=3) == 3 and worker.backend.loaded == [("w", 1)]
    pool = RolloutPool("fake", {}, num_cpus=0.5)
    assert pool._resources(0) == {"num_cpus": 0.5, "num_gpus": 0.0, "runtime_env": {"env_vars": {"FAKE": "1"}}}


def test_pipeline_asks_the_spec(fake_backend):
    """The driver's Pipeline runs the chosen spec's preflight and weight-sync support."""
    from platform.clinical.driver import Pipeline

    _, calls = fake_backend
    pipe = Pipeline(build(ClinicalConfig, {"rollout": {"backend": "fake", "weight_sync": "broadcast"}}))
    assert calls[-1] == f"preflight {pipe.model_path}" and pipe.sync_method == "broadcast-gloo"


def test_no_module_outside_a_backend_names_a_backend():
    """``backend == "vllm"`` style decisions live only in the backends' own modules."""
    names = set(BACKENDS.names())
    bad = []
    for path in sorted(CLINICAL.glob("*.py")):
        if path.name in BACKEND_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                consts = [c.value for c in [node.left, *node.comparators]
                          if isinstance(c, ast.Constant)]
                consts += [e.value for c in node.comparators if isinstance(c, (ast.Tuple, ast.List, ast.Set))
                           for e in c.elts if isinstance(e, ast.Constant)]
                if names & set(consts):
                    bad.append(f"{path.name}:{node.lineno}")
    assert not bad, f"compares with a backend name outside its module: {bad}"


@pytest.mark.parametrize("algorithm,withheld", [("fairgrpo-nd", True), ("fairgrpo", False)])
def test_the_nd_variant_never_shows_labels_to_the_estimator(algorithm, withheld):
    """fairgrpo-nd: every training prompt reaches the estimator as 'unknown' (latent groups
    for all); fairgrpo sees the rows' demographic keys. Evaluation labels are untouched."""
    from platform.clinical.driver import Pipeline, Step

    import numpy as np

    from algorithms.advantages import UNKNOWN

    cfg = build(ClinicalConfig, {"algorithm": algorithm})
    assert cfg.data.withhold_demographics is withheld
    pipe = Pipeline(cfg)
    seen = {}

    def recorder(rewards, prompt_index, meta, state, **kw):
        seen["groups"] = list(meta.group)
        return "result"

    pipe.estimator = recorder
    from platform.clinical.generation import GenerationResult

    idx = [0, 1, 2]
    result = GenerationResult(texts=[["A"]] * 3, token_ids=[[[1]]] * 3, logprobs=[[[0.0]]] * 3,
                              prompt_token_ids=[[1]] * 3, num_generated_tokens=3, seconds=0.0)
    step = Step(number=1, indices=idx, rows=[pipe.train_df.iloc[i].to_dict() for i in idx],
                groups=[pipe.train_groups[i] for i in idx], result=result, rewards=np.zeros(3))
    assert pipe.advantage(step) == "result"
    expected = [UNKNOWN] * 3 if withheld else step.groups
    assert seen["groups"] == expected and (withheld or UNKNOWN not in expected)
    assert len(set(pipe.eval_groups)) > 1  # evaluation still reports per-group metrics
