"""Advantage estimators for GRPO-family training, behind one registry, and fairness weightings
that compose with any of them.

    from algorithms.advantages import ESTIMATORS, get_estimator, make_estimator, PromptMeta
    est = get_estimator("fair_grpo", eps=1e-6)       # ConfigError names a bad field
    est = make_estimator("rloo", fairness="fairgrpo") # any base under a fairness weighting
    state = est.init_state()                          # .state_dict() / .load_state_dict(d)
    res = est(rewards, prompt_index, meta, state, lengths=None)   # state updated in place
    res.advantages  # float64 (n_completions,);  res.diagnostics: dict[str, float]

Inputs: ``rewards`` float (n,), ``prompt_index`` int (n,) in [0, P), ``meta`` a
:class:`PromptMeta` whose fields have length P, ``lengths`` optional float (n,) completion
token counts. Registered estimators (``ESTIMATORS``) and papers:

- ``grpo``          DeepSeekMath GRPO, arXiv 2402.03300           (core.py)
- ``dr_grpo``       Dr. GRPO (no std normalisation), arXiv 2503.20783 (core.py)
- ``rloo``          REINFORCE leave-one-out, arXiv 2402.14740     (core.py)
- ``reinforce_pp``  REINFORCE++, arXiv 2501.03262                 (core.py)
- ``fair_grpo``     FairGRPO = grpo + fairgrpo weighting, arXiv 2510.19893 (fair.py)
- ``fair_grpo_nd``  FairGRPO with k-means latent groups, same paper (fair.py, discovery.py)
- ``group_dro``     GRPO + GroupDRO weights, arXiv 1911.08731     (dro.py)

Fairness weightings (``WEIGHTINGS``, weighting.py): ``fairgrpo``, ``fairgrpo_nd``,
``group_dro``. Reward shaping before an estimator: ``shaping.overlong_penalty`` (DAPO).
sklearn is imported only when ``fairgrpo_nd`` actually clusters.
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
from algorithms.advantages.shaping import overlong_penalty
from algorithms.advantages.weighting import (
    WEIGHTINGS,
    Weighted,
    base_estimators,
    make_estimator,
)

__all__ = [
    "ESTIMATORS", "UNKNOWN", "WEIGHTINGS", "AdvantageInputError", "AdvantageResult", "DROState",
    "Estimator", "FairHistory", "NullState", "PromptMeta", "Weighted", "base_estimators",
    "config_fields", "get_estimator", "is_unknown", "make_estimator", "overlong_penalty",
]
