"""Batched hospital simulator: B hospitals stepped in lockstep with numpy.

The single env (``env.py``) is this core with B = 1 and the vector env (``vector.py``) is
the core with B = N, so both share one implementation and agree exactly on the same seeds.
All randomness comes from one ``numpy.random.Generator`` per hospital: at reset each draws
a block of ``BLOCK`` steps of uniforms/normals (fixed columns per step, see ``_U_*``), so a
step costs the same number of draws whatever happens, and envs never share a stream.

Time is in hours. Each step is one decision about one patient: the next arrival (ready
after a diagnostic turnaround) or a deferred patient due for re-evaluation.
"""

from __future__ import annotations

import numpy as np

from envs.hospital.calibration import CALIBRATION
from envs.hospital.config import ATTRIBUTES, BED_TYPES, HospitalConfig

BLOCK = 128
# uniform columns per step
_U_OUTCOME, _U_AGE, _U_SEX, _U_INS, _U_SEV, _U_ACUITY, _U_ARRIVAL, _U_SURGE = range(8)
_U_QUEUE = 8  # one per queue slot after this
# patient table columns (int, float)
_PI = ("age", "sex", "ins", "group", "sev0", "sev", "disp", "bed")
_PF = ("acuity", "tat", "arrival", "end", "los")
# normal columns per step
_Z_LOS, _Z_TAT = range(2)

ADMIT_GENERAL, ADMIT_ICU, ADMIT_PEDIATRIC, DEFER, TRANSFER = range(5)
N_ACTIONS = 5
# dispositions of a patient
IN_SYSTEM, ADMITTED, TRANSFERRED, DIED_WAITING = range(4)

# Clinical model (assumptions, documented in the env docstring and docs/hospital.md).
SUCCESS_BASE = np.array([0.95, 0.85, 0.70])  # per severity, treated at once in the right bed
SUCCESS_TAU = np.array([72.0, 24.0, 8.0])  # hours of waiting that divide success odds by e
HAZARD = np.array(
    [0.02, 0.05, 0.08]
)  # per hour: routine->urgent, urgent->critical, critical->death
REEVAL_HOURS = np.array([2.0, 1.0, 0.5])  # a deferred patient is reviewed again after this
SEVERITY_WEIGHT = np.array([1.0, 2.0, 4.0])
# MATCH[need, bed]: success multiplier of bed type for a patient's need (general/icu/pediatric)
MATCH = np.array([[1.0, 1.0, 0.9], [0.6, 1.0, 0.75], [0.85, 1.0, 1.0]])
STAFF_PER_BED = np.array([0.2, 0.5, 0.3])  # staff needed per occupied bed, per shift


def _lognormal_tables(cfg: HospitalConfig) -> dict[str, np.ndarray]:
    ages = ATTRIBUTES["age_group"]
    sev = ("routine", "urgent", "critical")
    c = CALIBRATION
    age_ratio = np.array([cfg.los_pediatric_ratio, 1.0, c["los_age_ratio"]["elderly"]])
    sev_ratio = np.array([c["los_severity_ratio"][s] for s in sev])
    return {
        "los_log_median": np.log(
            cfg.los_base_hours * np.outer(sev_ratio, age_ratio)
        ),  # (3 sev, 3 age)
        "los_sigma": np.array([c["los_sigma"][s] for s in sev]),
        "tat_log_median": np.log([c["turnaround_median_hours"][a] for a in ages]),
        "tat_sigma": np.array([c["turnaround_sigma"][a] for a in ages]),
    }


