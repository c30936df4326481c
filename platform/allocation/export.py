"""An allocation policy as a folder a service can load without RLlib or Ray.

    <out>/rl_module/        the RLModule checkpoint (``RLModule.from_checkpoint(<out>/rl_module)``)
    <out>/policy.pt         TorchScript of the deterministic policy: float32 observations
                            (batch, *obs shape) -> int64 actions (batch,), the argmax of the
                            action logits, exactly the greedy action of the evaluation
    <out>/equirl_policy.json  scenario, observation shape, number of actions, group names,
                            run id, iteration, and how to call it

TorchScript rather than ONNX: it needs only torch (a dependency already), keeps the module's
float32 arithmetic bit for bit, and ``torch.jit.load`` serves it from C++ or Python. The
folder is written under a temporary name and renamed into place.

``platform.train`` allocation runs write it at their end (``<checkpoint root>/policy``, tag
``equirl.model_dir``); ``python -m platform.export --run ID --out DIR`` writes it from a run's
latest checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

POLICY_FILE = "policy.pt"
META_FILE = "equirl_policy.json"


def _greedy_script(module):
    import torch
    from ray.rllib.core.columns import Columns

    class Greedy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            out = self.inner.forward_inference({Columns.OBS: obs})
            return out[Columns.ACTION_DIST_INPUTS].argmax(dim=-1)

    example = torch.as_tensor(module.observation_space.sample()[None], dtype=torch.float32)
    with torch.no_grad():
        return torch.jit.trace(Greedy(module).eval(), example, check_trace=False)


def export_policy(checkpoint: str | Path, out: str | Path, meta: dict[str, Any]) -> Path:
    """Write the export folder of the RLModule in ``checkpoint`` (an allocation checkpoint
    folder or its module folder) to ``out``; return ``out``."""
    from platform.allocation.evaluate_cli import module_dir

    from gymnasium.spaces import Discrete
    from ray.rllib.core.rl_module.rl_module import RLModule

    src = module_dir(Path(checkpoint))
    module = RLModule.from_checkpoint(str(src))
    if not isinstance(module.action_space, Discrete):
        raise ValueError(f"export: a Discrete action space is needed, got {module.action_space}")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp / "rl_module")
    module.eval()
    _greedy_script(module).save(str(tmp / POLICY_FILE))
    info = {**meta, "observation_shape": list(module.observation_space.shape),
            "n_actions": int(module.action_space.n),
            "usage": "torch.jit.load('policy.pt')(obs: float32 (batch, *observation_shape)) "
                     "-> int64 actions (batch,): the greedy action"}
    (tmp / META_FILE).write_text(json.dumps(info, indent=1, sort_keys=True, default=str))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
