"""The GPU kit: one command, under eight minutes on one H200, that measures the project's own code on CUDA.

    python3 -m benchmarks.gpu_kit                  # on the GPU machine: writes docs/results/gpu.{md,json}
    python3 -m benchmarks.gpu_kit --out $OUT       # the same, results into $OUT
    .venv/bin/python -m benchmarks.gpu_kit --dry-run   # CPU, tiny config, every code path, seconds

Without Ray (the lent machine has none), on the plain objects the Ray actors wrap:

* **correctness**: the built-in tiny Gemma3 gives the same greedy tokens on CPU and CUDA
  (``HFBackend``); one FairGRPO step on CUDA (the driver's ``Pipeline`` stages, ``LearnerImpl``)
  moves the weights and they load into the rollout backend.
* **rollout**: decode tokens/s of ``platform.clinical.hf_backend.HFBackend`` on a Gemma3 of
  MedGemma-4B's architecture (random bf16 weights built on the GPU, no download), batch 8 and 64,
  a 256-token text prompt with one image, 256 new tokens forced; reported as a share of the
  HBM-bandwidth bound ``tokens/s <= batch x bandwidth / bytes read per decode step`` (weights +
  KV cache), with the copy bandwidth measured in the same run.
* **learner-zero2 / learner-zero3**: one update of ``platform.clinical.learner.LearnerImpl``
  (DeepSpeed, world size 1, bf16, ``algorithms.losses.ppo_token_loss``, 64 sequences x 512
  tokens): step time and peak GPU memory; then the colocated weight sync (gather the learner's
  full weights, load them into an ``HFBackend`` on the same GPU).

Each section runs in its own process with a time limit (``--isolate process``, the default): a
crash, a CUDA error or an overrun is reported and the next section still runs. The whole run
keeps to ``--budget-s`` (450 s): a section that would start with less than its minimum left is
skipped and the report says so; inside a section, steps that would overrun are skipped too.
Bad flags exit 2 naming the flag. docs/gpu-kit.md explains every figure; the README says how to
run the kit on the lent machine (``make gpu-wheels`` for the wheels that travel with it).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
ORDER = ["correctness", "rollout", "learner-zero2", "learner-zero3"]
BUDGET_S = 450.0
"""Default whole-run budget: 7.5 minutes, inside the issue's 8 (machine start not counted)."""
SECTION_BUDGET_S = {"correctness": 60.0, "rollout": 150.0, "learner-zero2": 150.0,
                    "learner-zero3": 150.0}
"""Most seconds each section may run (its process is killed after that); the last section run
may use whatever is left of the whole budget."""
SECTION_MIN_S = {"correctness": 20.0, "rollout": 60.0, "learner-zero2": 60.0, "learner-zero3": 60.0}
"""A section that would start with less than this left is skipped."""
MARGIN_S = 5.0
"""A section process stops starting steps this long before it would be killed."""

GPU_DEFAULTS = {"batches": "8,64", "prompt_tokens": 256, "new_tokens": 256, "group": 8,
                "repeats": 2, "learner_seqs": 64, "learner_seq_len": 512, "learner_micro": 2,
                "learner_steps": 2, "bandwidth_mib": 4096}
DRY_DEFAULTS = {"batches": "2,4", "prompt_tokens": 16, "new_tokens": 8, "group": 2,
                "repeats": 1, "learner_seqs": 4, "learner_seq_len": 48, "learner_micro": 2,
                "learner_steps": 2, "bandwidth_mib": 32}


