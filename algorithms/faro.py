"""Faro: fair reward models from preference pairs, trained as a proxy-Lagrangian game.

Paper: Faro, arXiv 2602.07799 — a Bradley-Terry reward model r_θ trained under demographic
parity, equalized odds or counterfactual fairness constraints with slack ε, solved as a
proxy-Lagrangian descent-ascent game (Cotter et al., 2019): the model player descends on
``BT loss + Σ_k λ_k (surrogate_k - ε)`` (smooth surrogates), the multiplier player ascends on
the TRUE (hard, non-differentiable) violations, ``λ_k <- max(0, λ_k + η (violation_k - ε))``.

Constraints (reward model over items x with group g(x) and an outcome label y(x)):

* ``dp`` — for each group k (one-vs-rest; one constraint when there are two groups):
  ``|P(r(a) > r(b) | a in k, b not in k) - 1/2| <= ε`` over all cross-group item pairs: the
  model does not systematically rank one group's items above the others'. Surrogate: the
  indicator replaced by ``sigmoid((r(a) - r(b)) / τ)``.
* ``eo`` — the same, within each outcome label y in {0, 1} (items of equal true quality are
  ranked independently of group): 2 x (groups) constraints.
* ``cf`` — counterfactual (attribute-flip) fairness: ``mean |r(x) - r(x with the group's
  one-hot columns moved to another group)| <= ε`` (reward units). This is the attribute-flip
  test, not a causal model: proxies of the group in other features are not flipped.

Calibration: *ordinal* — ranking accuracy and AUC of ``r(a) - r(b)`` on held-out pairs;
*cardinal* — one temperature ``s > 0`` fitted on held-out calibration pairs so that
``sigmoid(s (r(a) - r(b)))`` matches observed preference frequencies (expected calibration
error reported before and after). Calibrated rewards are ``s (r(x) - mean r(train items))``.

Preference data: :func:`outcome_preferences` over arrays that
``envs.cohorts.preference_items`` builds from a real cohort (ACTG175: each item is a patient
with the treatment arm they received; a pair prefers the decision whose patient stayed free
of AIDS events/death) or :func:`synthetic_preferences` (clinical-answer items rated by a demographically
biased annotator, the features :func:`featurize_answers` computes from GRPO completions).
:func:`make_faro_reward` is the reward-registry factory (``REWARDS.register("faro",
"algorithms.faro:make_faro_reward")`` in ``envs/clinical/rewards.py``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from base.errors import UsageError, require

Constraint = Literal["dp", "eo", "cf"]
CONSTRAINTS: tuple[str, ...] = ("dp", "eo", "cf")


# ---------------------------------------------------------------------------------- data
@dataclass
class PreferenceData:
    """Items and preference pairs over them.

    x: (N, D) float32 raw item features; groups: (N,) int codes of the sensitive attribute;
    labels: (N,) int in {0, 1}, the items' true outcome (for ``eo``); pairs: (M, 2) int item
    indices (a, b); prefs: (M,) float32, 1.0 when a is preferred to b; cf_columns: the columns
    holding the group's one-hot encoding (flipped for ``cf``), in group-code order.
    """

    x: np.ndarray
    groups: np.ndarray
    labels: np.ndarray
    pairs: np.ndarray
    prefs: np.ndarray
    cf_columns: tuple[int, ...]
    feature_names: tuple[str, ...]
    group_names: tuple[str, ...]

    def subset_items(self, items: np.ndarray) -> PreferenceData:
        """The items ``items`` and the pairs with both ends among them (re-indexed)."""
        where = np.full(len(self.x), -1)
        where[items] = np.arange(len(items))
        keep = (where[self.pairs] >= 0).all(1)
        return PreferenceData(self.x[items], self.groups[items], self.labels[items],
                              where[self.pairs[keep]], self.prefs[keep], self.cf_columns,
                              self.feature_names, self.group_names)


ANSWER_FEATURES = ("correct", "formatted", "sex_F", "sex_M", "age")


def synthetic_preferences(n_items: int = 1500, n_pairs: int = 15000, bias: float = 1.0,
                          seed: int = 0) -> PreferenceData:
    """Clinical-answer items rated by an annotator biased towards male patients.

    Item features are :data:`ANSWER_FEATURES` (answer correct, answer well formatted, patient
    sex one-hot, age/100). Correctness is slightly more frequent for M (0.55 vs 0.45), so
    ``dp`` and ``eo`` differ. The annotator prefers a over b with probability
    ``sigmoid(u(a) - u(b))``, ``u = 2 correct + 0.5 formatted + bias * male``.
    Labels (for ``eo``) are ``correct``. Groups: 0 = F, 1 = M.
    """
    rng = np.random.default_rng(seed)
    male = rng.integers(0, 2, n_items)
    correct = (rng.random(n_items) < np.where(male == 1, 0.55, 0.45)).astype(int)
    formatted = (rng.random(n_items) < 0.8).astype(int)
    age = rng.uniform(18, 90, n_items) / 100.0
    x = np.stack([correct, formatted, 1 - male, male, age], 1).astype(np.float32)
    utility = 2.0 * correct + 0.5 * formatted + bias * male
    pairs = _random_pairs(rng, n_items, n_pairs)
    p = 1 / (1 + np.exp(-(utility[pairs[:, 0]] - utility[pairs[:, 1]])))
    prefs = (rng.random(n_pairs) < p).astype(np.float32)
    return PreferenceData(x, male.astype(int), correct, pairs, prefs, (2, 3),
                          ANSWER_FEATURES, ("F", "M"))


def outcome_preferences(x: np.ndarray, groups: np.ndarray, good: np.ndarray,
                        cf_columns: Sequence[int], feature_names: Sequence[str],
                        group_names: Sequence[str], n_pairs: int = 20000, seed: int = 0
                        ) -> PreferenceData:
    """Outcome-based preferences between items (patients' treatment decisions).

    x: (N, D) item features (the group's one-hot block at ``cf_columns``); groups: (N,) int
    group codes; good: (N,) int, 1 when the item's decision was followed by a good outcome
    (the labels for ``eo``). A pair (a, b) draws one good and one bad item and prefers the
    good one; pairs with equal outcomes are not drawn; the orientation is random, so the
    preference labels are balanced. ``envs.cohorts.preference_items`` builds the arrays
    from a real cohort.
    """
    good = np.asarray(good).astype(int)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(good == 1), np.flatnonzero(good == 0)
    a, b = rng.choice(pos, n_pairs), rng.choice(neg, n_pairs)
    flip = rng.random(n_pairs) < 0.5  # random orientation: labels are balanced
    pairs = np.stack([np.where(flip, b, a), np.where(flip, a, b)], 1)
    prefs = (~flip).astype(np.float32)
    return PreferenceData(np.asarray(x).astype(np.float32), np.asarray(groups).astype(int), good,
                          pairs, prefs, tuple(cf_columns), tuple(feature_names),
                          tuple(group_names))


def _random_pairs(rng: np.random.Generator, n_items: int, n_pairs: int) -> np.ndarray:
    a = rng.integers(0, n_items, n_pairs)
    b = (a + rng.integers(1, n_items, n_pairs)) % n_items  # never a == b
    return np.stack([a, b], 1)


# ---------------------------------------------------------------------------------- model
class RewardModel(torch.nn.Module):
    """r(x): standardise -> MLP -> scalar. ``x`` shape (N, D) raw features -> (N,)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, hidden: int = 32):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.where(std > 0, std, 1.0), dtype=torch.float32))
        d = len(mean)
        self.net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)