class HospitalCore:
    """State of B hospitals sharing one config. Arrays are (B, ...)."""

    def __init__(self, cfg: HospitalConfig, num: int):
        self.cfg, self.B = cfg, num
        self.group_names = cfg.group_names
        self.G = len(self.group_names)
        radix = [len(ATTRIBUTES[a]) for a in cfg.group_attributes]
        mult = np.cumprod([1] + radix[::-1])[:-1][::-1]
        self._group_mult = {a: int(m) for a, m in zip(cfg.group_attributes, mult)}
        self.beds = np.array([getattr(cfg.beds, k) for k in BED_TYPES])
        self.bed_type = np.repeat(np.arange(3), self.beds)
        self.S, self.Q, self.P = int(self.beds.sum()), cfg.queue_capacity, cfg.max_decisions + 1
        self._type_onehot = np.eye(3)[self.bed_type]  # (S, 3)
        self.tables = _lognormal_tables(cfg)
        self.KU = _U_QUEUE + self.Q
        # daily arrival cycle: piecewise-constant hourly intensity, exact NHPP inversion
        hours = np.arange(24) + 0.5
        self.lam = cfg.arrival_rate * (
            1 + cfg.daily_amplitude * np.cos(2 * np.pi * (hours - cfg.peak_hour) / 24)
        )
        self.cum = np.concatenate([[0.0], np.cumsum(self.lam)])
        self.shift_share = np.array(cfg.shift_shares)
        self.staff_mix = np.array([getattr(cfg.staff_mix, k) for k in BED_TYPES])
        self.bed_cost = np.array(cfg.bed_cost_per_hour)
        rw = cfg.rewards
        self.success_reward = np.array(rw.success)
        E = cfg.equipment
        self._equip_offset = np.arange(E) * cfg.maintenance_every_hours / max(E, 1)
        self.obs_dim = 26 + 6 * self.G
        self._ar = np.arange(num)
        self._eye3, self._eye3i = np.eye(3), np.eye(3, dtype=np.int64)
        self._age_cut = np.cumsum([cfg.age_mix.pediatric, cfg.age_mix.adult])
        self._ins_cut = np.cumsum([cfg.insurance_mix.private, cfg.insurance_mix.public])
        self._sev_cut = np.cumsum([cfg.severity_mix.routine, cfg.severity_mix.urgent])
        self._inv_beds = 1.0 / np.maximum(self.beds, 1)
        self._surge_beds = np.floor(self.beds * cfg.surge_capacity_mult)
        hour = np.arange(24)
        shift = np.where((hour >= 7) & (hour < 15), 0, np.where((hour >= 15) & (hour < 23), 1, 2))
        self._staff_by_hour = cfg.staff * self.shift_share[shift]  # day 07-15, evening, night
        self.rngs: list[np.random.Generator | None] = [None] * num
        self._alloc()

    # ------------------------------------------------------------------ state
    def _alloc(self) -> None:
        B, S, Q, P = self.B, self.S, self.Q, self.P
        f, i = np.float64, np.int64
        self.U = np.zeros((B, BLOCK, self.KU))
        self.Z = np.zeros((B, BLOCK, 2))
        self.cursor = np.zeros(B, i)
        self.t = np.zeros(B)
        self.decisions = np.zeros(B, i)
        self.release = np.full((B, S), np.inf)
        self.bed_pid = np.full((B, S), -2, i)  # -2 empty, -1 patient from before the episode
        self.bed_dies = np.zeros((B, S), bool)
        self.q_pid = np.full((B, Q), -1, i)
        self.q_next = np.full((B, Q), np.inf)
        self.n_pat = np.zeros(B, i)
        # patient table: one int and one float array; self.p holds named column views
        self.pi = np.zeros((B, P, len(_PI)), i)
        self.pf = np.zeros((B, P, len(_PF)), f)
        self.p = {k: self.pi[:, :, j] for j, k in enumerate(_PI)}
        self.p.update({k: self.pf[:, :, j] for j, k in enumerate(_PF)})
        self.p["success"] = np.zeros((B, P), bool)
        self.p["bed"][:] = -1
        self.cur_pid = np.zeros(B, i)
        self.cur_slot = np.full(B, -1, i)
        self.next_arrival = np.zeros(B)
        self.surge = np.zeros(B, bool)
        self.surge_next = np.full(B, np.inf)
        self.surge_end = np.full(B, np.inf)
        self.budget_left = np.zeros(B)
        self.count = {
            k: np.zeros(B, i)
            for k in (
                "arrived",
                "admitted",
                "discharged",
                "died",
                "transferred",
                "deteriorated",
                "invalid",
            )
        }
        self.occ_time = np.zeros((B, 3))
        self.staff_need_time = np.zeros(B)
        self.staff_time = np.zeros(B)
        self.t0 = np.zeros(B)

    def reset_one(self, b: int, rng: np.random.Generator) -> None:
        """Reset hospital ``b`` drawing everything from ``rng`` (which it keeps)."""
        cfg = self.cfg
        self.rngs[b] = rng
        self.U[b] = rng.random((BLOCK, self.KU))
        self.Z[b] = rng.standard_normal((BLOCK, 2))
        self.cursor[b] = 1  # row 0 is used below for the first patient
        t0 = float(rng.uniform(0.0, 24.0))
        self.t[b] = self.t0[b] = t0
        self.decisions[b] = 0
        occupied = rng.random(self.S) < cfg.initial_occupancy
        remaining = np.exp(
            self.tables["los_log_median"][0, 1]
            + self.tables["los_sigma"][0] * rng.standard_normal(self.S)
        )
        remaining *= rng.random(self.S)
        self.release[b] = np.where(occupied, t0 + remaining, np.inf)
        self.bed_pid[b] = np.where(occupied, -1, -2)
        self.bed_dies[b] = False
        self.q_pid[b], self.q_next[b] = -1, np.inf
        self.n_pat[b] = 0
        self.pi[b], self.pf[b], self.p["success"][b] = 0, 0.0, False
        self.p["bed"][b] = -1
        self.surge[b] = False
        self.surge_end[b] = np.inf
        rate = cfg.surge_per_day / 24.0
        self.surge_next[b] = t0 + rng.exponential(1.0 / rate) if rate > 0 else np.inf
        self.budget_left[b] = cfg.budget
        for c in self.count.values():
            c[b] = 0
        self.occ_time[b], self.staff_need_time[b], self.staff_time[b] = 0.0, 0.0, 0.0
        idx = np.array([b])
        self._new_patients(idx, self.U[b, 0][None], self.Z[b, 0][None])
        self._refresh()

    def _refresh(self) -> None:
        """Cache capacity, occupancy and staff on shift at the current decision time."""
        self.cap, self.occ, self.on_shift = self.capacity(), self.occupancy(), self.staff_on_shift()

    # ------------------------------------------------------------------ model pieces
    def _next_arrival_time(self, t: np.ndarray, u: np.ndarray, mult: np.ndarray) -> np.ndarray:
        """Exact inversion of the piecewise-constant daily intensity from time t (shape (n,))."""
        h = np.mod(t, 24.0)
        j = np.minimum(h.astype(np.int64), 23)
        lam_t = self.cum[j] + self.lam[j] * (h - j)
        target = lam_t - np.log1p(-u) / mult
        day_total = self.cum[24]
        days = np.floor(target / day_total)
        r = target - days * day_total
        k = np.clip(np.searchsorted(self.cum, r, side="right") - 1, 0, 23)
        return t - h + days * 24.0 + k + (r - self.cum[k]) / self.lam[k]

    def _new_patients(self, idx: np.ndarray, u: np.ndarray, z: np.ndarray) -> None:
        """Create the next patient in hospitals ``idx`` (u: (n, KU), z: (n, 2)), now ready."""
        cfg = self.cfg
        pid = np.minimum(self.n_pat[idx], self.P - 1)
        age = np.searchsorted(self._age_cut, u[:, _U_AGE], side="right")
        sex = (u[:, _U_SEX] >= cfg.female_share).astype(np.int64)  # 0 female, 1 male
        ins = np.searchsorted(self._ins_cut, u[:, _U_INS], side="right")
        sev = np.searchsorted(self._sev_cut, u[:, _U_SEV], side="right")
        attrs = {"age_group": age, "sex": sex, "insurance": ins}
        group = sum(attrs[a] * m for a, m in self._group_mult.items())
        tat = np.minimum(
            np.exp(
                self.tables["tat_log_median"][age] + self.tables["tat_sigma"][age] * z[:, _Z_TAT]
            ),
            cfg.turnaround_cap_hours,
        )
        t = self.t[idx]
        self.pi[idx, pid, :7] = np.stack(
            [age, sex, ins, group, sev, sev, np.full_like(age, IN_SYSTEM)], 1
        )
        self.pf[idx, pid, :3] = np.stack([u[:, _U_ACUITY], tat, t - tat], 1)
        self.cur_pid[idx], self.cur_slot[idx] = pid, -1
        self.n_pat[idx] += 1
        self.count["arrived"][idx] += 1
        mult = np.where(self.surge[idx], cfg.surge_arrival_mult, 1.0)
        self.next_arrival[idx] = self._next_arrival_time(t, u[:, _U_ARRIVAL], mult)

    def capacity(self) -> np.ndarray:
        """Usable beds per type now, (B, 3): surge closures and ICU equipment downtime."""
        cfg = self.cfg
        if cfg.surge_per_day > 0:
            cap = np.where(self.surge[:, None], self._surge_beds, self.beds)
        else:
            cap = np.repeat(self.beds[None], self.B, 0)
        down = (
            np.mod(self.t[:, None] + self._equip_offset, cfg.maintenance_every_hours)
            < cfg.maintenance_hours
        )
        up = self.equip_up = cfg.equipment - down.sum(1)
        cap[:, 1] = np.minimum(cap[:, 1], up)
        return cap.astype(np.int64)

    def occupancy(self) -> np.ndarray:
        """Occupied beds per type, (B, 3)."""
        return (np.isfinite(self.release) @ self._type_onehot).astype(np.int64)

    def staff_on_shift(self) -> np.ndarray:
        return self._staff_by_hour[np.minimum(np.mod(self.t, 24.0).astype(np.int64), 23)]

    def in_system(self) -> np.ndarray:
        """Patients of this episode still present, counted from the state (not the counters)."""
        beds = (self.bed_pid >= 0).sum(1)
        queue = (self.q_pid >= 0).sum(1)
        return beds + queue + (self.cur_slot < 0)

    def _draws(self, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.cursor
        if (c >= BLOCK).any():
            for b in np.flatnonzero(active & (c >= BLOCK)):
                rng = self.rngs[b]
                self.U[b] = rng.random((BLOCK, self.KU))
                self.Z[b] = rng.standard_normal((BLOCK, 2))
                c[b] = 0
            c = np.minimum(c, BLOCK - 1)  # hospitals about to be reset draw nothing new
        u, z = self.U[self._ar, c], self.Z[self._ar, c]
        self.cursor += 1
        return u, z

    # ------------------------------------------------------------------ one step
    def step(self, action: np.ndarray, active: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Apply one decision per hospital and advance each to its next decision.

        action: (B,) ints in [0, 5). active: (B,) bool, hospitals that really step (the
        others are about to be reset and must not consume their generator).
        Returns per-hospital arrays: reward, truncated, and the decision's info fields,
        with the reward split by whose patients caused it: ``reward_by_group`` (B, G) and
        ``reward_shared`` (B,), ``reward == reward_shared + reward_by_group.sum(1)`` exactly.

        Attribution: the decided patient's outcome (success credit, transfer credit, death)
        goes to that patient's group; the waiting, deterioration and death penalties of the
        queued patients go to each queued patient's group; the operating cost (beds,
        transfers) and the invalid-action penalty are system terms (``reward_shared``).
        """
        if active is None:
            active = np.ones(self.B, bool)
        u, z = self._draws(active)
        self._z = z
        out = self._decide(np.asarray(action, np.int64), u, z)
        out["reward_by_group"] += self._advance(u, z)
        # the reward is defined as its parts' sum, so the decomposition is exact
        out["reward"] = out["reward_shared"] + out["reward_by_group"].sum(1)
        self.decisions += 1
        out["truncated"] = self.decisions >= self.cfg.max_decisions
        return out

    def _decide(self, a: np.ndarray, u: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
        cfg, rw, p = self.cfg, self.cfg.rewards, self.p
        ar = np.arange(self.B)
        pid, slot = self.cur_pid, self.cur_slot
        row, rowf = self.pi[ar, pid], self.pf[ar, pid]
        sev, age = row[:, 5], row[:, 0]
        wait = self.t - rowf[:, 2]
        need = np.where(sev == 2, 1, np.where(age == 0, 2, 0))
        cap, occ = self.cap, self.occ
        k = np.minimum(np.maximum(a, 0), 2)
        los = np.exp(
            self.tables["los_log_median"][sev, age] + self.tables["los_sigma"][sev] * z[:, _Z_LOS]
        )
        cost = self.bed_cost[k] * los
        want = a < 3
        admit = want & (occ[ar, k] < cap[ar, k]) & (self.budget_left >= cost)
        invalid = want & ~admit
        defer = (a == DEFER) | invalid
        qfree = self.q_pid < 0
        forced = defer & (slot < 0) & ~qfree.any(1)
        transfer = (a == TRANSFER) | forced
        defer &= ~forced
        invalid |= forced
        # outcome probabilities
        on_shift = self.on_shift
        load = (occ[ar, k] + 1) * STAFF_PER_BED[k] / np.maximum(on_shift * self.staff_mix[k], 1e-9)
        staff_factor = np.maximum(1.0 / np.sqrt(np.maximum(load, 1.0)), 0.5)
        acuity = rowf[:, 0]
        base = SUCCESS_BASE[sev] * (1 - 0.3 * acuity)
        p_admit = base * np.exp(-wait / SUCCESS_TAU[sev]) * MATCH[need, k] * staff_factor
        p_transfer = base * np.exp(-(wait + cfg.transport_hours) / SUCCESS_TAU[sev]) * 0.9
        good = u[:, _U_OUTCOME] < np.where(admit, p_admit, p_transfer)
        dies = (sev == 2) & ~good & (admit | transfer)
        # admissions: a free bed of type k exists because occ < cap <= beds
        ia = np.flatnonzero(admit)
        if ia.size:
            free = ~np.isfinite(self.release[ia]) & (self.bed_type[None, :] == k[ia, None])
            s = free.argmax(1)
            self.release[ia, s] = self.t[ia] + los[ia]
            self.bed_pid[ia, s] = pid[ia]
            self.bed_dies[ia, s] = dies[ia]
            p["disp"][ia, pid[ia]] = ADMITTED
            p["los"][ia, pid[ia]] = los[ia]
            p["bed"][ia, pid[ia]] = k[ia]
        it = np.flatnonzero(transfer)
        if it.size:
            p["disp"][it, pid[it]] = TRANSFERRED
        leave = admit | transfer
        il = np.flatnonzero(leave)
        p["end"][il, pid[il]] = self.t[il]
        p["success"][il, pid[il]] = good[il]
        # queue bookkeeping
        from_q = slot >= 0
        iq = np.flatnonzero(leave & from_q)
        self.q_pid[iq, slot[iq]], self.q_next[iq, slot[iq]] = -1, np.inf
        due = self.t + REEVAL_HOURS[sev]
        ir = np.flatnonzero(defer & from_q)
        self.q_next[ir, slot[ir]] = due[ir]
        inew = np.flatnonzero(defer & ~from_q)
        if inew.size:
            s = qfree[inew].argmax(1)
            self.q_pid[inew, s], self.q_next[inew, s] = pid[inew], due[inew]
        spent = np.where(admit, cost, 0.0) + np.where(transfer, cfg.transfer_cost, 0.0)
        self.budget_left -= spent
        self.count["admitted"] += admit
        self.count["transferred"] += transfer
        self.count["invalid"] += invalid
        outcome = (
            np.where(good & admit, self.success_reward[sev], 0.0)
            + np.where(good & transfer, rw.transfer_credit * self.success_reward[sev], 0.0)
            - rw.death * dies
        )
        by_group = np.zeros((self.B, self.G))
        by_group[ar, row[:, 3]] = outcome
        taken = np.where(admit, k, np.where(transfer, TRANSFER, DEFER))
        return {
            "reward_by_group": by_group,
            "reward_shared": -rw.cost * spent - rw.invalid * invalid,
            "group": row[:, 3],
            "severity": sev,
            "action": taken,
            "treated": admit,
            "success": admit & good,
            "transferred": transfer,
            "invalid": invalid,
            "wait": wait,
            "occupancy": occ + self._eye3i[k] * admit[:, None],
            "capacity": cap,
        }

    def _advance(self, u: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Move each hospital to its next decision; return the reward accrued meanwhile by
        the queued patients, per group (B, G)."""
        rw, p = self.cfg.rewards, self.p
        ar = self._ar
        qarg = self.q_next.argmin(1)
        qn = self.q_next[ar, qarg]
        from_q = qn < self.next_arrival
        t, t_new = self.t, np.where(from_q, qn, self.next_arrival)
        dt = t_new - t
        # beds: exact occupancy integral, then discharges
        overlap = np.maximum(np.minimum(self.release, t_new[:, None]) - t[:, None], 0.0)
        overlap[self.release == np.inf] = 0.0  # empty beds
        occ_t = overlap @ self._type_onehot
        self.occ_time += occ_t
        on = self.on_shift * dt
        self.staff_need_time += np.minimum(occ_t @ STAFF_PER_BED, on)
        self.staff_time += on
        out = self.release <= t_new[:, None]
        mine = out & (self.bed_pid >= 0)
        died = mine & self.bed_dies
        self.count["died"] += died.sum(1)
        self.count["discharged"] += (mine & ~self.bed_dies).sum(1)
        self.release[out], self.bed_pid[out], self.bed_dies[out] = np.inf, -2, False
        # the queue: waiting cost, deterioration, deaths
        waiting = self.q_pid >= 0
        if not waiting.any():
            self._after_queue(t_new, u, from_q, qarg)
            return np.zeros((self.B, self.G))
        qp = np.maximum(self.q_pid, 0)
        qsev = p["sev"][ar[:, None], qp]
        qgroup = p["group"][ar[:, None], qp]
        wait_cost = np.where(waiting, SEVERITY_WEIGHT[qsev], 0.0) * dt[:, None]  # (B, Q)
        det = waiting & (u[:, _U_QUEUE:] < -np.expm1(-HAZARD[qsev] * dt[:, None]))
        event = np.zeros_like(waiting)
        event[ar, qarg] = from_q
        dies = det & (qsev == 2) & ~event
        det &= qsev < 2
        bi, si = np.nonzero(det)
        new_sev = qsev[bi, si] + 1
        p["sev"][bi, qp[bi, si]] = new_sev
        self.q_next[bi, si] = np.minimum(self.q_next[bi, si], t_new[bi] + REEVAL_HOURS[new_sev])
        bi, si = np.nonzero(dies)
        p["disp"][bi, qp[bi, si]] = DIED_WAITING
        p["end"][bi, qp[bi, si]] = t_new[bi]
        self.q_pid[bi, si], self.q_next[bi, si] = -1, np.inf
        self.count["deteriorated"] += det.sum(1)
        self.count["died"] += dies.sum(1)
        self._after_queue(t_new, u, from_q, qarg)
        # per queued patient, summed into its group: (B, Q) -> (B, G)
        penalty = -rw.deterioration * det - rw.death * dies - rw.wait_per_hour * wait_cost
        key = (ar[:, None] * self.G + qgroup)[waiting]
        return np.bincount(key, weights=penalty[waiting],
                           minlength=self.B * self.G).reshape(self.B, self.G)

    def _after_queue(
        self, t_new: np.ndarray, u: np.ndarray, from_q: np.ndarray, qarg: np.ndarray
    ) -> None:
        """Surge transitions, the clock, and the next decision's patient."""
        cfg = self.cfg
        # surge events
        rate = cfg.surge_per_day / 24.0
        if rate > 0:
            ends = self.surge & (t_new >= self.surge_end)
            starts = ~self.surge & (t_new >= self.surge_next)
            gap = -np.log1p(-u[:, _U_SURGE]) / rate
            self.surge_next = np.where(ends, self.surge_end + gap, self.surge_next)
            self.surge_end = np.where(starts, self.surge_next + cfg.surge_hours, self.surge_end)
            self.surge = (self.surge & ~ends) | starts
        self.t = t_new
        # next decision: a queued patient due for review, or the next arrival
        iq = np.flatnonzero(from_q)
        self.cur_pid[iq], self.cur_slot[iq] = self.q_pid[iq, qarg[iq]], qarg[iq]
        ia = np.flatnonzero(~from_q)
        if ia.size:
            self._new_patients(ia, u[ia], self._z[ia])
        self._refresh()

    # ------------------------------------------------------------------ observation
    def observe(self) -> np.ndarray:
        """Normalised observation, (B, 26 + 6G) float32; layout in the env docstring."""
        B, G, p = self.B, self.G, self.p
        ar = self._ar
        pid = self.cur_pid
        row, rowf = self.pi[ar, pid], self.pf[ar, pid]
        sev, age = row[:, 5], row[:, 0]
        eye3 = self._eye3
        wait = self.t - rowf[:, 2]
        waiting = self.q_pid >= 0
        if waiting.any():
            bi, si = np.nonzero(waiting)
            qp = self.q_pid[bi, si]
            key = p["sev"][bi, qp] * G + p["group"][bi, qp] + bi * (3 * G)
            n = np.bincount(key, minlength=B * 3 * G).reshape(B, 3 * G)
            qwait = self.t[bi] - p["arrival"][bi, qp]
            w = np.bincount(key, weights=qwait, minlength=B * 3 * G).reshape(B, 3 * G)
            mean_wait = np.minimum(w / np.maximum(n, 1) / 24.0, 1.0)
        else:
            n = mean_wait = np.zeros((B, 3 * G))
        cfg, q3 = self.cfg, 12 + 3 * G
        cap, occ, on = self.cap, self.occ, self.on_shift
        obs = np.empty((B, self.obs_dim), np.float32)
        obs[:, 0:3] = eye3[sev]
        obs[:, 3] = rowf[:, 0]
        obs[:, 4:7] = eye3[age]
        obs[:, 7] = row[:, 1] == 0
        obs[:, 8:11] = eye3[row[:, 2]]
        obs[:, 11] = np.minimum(wait * (1 / 24.0), 1.0)
        obs[:, 12:q3] = n * (1.0 / cfg.queue_capacity)
        obs[:, q3 : q3 + 3 * G] = mean_wait
        r = q3 + 3 * G
        obs[:, r : r + 3] = np.minimum(occ * self._inv_beds, 1.0)
        obs[:, r + 3 : r + 6] = cap * self._inv_beds
        obs[:, r + 6] = self.equip_up * (1.0 / max(cfg.equipment, 1))
        obs[:, r + 7] = on * (1.0 / cfg.staff)
        obs[:, r + 8] = np.minimum(occ @ STAFF_PER_BED / np.maximum(on, 1e-9), 2.0) * 0.5
        h = np.mod(self.t, 24.0) * (2 * np.pi / 24)
        obs[:, r + 9] = (np.sin(h) + 1) * 0.5
        obs[:, r + 10] = (np.cos(h) + 1) * 0.5
        obs[:, r + 11] = np.minimum(np.maximum(self.budget_left * (1.0 / cfg.budget), 0.0), 1.0)
        obs[:, r + 12] = self.surge
        obs[:, r + 13] = np.minimum(self.decisions * (1.0 / cfg.max_decisions), 1.0)
        return obs

    # ------------------------------------------------------------------ episode log
    def episode_log(self, b: int) -> dict:
        """Everything :func:`envs.hospital.metrics.episode_metrics` needs for hospital ``b``.

        Per-patient arrays (synthetic patients) plus resource integrals and counters.
        """
        n = int(min(self.n_pat[b], self.P))
        p = {k: v[b, :n].copy() for k, v in self.p.items()}
        end = np.where(p["disp"] == IN_SYSTEM, self.t[b], p["end"])
        elapsed = float(self.t[b] - self.t0[b])
        return {
            "group_names": list(self.group_names),
            "group": p["group"],
            "severity": p["sev0"],
            "acuity": p["acuity"],
            "age": p["age"],
            "treated": p["disp"] == ADMITTED,
            "success": p["success"] & (p["disp"] == ADMITTED),
            "wait": end - p["arrival"],
            "turnaround": p["tat"],
            "los": np.where(p["disp"] == ADMITTED, p["los"], np.nan),
            "severity_at_decision": p["sev"],
            "bed_hours": self.occ_time[b].copy(),
            "beds": self.beds.astype(float) * elapsed,
            "staff_busy_hours": float(self.staff_need_time[b]),
            "staff_hours": float(self.staff_time[b]),
            "counts": {k: int(v[b]) for k, v in self.count.items()}
            | {"in_system": int(self.in_system()[b])},
        }
