"""Job run by tests/cluster/test_fake_cluster.py with ``ray job submit --working-dir .``.

On the fake multi-node cluster (clusters/local.yaml) it (1) runs one task pinned to each
alive node, each importing this repo's ``platform`` package from the job's working dir, and
(2) reserves dedicated rollout/learner "GPUs" with platform.clinical.placement and reports
where each actor landed. Prints one line ``RESULT {json}`` for the test to check.
"""

from __future__ import annotations

import json
import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from platform.clinical import placement
from platform.cluster import init_ray


@ray.remote(num_cpus=0)
def where() -> dict:
    import platform as p  # must be the repo's package, shipped with --working-dir

    return {"node_id": ray.get_runtime_context().get_node_id(), "platform_file": p.__file__,
            "has_path": hasattr(p, "__path__"), "system": p.system()}


@ray.remote(num_cpus=0)
class Probe:
    def report(self) -> dict:
        return placement.device_report()


def main() -> int:
    init_ray()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    tasks = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                           ).remote() for n in nodes]
    per_node = ray.get(tasks, timeout=120)
    cfg = placement.PlacementConfig(num_engines=1, num_learners=1, strategy="STRICT_SPREAD",
                                    ready_timeout_s=120)
    plc = placement.reserve(cfg, name="fake-cluster-job")
    engine = Probe.options(**plc.engine_options(0)).remote()
    learner = Probe.options(**plc.learner_options(0)).remote()
    devices = {"engine": ray.get(engine.report.remote(), timeout=120),
               "learner": ray.get(learner.report.remote(), timeout=120)}
    plc.remove()
    too_many = None
    try:
        placement.reserve(placement.PlacementConfig(num_engines=8, num_learners=8), name="too-many")
    except Exception as exc:  # the UsageError text, checked by the test
        too_many = f"{type(exc).__name__}: {exc}"
    print("RESULT " + json.dumps({"nodes": per_node, "devices": devices,
                                  "cluster": ray.cluster_resources(), "too_many": too_many}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