def bt_loss(r_a: torch.Tensor, r_b: torch.Tensor, prefs: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry NLL: ``-[p log σ(r_a - r_b) + (1 - p) log σ(r_b - r_a)]``, shapes (M,)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(r_a - r_b, prefs)


# ---------------------------------------------------------------------------------- constraints
def _cross_group_win(r: torch.Tensor, groups: torch.Tensor, k: int, tau: float | None):
    """P(r(a) > r(b)) - 1/2 over a in group k, b not in k; hard (ties 1/2) if tau is None."""
    a, b = r[groups == k], r[groups != k]
    if len(a) == 0 or len(b) == 0:
        return r.new_zeros(())
    d = a[:, None] - b[None, :]
    win = (d > 0).float() + 0.5 * (d == 0).float() if tau is None else torch.sigmoid(d / tau)
    return win.mean() - 0.5


def _group_list(groups: torch.Tensor) -> list[int]:
    present = sorted(int(k) for k in torch.unique(groups))
    return present[1:] if len(present) == 2 else present


def dp_terms(model, x, groups, labels, cf_columns, tau):
    """[(name, true violation, surrogate)] for demographic parity (one per group k)."""
    r = model(x)
    return [(f"dp/{k}", _cross_group_win(r.detach(), groups, k, None).abs(),
             _cross_group_win(r, groups, k, tau).abs()) for k in _group_list(groups)]


def eo_terms(model, x, groups, labels, cf_columns, tau):
    """Equalized odds: the DP statistic within each outcome label (2 x groups constraints)."""
    r = model(x)
    out = []
    for y in (0, 1):
        m = labels == y
        for k in _group_list(groups[m]) if m.any() else []:
            out.append((f"eo/y{y}/{k}", _cross_group_win(r[m].detach(), groups[m], k, None).abs(),
                        _cross_group_win(r[m], groups[m], k, tau).abs()))
    return out


def counterfactual(x: torch.Tensor, cf_columns: Sequence[int], shift: int = 1) -> torch.Tensor:
    """``x`` with its group one-hot block rolled by ``shift`` (binary groups: swapped)."""
    cols = list(cf_columns)
    out = x.clone()
    out[:, cols] = torch.roll(x[:, cols], shifts=shift, dims=1)
    return out


def cf_terms(model, x, groups, labels, cf_columns, tau):
    """Counterfactual: mean |r(x) - r(x_flipped)| over every other group (reward units)."""
    r = model(x)
    gaps = torch.stack([(r - model(counterfactual(x, cf_columns, s))).abs().mean()
                        for s in range(1, len(cf_columns))])
    gap = gaps.mean()
    return [("cf", gap.detach(), gap)]


TERMS: dict[str, Callable] = {"dp": dp_terms, "eo": eo_terms, "cf": cf_terms}


def violations(model, data: PreferenceData, constraints: Sequence[str], tau: float = 0.5
               ) -> dict[str, float]:
    """True (hard) violations of each constraint on all items of ``data`` (no slack)."""
    x, g, y = _tensors(data)
    with torch.no_grad():
        return {name: float(true) for kind in constraints
                for name, true, _ in TERMS[kind](model, x, g, y, data.cf_columns, tau)}


def _tensors(data: PreferenceData):
    return (torch.from_numpy(data.x), torch.from_numpy(data.groups.astype(np.int64)),
            torch.from_numpy(data.labels.astype(np.int64)))


# ---------------------------------------------------------------------------------- training
@dataclass
class FaroConfig:
    constraints: list[str] = field(default_factory=lambda: ["dp"])
    """any of dp, eo, cf; empty = unconstrained Bradley-Terry"""
    epsilon: float = 0.05
    """slack per constraint (probability units for dp/eo, reward units for cf)"""
    steps: int = 300
    """descent-ascent steps"""
    lr: float = 0.01
    """Adam learning rate of the reward model"""
    lambda_lr: float = 0.5
    """ascent step of the multipliers on the true violations"""
    hidden: int = 32
    """reward MLP width"""
    pair_batch: int = 1024
    """preference pairs per step"""
    item_batch: int = 256
    """items per step for the constraint estimates"""
    tau: float = 0.5
    """temperature of the sigmoid surrogate of the ranking indicator"""
    eval_every: int = 25
    """every this many steps, snapshot the model and evaluate it on ALL training items/pairs"""
    seed: int = 0
    """initialisation and sampling seed"""

    def __post_init__(self):
        bad = [c for c in self.constraints if c not in CONSTRAINTS]
        require(not bad, "constraints", f"unknown {bad}; allowed: {', '.join(CONSTRAINTS)}")
        require(self.epsilon >= 0, "epsilon", f"must be >= 0, got {self.epsilon}")
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        require(self.lr > 0 and self.lambda_lr >= 0, "lr", "lr must be > 0 and lambda_lr >= 0")
        require(self.tau > 0, "tau", f"must be > 0, got {self.tau}")
        require(self.eval_every >= 1, "eval_every", f"must be >= 1, got {self.eval_every}")


@dataclass
class FaroResult:
    model: RewardModel
    lambdas: dict[str, float]
    """final multipliers per constraint term"""
    lambda_history: np.ndarray
    """(steps, K) multipliers after each ascent step"""
    violation_history: np.ndarray
    """(steps, K) true violations on the step's item batch"""
    loss_history: np.ndarray
    """(steps,) Bradley-Terry loss"""
    seconds: float
    selected_step: int
    """the iterate returned (see :func:`train_faro`)"""


def train_faro(data: PreferenceData, cfg: FaroConfig) -> FaroResult:
    """Proxy-Lagrangian descent-ascent on ``data`` (all its pairs are training pairs).

    The last iterate of a descent-ascent game oscillates around the constraint boundary, so
    (as Cotter et al. recommend selecting among iterates) the model is snapshotted every
    ``eval_every`` steps and evaluated on all training items and pairs; the returned model is
    the snapshot with the lowest BT loss among those whose every violation is <= ε, or the
    least-violating snapshot when none is feasible. Unconstrained: the last iterate.
    """
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = RewardModel(data.x.mean(0), data.x.std(0), cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x, g, y = _tensors(data)
    pairs = torch.from_numpy(data.pairs.astype(np.int64))
    prefs = torch.from_numpy(data.prefs.astype(np.float32))
    lam: dict[str, float] = {}
    lam_hist, viol_hist, loss_hist = [], [], []
    snapshots: list[tuple[tuple[float, float], int, dict]] = []
    for step in range(1, cfg.steps + 1):
        pb = torch.from_numpy(rng.integers(0, len(pairs), min(cfg.pair_batch, len(pairs))))
        ib = torch.from_numpy(rng.choice(len(x), min(cfg.item_batch, len(x)), replace=False))
        r_a, r_b = model(x[pairs[pb, 0]]), model(x[pairs[pb, 1]])
        loss = bt_loss(r_a, r_b, prefs[pb])
        objective = loss
        terms = [t for kind in cfg.constraints
                 for t in TERMS[kind](model, x[ib], g[ib], y[ib], data.cf_columns, cfg.tau)]
        for name, _, surrogate in terms:
            objective = objective + lam.setdefault(name, 0.0) * (surrogate - cfg.epsilon)
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
        for name, true, _ in terms:  # ascent on the TRUE violations, projected onto λ >= 0
            lam[name] = max(0.0, lam.get(name, 0.0) + cfg.lambda_lr * (float(true) - cfg.epsilon))
        names = sorted(lam)
        lam_hist.append([lam[n] for n in names])
        true_now = {n: float(t) for n, t, _ in terms}
        viol_hist.append([true_now.get(n, math.nan) for n in names])
        loss_hist.append(float(loss.detach()))
        if cfg.constraints and (step % cfg.eval_every == 0 or step == cfg.steps):
            snapshots.append((_snapshot_score(model, data, cfg), step,
                              {k: v.detach().clone() for k, v in model.state_dict().items()}))
    selected = cfg.steps
    if snapshots:
        _, selected, state = min(snapshots, key=lambda s: s[0])
        model.load_state_dict(state)
    return FaroResult(model, dict(lam), np.asarray(lam_hist, dtype=float),
                      np.asarray(viol_hist, dtype=float), np.asarray(loss_hist),
                      time.perf_counter() - t0, selected)


def _snapshot_score(model, data: PreferenceData, cfg: FaroConfig) -> tuple[float, float]:
    """(excess violation over ε, BT loss) on all of ``data``: min over snapshots = the pick."""
    excess = max(0.0, max(violations(model, data, cfg.constraints, cfg.tau).values()) - cfg.epsilon)
    with torch.no_grad():
        margins = torch.from_numpy(pair_margins(model, data))
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(
            margins, torch.from_numpy(data.prefs.astype(np.float64))))
    return (excess, loss)


# ---------------------------------------------------------------------------------- calibration
def pair_margins(model, data: PreferenceData) -> np.ndarray:
    """``r(a) - r(b)`` for every pair of ``data``, shape (M,)."""
    with torch.no_grad():
        r = model(torch.from_numpy(data.x)).numpy().astype(np.float64)
    return r[data.pairs[:, 0]] - r[data.pairs[:, 1]]


def ranking_metrics(margins: np.ndarray, prefs: np.ndarray) -> dict[str, float]:
    """Ordinal calibration: ranking accuracy (ties count 1/2) and AUC of the margins."""
    from sklearn.metrics import roc_auc_score

    acc = np.where(margins == 0, 0.5, (margins > 0) == (prefs > 0.5)).mean()
    auc = roc_auc_score(prefs, margins) if 0 < prefs.mean() < 1 else math.nan
    return {"ranking_accuracy": float(acc), "auc": float(auc)}


def expected_calibration_error(p: np.ndarray, prefs: np.ndarray, bins: int = 10) -> float:
    """Binned |observed frequency - mean predicted probability|, weighted by bin size."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for k in range(bins):
        m = idx == k
        if m.any():
            ece += m.mean() * abs(prefs[m].mean() - p[m].mean())
    return float(ece)


def fit_temperature(margins: np.ndarray, prefs: np.ndarray) -> float:
    """Cardinal calibration: ``s > 0`` minimising the BT NLL of ``sigmoid(s * margin)``."""
    from scipy.optimize import minimize_scalar

    def nll(log_s):
        z = math.exp(log_s) * margins
        return float(np.mean(np.logaddexp(0, -z) * prefs + np.logaddexp(0, z) * (1 - prefs)))

    return float(math.exp(minimize_scalar(nll, bounds=(-6, 6), method="bounded").x))


def calibration_report(model, cal: PreferenceData, test: PreferenceData) -> dict[str, float]:
    """Fit the temperature on ``cal`` pairs; ranking metrics and ECE (raw, calibrated) on ``test``."""
    s = fit_temperature(pair_margins(model, cal), cal.prefs)
    m = pair_margins(model, test)
    out = ranking_metrics(m, test.prefs)
    out["ece_raw"] = expected_calibration_error(1 / (1 + np.exp(-m)), test.prefs)
    out["ece_calibrated"] = expected_calibration_error(1 / (1 + np.exp(-s * m)), test.prefs)
    out["temperature"] = s
    return out


def split_items(data: PreferenceData, test_fraction: float = 0.3, cal_fraction: float = 0.15,
                seed: int = 0) -> tuple[PreferenceData, PreferenceData, PreferenceData]:
    """(train, cal, test) over disjoint ITEMS; cal pairs come from held-out train-side items."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(data.x))
    n_test, n_cal = int(test_fraction * len(perm)), int(cal_fraction * len(perm))
    test, cal, train = perm[:n_test], perm[n_test:n_test + n_cal], perm[n_test + n_cal:]
    return data.subset_items(np.sort(train)), data.subset_items(np.sort(cal)), \
        data.subset_items(np.sort(test))


# ---------------------------------------------------------------------------------- rewards
class FaroReward:
    """A trained, calibrated Faro model as a reward: ``s * (r(x) - center)`` for features x."""

    def __init__(self, model: RewardModel, temperature: float, center: float):
        self.model, self.temperature, self.center = model, float(temperature), float(center)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            r = self.model(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()
        return (self.temperature * (r.astype(np.float64) - self.center))


_ANSWER_TAG = re.compile(r"<answer>\s*\(?([A-Za-z])\)?\s*</answer>", re.IGNORECASE)


def featurize_answers(completions: Sequence[str], samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(completion, clinical sample) -> :data:`ANSWER_FEATURES`, shape (N, 5).

    ``correct``: the letter in ``<answer>X</answer>`` is the sample's answer option;
    ``formatted``: that tag is present; sex one-hot from ``sample["sex"]`` ("F"/"M"; unknown
    -> both 0.5); ``age``: ``sample["age"] / 100`` (unknown -> 0.54, the synthetic mean).
    """
    from envs.clinical.prompts import answer_letter

    if len(completions) != len(samples):
        raise UsageError(f"faro reward: {len(completions)} completions for {len(samples)} samples")
    rows = []
    for text, sample in zip(completions, samples):
        missing = [k for k in ("options", "answer") if k not in sample]
        if missing:
            raise UsageError(f"faro reward: sample lacks {', '.join(missing)} "
                             "(needs options, answer; optional sex, age)")
        found = _ANSWER_TAG.search(text or "")
        letter = found.group(1).upper() if found else None
        correct = float(letter is not None and letter == answer_letter(sample))
        sex = sample.get("sex")
        sex_f, sex_m = (1.0, 0.0) if sex == "F" else (0.0, 1.0) if sex == "M" else (0.5, 0.5)
        age = sample.get("age")
        age = 0.54 if age is None or (isinstance(age, float) and math.isnan(age)) else float(age) / 100
        rows.append([correct, float(found is not None), sex_f, sex_m, age])
    return np.asarray(rows, dtype=np.float32).reshape(-1, len(ANSWER_FEATURES))


def make_faro_reward(constraints: Sequence[str] | str = ("cf",), epsilon: float = 0.05,
                     bias: float = 1.0, seed: int = 0, steps: int = 300,
                     n_items: int = 1500, n_pairs: int = 15000
                     ) -> Callable[[list[str], list[dict]], np.ndarray]:
    """Reward-registry factory: train a calibrated Faro model, return ``reward_fn``.

    The model is trained (seconds, CPU) on :func:`synthetic_preferences` — an annotator who
    favours male patients' answers by ``bias`` — under ``constraints`` with slack ``epsilon``,
    then temperature-calibrated on held-out items. ``reward_fn(completions, samples)`` returns
    a float array (N,) of calibrated rewards of :func:`featurize_answers`. With the default
    ``cf`` constraint the reward of an answer does not depend on the patient's recorded sex
    (within ``epsilon``), although the annotator's preferences did.
    """
    if isinstance(constraints, str):
        constraints = [c for c in constraints.split(",") if c]
    cfg = FaroConfig(constraints=list(constraints), epsilon=epsilon, steps=steps, seed=seed)
    data = synthetic_preferences(n_items=n_items, n_pairs=n_pairs, bias=bias, seed=seed)
    train, cal, _ = split_items(data, seed=seed)
    result = train_faro(train, cfg)
    temperature = fit_temperature(pair_margins(result.model, cal), cal.prefs)
    with torch.no_grad():
        center = float(result.model(torch.from_numpy(train.x)).mean())
    reward = FaroReward(result.model, temperature, center)

    def reward_fn(completions: list[str], samples: list[dict]) -> np.ndarray:
        return reward(featurize_answers(completions, samples))

    reward_fn.faro = reward  # type: ignore[attr-defined]  (for inspection in tests/logs)
    reward_fn.lambdas = result.lambdas  # type: ignore[attr-defined]
    return reward_fn