# ------------------------------------------------------------------------------ CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_kit",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, tiny config: every code path in seconds; results into a temp dir")
    p.add_argument("--out", default=None,
                   help="results folder (default docs/results; with --dry-run a new temp dir)")
    p.add_argument("--sections", default=",".join(ORDER),
                   help=f"comma list, run in this order: {','.join(ORDER)}")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"whole-run time budget in seconds (default {BUDGET_S:g}; dry run 600)")
    p.add_argument("--isolate", choices=["process", "inline"], default="process",
                   help="process: each section in its own process with a time limit (default); "
                        "inline: all in this process (faster start, no hard limit)")
    g = p.add_argument_group("sizes (defaults: GPU / dry run)")
    g.add_argument("--batches", default=None, help="rollout batch sizes (sequences), comma list: 8,64 / 2,4")
    g.add_argument("--prompt-tokens", type=int, default=None, help="text tokens per prompt, plus one image: 256 / 16")
    g.add_argument("--new-tokens", type=int, default=None, help="tokens generated per sequence (forced): 256 / 8")
    g.add_argument("--group", type=int, default=None, help="samples per prompt (GRPO's G): 8 / 2")
    g.add_argument("--repeats", type=int, default=None, help="timed generate calls per batch: 2 / 1")
    g.add_argument("--learner-seqs", type=int, default=None, help="sequences per update: 64 / 4")
    g.add_argument("--learner-seq-len", type=int, default=None, help="tokens per sequence: 512 / 48")
    g.add_argument("--learner-micro", type=int, default=None,
                   help="sequences per micro-batch (grad_accum = seqs / micro): 2 / 2")
    g.add_argument("--learner-steps", type=int, default=None, help="updates timed (the first is warm-up): 2 / 2")
    g.add_argument("--bandwidth-mib", type=int, default=None, help="copy-bandwidth buffer MiB: 4096 / 32")
    # a section process (the parent starts these)
    p.add_argument("--section", default=None, help=argparse.SUPPRESS)
    p.add_argument("--plan", default=None, help=argparse.SUPPRESS)
    p.add_argument("--section-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    return p


def _positive(p: argparse.ArgumentParser, flag: str, value: float) -> None:
    if value <= 0:
        p.error(f"{flag}: {value} must be > 0")


def parse(argv: list[str]) -> tuple[argparse.Namespace, Any]:
    """Flags -> (args, Plan); every bad value exits 2 with a message naming the flag."""
    from benchmarks.gpu_kit_sections import Plan

    p = build_parser()
    args = p.parse_args(argv)
    defaults = DRY_DEFAULTS if args.dry_run else GPU_DEFAULTS
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    try:
        batches = [int(b) for b in str(args.batches).split(",") if b.strip()]
    except ValueError:
        p.error(f"--batches: {args.batches!r} must be a comma list of whole numbers, e.g. 8,64")
    if not batches or min(batches) <= 0:
        p.error(f"--batches: {args.batches!r} must be a comma list of positive whole numbers")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in ORDER]
    if unknown or not sections:
        p.error(f"--sections: unknown {unknown or args.sections!r}; allowed: {', '.join(ORDER)}")
    args.sections = [s for s in ORDER if s in sections]
    for flag in ("prompt_tokens", "new_tokens", "group", "repeats", "learner_seqs",
                 "learner_seq_len", "learner_micro", "learner_steps", "bandwidth_mib"):
        _positive(p, "--" + flag.replace("_", "-"), getattr(args, flag))
    if args.new_tokens < 2:
        p.error(f"--new-tokens: {args.new_tokens} must be >= 2 (decode time = full - prefill)")
    if args.budget_s is None:
        args.budget_s = 600.0 if args.dry_run else BUDGET_S
    _positive(p, "--budget-s", args.budget_s)
    if args.out is None and args.section is None:
        args.out = tempfile.mkdtemp(prefix="gpu-kit-dry-") if args.dry_run else str(RESULTS)
    if args.dry_run and args.out and Path(args.out).resolve() == RESULTS.resolve():
        p.error(f"--out: the dry run never writes {RESULTS.relative_to(REPO)} (pick another folder)")
    if args.section is not None and args.section not in ORDER:
        p.error(f"--section: unknown {args.section!r}; allowed: {', '.join(ORDER)}")
    plan = Plan(mode="dry-run" if args.dry_run else "gpu", device="cpu" if args.dry_run else "cuda",
                spec="tiny" if args.dry_run else "medgemma-4b", batches=batches,
                group=args.group, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                repeats=args.repeats, learner_seqs=args.learner_seqs,
                learner_seq_len=args.learner_seq_len, learner_micro=args.learner_micro,
                learner_steps=args.learner_steps, bandwidth_mib=args.bandwidth_mib,
                torch_threads=1 if args.dry_run else None)
    return args, plan


# ------------------------------------------------------------------------------ environment

