"""Advantage estimators for GRPO-family training, behind one registry.

    from algorithms.advantages import ESTIMATORS, get_estimator, PromptMeta, AdvantageResult
    est = get_estimator("fair_grpo", eps=1e-6)       # ConfigError names a bad field
    state = est.init_state()                          # .state_dict() / .load_state_dict(d)
    res = est(rewards, prompt_index, meta, state)     # state updated in place
    res.advantages  # float64 (n_completions,);  res.diagnostics: dict[str, float]

Inputs: ``rewards`` float (n,), ``prompt_index`` int (n,) in [0, P), ``meta`` a
:class:`PromptMeta` whose fields have length P. Registered names and papers:

- ``grpo``          DeepSeekMath GRPO, arXiv 2402.03300           (core.py)
- ``rloo``          REINFORCE leave-one-out, arXiv 2402.14740     (core.py)
- ``reinforce_pp``  REINFORCE++, arXiv 2501.03262                 (core.py)
- ``fair_grpo``     FairGRPO, arXiv 2510.19893                    (fair.py)
- ``fair_grpo_nd``  FairGRPO with k-means latent groups, same paper (fair.py, discovery.py)
- ``group_dro``     GRPO + GroupDRO weights, arXiv 1911.08731     (dro.py)

sklearn is imported only when ``fair_grpo_nd`` actually clusters.
"""

from algorithms.advantages import dro as _dro  # noqa: F401  (registers group_dro)
from algorithms.advantages import fair as _fair  # noqa: F401  (registers fair_grpo, fair_grpo_nd)
from algorithms.advantages.core import (
    ESTIMATORS,
    UNKNOWN,
    AdvantageInputError,
    AdvantageResult,
    Estimator,
    NullState,
    PromptMeta,
    config_fields,
    get_estimator,
    is_unknown,
)
from algorithms.advantages.dro import DROState
from algorithms.advantages.fair import FairHistory

__all__ = [
    "ESTIMATORS", "UNKNOWN", "AdvantageInputError", "AdvantageResult", "DROState", "Estimator",
    "FairHistory", "NullState", "PromptMeta", "config_fields", "get_estimator", "is_unknown",
]