def section_env(mode: str) -> dict[str, str]:
    """Environment of a section process (and of this one, for inline sections)."""
    env = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "DS_ACCELERATOR": "cpu" if mode == "dry-run" else "cuda"}
    if mode == "gpu":
        env["PYTORCH_CUDA_ALLOC_CONF"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF",
                                                        "expandable_segments:True")
    return env


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(mode: str) -> dict[str, Any]:
    """Versions and the GPU, read without touching CUDA in this process."""
    import platform as _platform

    out: dict[str, Any] = {"python": sys.version.split()[0], "machine": _platform.machine(),
                           "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
                           **{k: _version(k) for k in ("torch", "transformers", "deepspeed",
                                                       "accelerate", "numpy")}}
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO,
                                       capture_output=True, text=True, timeout=10, check=False).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        out["commit"] = "unknown (no git here)"
    if mode == "gpu" and shutil.which("nvidia-smi"):
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=30,
                               check=False)
            name, mem, driver = [x.strip() for x in q.stdout.splitlines()[0].split(",")]
            out.update(gpu=name, gpu_memory=mem, driver=driver)
        except (OSError, subprocess.SubprocessError, IndexError, ValueError):
            pass
    return out


# ------------------------------------------------------------------------------ running sections

def run_process(name: str, plan_path: Path, out_path: Path, timeout: float) -> dict[str, Any]:
    """``name`` in a process of its own, killed (with its children) after ``timeout`` s."""
    env = {**os.environ, **section_env(json.loads(plan_path.read_text())["mode"])}
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    deadline = time.time() + timeout - MARGIN_S
    cmd = [sys.executable, "-m", "benchmarks.gpu_kit", "--section", name, "--plan", str(plan_path),
           "--section-out", str(out_path), "--deadline", repr(deadline)]
    tail: collections.deque[str] = collections.deque(maxlen=60)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            print(f"  | {line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    reader.join(timeout=10)
    record = _read_json(out_path) or {"section": name, "steps": {}}
    for step in record.get("steps", {}).values():
        if step.get("status") == "running":
            step["status"] = "killed"
    if timed_out:
        record.update(status="timeout", error=f"killed after its {timeout:.0f} s limit")
    elif rc != 0:
        record.update(status="crashed", error=f"section process exited with code {rc}")
    elif record.get("status") in (None, "running"):
        record.update(status="crashed", error="section process left no result")
    if record.get("status") != "ok":
        record["output_tail"] = list(tail)[-30:]
    return record


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_all(args: argparse.Namespace, plan: Any, started: float,
            after_each: Any = None) -> dict[str, dict[str, Any]]:
    """The sections in order, each within its limit; ``after_each(results)`` after every one
    (the report is rewritten then, so a run cut short still leaves what it measured)."""
    from benchmarks.gpu_kit_sections import run_section

    results: dict[str, dict[str, Any]] = {}
    end = started + args.budget_s
    with tempfile.TemporaryDirectory(prefix="gpu-kit-") as tmp:
        plan_path = Path(tmp) / "plan.json"
        plan_path.write_text(plan.to_json())
        for name in args.sections:
            left = end - time.time()
            need = min(SECTION_MIN_S[name], SECTION_BUDGET_S[name])
            if plan.mode == "gpu" and left < need:
                results[name] = {"section": name, "status": "skipped", "steps": {},
                                 "reason": f"would overrun the budget: {max(left, 0):.0f} s left, "
                                           f"the section needs at least {need:.0f} s"}
                print(f"[gpu-kit] {name}: skipped ({results[name]['reason']})", flush=True)
                if after_each:
                    after_each(results)
                continue
            last = name == args.sections[-1]  # the last section may use whatever is left
            limit = max(min(SECTION_BUDGET_S[name] if plan.mode == "gpu" and not last else left,
                            left), 1.0)
            print(f"[gpu-kit] {name}: start ({limit:.0f} s limit, {args.isolate})", flush=True)
            t = time.time()
            if args.isolate == "process":
                results[name] = run_process(name, plan_path, Path(tmp) / f"{name}.json", limit)
            else:
                results[name] = run_section(name, plan, Path(tmp) / f"{name}.json",
                                            time.time() + limit - MARGIN_S)
            results[name]["wall_seconds"] = time.time() - t
            print(f"[gpu-kit] {name}: {results[name]['status']} in "
                  f"{results[name]['wall_seconds']:.1f} s", flush=True)
            if after_each:
                after_each(results)
    return results


# ------------------------------------------------------------------------------ report

def _steps(results: dict[str, Any], section: str) -> dict[str, Any]:
    return results.get(section, {}).get("steps", {})


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline figures, read from the sections' records."""
    s: dict[str, Any] = {}
    ro = _steps(results, "rollout")
    if ro.get("bandwidth", {}).get("status") == "ok":
        s["copy_bandwidth_bytes_per_s"] = ro["bandwidth"]["bytes_per_s"]
    s["rollout"] = {str(v["batch"]): {k: v.get(k) for k in (
        "prompt_tokens", "new_tokens", "decode_tokens_per_s", "bound_tokens_per_s", "share_of_bound",
        "end_to_end_tokens_per_s", "decode_step_ms", "bytes_per_decode_step",
        "peak_allocated_gib", "peak_rss_gib")}
        for k_, v in ro.items() if k_.startswith("batch_") and v.get("status") == "ok"}
    s["learner"], s["weight_sync"] = {}, {}
    for stage in ("zero2", "zero3"):
        st = _steps(results, f"learner-{stage}")
        ups = [v for k, v in sorted(st.items()) if k.startswith("update_") and v.get("status") == "ok"]
        if ups:
            last = ups[-1]
            s["learner"][stage] = {"step_seconds": last["seconds_step"],
                                   "first_step_seconds": ups[0]["seconds_step"],
                                   "steady": not last.get("warm_up", False),
                                   "tokens_per_s": last["tokens_per_s"],
                                   "peak_allocated_gib": last.get("peak_allocated_gib"),
                                   "peak_reserved_gib": last.get("peak_reserved_gib"),
                                   "peak_rss_gib": last.get("peak_rss_gib"),
                                   "sequences": last["sequences"], "seq_len": last["seq_len"],
                                   "micro_batch": st.get("setup", {}).get("micro_batch")}
        ws = st.get("weight_sync", {})
        if ws.get("status") == "ok":
            s["weight_sync"][stage] = {k: ws[k] for k in (
                "bytes", "via_host_seconds", "on_device_seconds", "via_host_weights_match",
                "on_device_weights_match")}
    co = _steps(results, "correctness")
    s["correctness"] = {
        "greedy_cpu_vs_device": co.get("greedy_cpu_vs_device", {}).get("passed"),
        "fairgrpo_step_moves_weights": (co.get("fairgrpo_step", {}).get("status") == "ok"
                                        if "fairgrpo_step" in co else None)}
    return s


def build_report(args: argparse.Namespace, plan: Any, env: dict[str, Any],
                 results: dict[str, dict[str, Any]], started: float) -> dict[str, Any]:
    for rec in results.values():  # the section processes saw the GPU and the imported versions
        for k, v in (rec.get("env") or {}).items():
            if k not in ("device",) and v is not None:
                env.setdefault(k, v)
                if k in ("torch", "transformers"):
                    env[k] = v
    statuses = {n: r.get("status") for n, r in results.items()}
    bad = [n for n, st in statuses.items() if st not in ("ok", "skipped")]
    pending = [n for n in args.sections if n not in results]
    model = (results.get("rollout") or {}).get("model")
    status = "failed" if bad else "running" if pending else "ok"
    return {"kit": "benchmarks/gpu_kit.py", "schema": 1, "mode": plan.mode,
            "status": status, "failed_sections": bad, "pending_sections": pending,
            "started_utc": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
            "wall_seconds": time.time() - started, "budget_seconds": args.budget_s,
            "isolate": args.isolate, "argv": sys.argv[1:], "environment": env,
            "plan": json.loads(plan.to_json()), "model": model, "summary": summarize(results),
            "sections": results}


def _f(x: Any, fmt: str = "{:,.0f}") -> str:
    return "—" if x is None else fmt.format(x)


def render_markdown(r: dict[str, Any]) -> str:
    """``gpu.md``: machine, model, one table per measurement, then every section's status."""
    parts = [_md_header(r), _md_rollout(r), _md_learner(r), _md_correctness(r), _md_sections(r)]
    return "\n".join(line for part in parts for line in part) + "\n"


def _md_header(r: dict[str, Any]) -> list[str]:
    e, plan = r["environment"], r["plan"]
    lines = ["# GPU kit results", ""]
    if r["mode"] == "dry-run":
        lines += [("> **Dry run** (CPU, tiny model): proves the kit's code paths, measures "
                   "nothing about a GPU."), ""]
    memory = e.get("gpu_memory") or _f(e.get("gpu_memory_gib"), "{:.0f} GiB")
    lines += [(f"`python -m benchmarks.gpu_kit{''.join(' ' + a for a in r['argv'])}`: "
               f"run {r['started_utc']}, commit {e.get('commit', 'unknown')}, "
               f"{r['wall_seconds']:.0f} s of a {r['budget_seconds']:.0f} s budget, status "
               f"**{r['status']}**. What each figure means: [docs/gpu-kit.md](../gpu-kit.md)."), "",
              "| GPU | memory | driver | CUDA | torch | transformers | DeepSpeed | Python |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |",
              (f"| {e.get('gpu', 'none (CPU)')} | {memory} | {e.get('driver', '—')} | "
               f"{e.get('cuda', '—')} | {e.get('torch')} | {e.get('transformers')} | "
               f"{e.get('deepspeed')} | {e.get('python')} |"), ""]
    m = r.get("model") or {}
    if m:
        spec = m["spec"]
        lines += [(f"Model: {spec['name']}, {m['params']:,} parameters, random {plan['dtype']} "
                   f"built on the device: {spec['num_layers']} layers, hidden {spec['hidden_size']}, "
                   f"{spec['num_kv_heads']} KV heads of {spec['head_dim']}, vocabulary "
                   f"{spec['vocab_size']:,}, {spec['image_size']} px images -> "
                   f"{spec['mm_tokens_per_image']} tokens; a decode step reads "
                   f"{m['decode_weight_bytes'] / 1e9:.3g} GB of weights."), ""]
    return lines


def _md_rollout(r: dict[str, Any]) -> list[str]:
    s = r["summary"]
    bw = s.get("copy_bandwidth_bytes_per_s")
    lines = ["## Rollout: HFBackend decode", "",
             (f"Copy bandwidth (device to device, read + write): **{_f(bw and bw / 1e12, '{:.3g}')} "
              "TB/s**. Bound: tokens/s <= batch x bandwidth / bytes read per decode step (weights + "
              "KV cache)."), "",
             ("| batch | prompt tokens | new tokens | decode tokens/s | bound tokens/s | share of "
              "bound | end-to-end tokens/s | ms per decode step | peak GiB |"),
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for b, v in sorted(s["rollout"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {b} | {v['prompt_tokens']} | {v['new_tokens']} | {_f(v['decode_tokens_per_s'])} | "
                     f"{_f(v['bound_tokens_per_s'])} | {_f(v['share_of_bound'], '{:.1%}')} | "
                     f"{_f(v['end_to_end_tokens_per_s'])} | {_f(v['decode_step_ms'], '{:.1f}')} | "
                     f"{_f(v.get('peak_allocated_gib') or v.get('peak_rss_gib'), '{:.1f}')} |")
    return lines + [""]


def _md_learner(r: dict[str, Any]) -> list[str]:
    s = r["summary"]
    lines = ["## Learner: one DeepSpeed update (world size 1, bf16, PPO token loss)", "",
             ("| ZeRO | sequences x tokens | micro-batch | step s | first step s | tokens/s | "
              "peak allocated GiB | peak reserved GiB |"),
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for stage, v in s["learner"].items():
        lines.append(f"| {stage[-1]} | {v['sequences']} x {v['seq_len']} | {v['micro_batch']} | "
                     f"{v['step_seconds']:.2f}{'' if v['steady'] else ' (warm-up only)'} | "
                     f"{v['first_step_seconds']:.2f} | {_f(v['tokens_per_s'])} | "
                     f"{_f(v.get('peak_allocated_gib') or v.get('peak_rss_gib'), '{:.1f}')} | "
                     f"{_f(v.get('peak_reserved_gib'), '{:.1f}')} |")
    lines += ["", "On CPU (dry run) the memory column is the process's peak resident set.", "",
              "## Weight sync, colocated (learner -> HFBackend on the same device)", "",
              "| ZeRO | GB | via host memory s | on device s | weights match |",
              "| --- | ---: | ---: | ---: | --- |"]
    for stage, v in s["weight_sync"].items():
        match = v["via_host_weights_match"] and v["on_device_weights_match"]
        lines.append(f"| {stage[-1]} | {v['bytes'] / 1e9:.3g} | {v['via_host_seconds']:.3g} | "
                     f"{v['on_device_seconds']:.3g} | {'yes' if match else 'NO'} |")
    return lines + [""]


def _md_correctness(r: dict[str, Any]) -> list[str]:
    co = r["sections"].get("correctness", {}).get("steps", {})
    g, fg = co.get("greedy_cpu_vs_device", {}), co.get("fairgrpo_step", {})
    lines = ["## Correctness on the device", ""]
    if "passed" in g:
        lines.append(f"- Greedy output, tiny Gemma3, CPU vs {g.get('device')}: "
                     f"**{'same' if g['passed'] else 'DIFFERENT'}** ({g['completions']} completions, "
                     f"{g['tokens']} tokens; largest log-prob difference {g['max_abs_logprob_diff']:.2e}"
                     f"{'' if g['passed'] else '; first mismatch ' + json.dumps(g['first_mismatch'])}).")
    if "tensors_moved" in fg:
        lines.append(f"- One FairGRPO step on {fg['device']} ({fg['completions']} completions, "
                     f"estimator {fg['estimator']}): {fg['tensors_moved']}/{fg['tensors']} weight "
                     f"tensors moved, loss {fg['loss_sum']:.4f}, grad norm {fg['grad_norm']:.3g}, weights "
                     f"finite: {fg['weights_finite']}, rollout weights match after the sync: "
                     f"{fg['synced_weights_match']}.")
    return lines + [""]


def _md_sections(r: dict[str, Any]) -> list[str]:
    lines = ["## Sections", "", "| section | status | seconds | notes |", "| --- | --- | ---: | --- |"]
    for name, rec in r["sections"].items():
        notes = [rec.get("reason") or rec.get("error") or ""]
        for step, v in rec.get("steps", {}).items():
            if v.get("status") not in ("ok", None):
                why = v.get("reason") or v.get("error")
                notes.append(f"{step}: {v['status']}" + (f" ({why})" if why else ""))
        note = "; ".join(n for n in notes if n).replace("|", "/").replace("\n", " ")[:400]
        lines.append(f"| {name} | {rec.get('status')} | {_f(rec.get('wall_seconds'), '{:.1f}')} | {note} |")
    for name in r.get("pending_sections", []):
        lines.append(f"| {name} | not run | — | the run ended before this section |")
    return lines


def write_outputs(out_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """``gpu.json`` and ``gpu.md`` in ``out_dir``, each written whole (temp file, then rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / "gpu.json", out_dir / "gpu.md")
    texts = (json.dumps(report, indent=1, default=str) + "\n", render_markdown(report))
    for path, text in zip(paths, texts):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths


# ------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, plan = parse(argv)
    if args.section is not None:  # a section process
        from benchmarks.gpu_kit_sections import Plan, run_section

        plan = Plan.from_json(Path(args.plan).read_text()) if args.plan else plan
        rec = run_section(args.section, plan, args.section_out,
                          args.deadline or time.time() + SECTION_BUDGET_S[args.section])
        return 0 if rec["status"] == "ok" else 1
    started = time.time()
    os.environ.update(section_env(plan.mode))
    env = environment(plan.mode)
    if plan.mode == "gpu":
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA GPU visible: run the kit on the GPU machine, or use --dry-run "
                  "on a CPU machine", file=sys.stderr)
            return 2
        if env["deepspeed"] == "not installed":
            print("[gpu-kit] warning: DeepSpeed is not installed: the learner sections and the "
                  "FairGRPO step will fail (carry the wheels: make gpu-wheels)", flush=True)
    print(f"[gpu-kit] {plan.mode}: sections {', '.join(args.sections)}; budget {args.budget_s:.0f} s; "
          f"results -> {args.out}", flush=True)
    out = Path(args.out)

    def progress(results: dict[str, dict[str, Any]]) -> None:
        write_outputs(out, build_report(args, plan, dict(env), results, started))

    results = run_all(args, plan, started, progress)
    report = build_report(args, plan, env, results, started)
    md, js = write_outputs(out, report)[::-1]
    print(f"[gpu-kit] {report['status']} in {report['wall_seconds']:.0f} s: wrote {md} and {js}",
          flush=True)
    return 0 if report["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
