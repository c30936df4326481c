"""Bad input at scale (issue #17, item 8): every CLI, fed random ``--set`` keys and values,
unknown flags, wrong types, out-of-range numbers and corrupt files.

The promises, checked on every example:

* the exit code is 0 or 2 (argparse's own exit included), never a traceback;
* with 2, stderr names what was wrong: a key, flag or file the example gave;
* no MLflow run is left RUNNING;
* nothing is half-written: bad input leaves no file behind (the tracking store aside);
* bad input is refused before any expensive work: Ray is never started.

Each CLI's ``main`` runs in this process through :func:`platform.cli.run_main`, as its
``python -m`` entry point does (cwd: the test's tmp dir). The expensive stages (Ray, an
MLflow run, the sweep, model generation, the MLflow server, the checkpoint export, the
synthetic data of ``platform.clinical.compare``) are tripwires that raise :class:`Reached`:
a random example that gets there counts as valid input and stops there; the cases that
must be refused (out-of-range values, folders a run would clear, incomplete checkpoints,
corrupt files) fail the test if they get there.
"""

from __future__ import annotations

import re
import shutil
import signal
import string
from collections.abc import Callable
from pathlib import Path
from platform.cli import run_main

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from base.config import fields_of

EXAMPLES = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


class Reached(Exception):
    """A valid example got as far as an expensive stage (the stage is the message)."""


# ------------------------------------------------------------------------------- the harness

@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow sqlite store with its tables made (MLflow takes seconds to make them)."""
    import mlflow

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def env(tmp_path, monkeypatch, empty_store):
    """Tripwires on the expensive stages; cwd, storage and a tracking store in ``tmp_path``."""
    from platform import cluster, sweep, tracking, ui
    from platform import evaluate as evaluate_mod
    from platform.clinical import compare
    from platform.clinical import export as clinical_export

    def tripwire(stage: str) -> Callable:
        def trip(*args, **kwargs):
            raise Reached(stage)
        return trip

    import ray

    for module, name in [(cluster, "init_ray"), (ray, "init"), (tracking, "tracked_run"),
                         (sweep, "run_sweep"), (evaluate_mod, "generate_answers"), (ui, "start"),
                         (clinical_export, "export_checkpoint"), (compare, "data_paths")]:
        monkeypatch.setattr(module, name, tripwire(f"{module.__name__}.{name}"))
    monkeypatch.setenv("EQUIRL_STORAGE", str(tmp_path / "store"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    sigterm = signal.getsignal(signal.SIGTERM)  # platform.ui installs its own handler
    yield Env(tmp_path)
    signal.signal(signal.SIGTERM, sigterm)
    assert_no_run_running(tmp_path / "mlflow.db")


class Env:
    def __init__(self, root: Path):
        self.root = root
        self.db = root / "mlflow.db"
        self.uri = f"sqlite:///{self.db}"


def snapshot(root: Path) -> set[str]:
    """Every path under ``root`` except the tracking store (mlflow.db, its artifacts)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if not p.name.startswith("mlflow.db") and "mlruns" not in p.relative_to(root).parts}


def assert_no_run_running(db: Path) -> None:
    if not db.exists():
        return
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    exps = [e.experiment_id for e in client.search_experiments(view_type=3)]
    running = [r.info.run_id for r in client.search_runs(exps, run_view_type=3)
               if r.info.status == "RUNNING"] if exps else []
    assert running == [], f"runs left RUNNING: {running}"


def call(main: Callable[[list[str]], int], argv: list[str], capsys) -> tuple[int | str, str]:
    """``run_main(main, argv)`` -> (exit code, or the stage a valid example reached; stderr)."""
    capsys.readouterr()
    try:
        rc: int | str = run_main(main, argv)
    except SystemExit as exc:  # argparse: --help (0) and its own errors (2)
        rc = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except Reached as exc:
        rc = f"reached {exc}"
    return rc, capsys.readouterr().err


def names_given(argv: list[str], config: dict | None = None) -> set[str]:
    """What an error message may name: the flags, ``--set`` keys (and each dotted part),
    the config file's keys and the files given."""
    out: set[str] = set()
    keys: set[str] = set()  # the user's own keys count however short

    def add_key(key: str) -> None:
        parts = [p for p in key.strip().split(".")]
        keys.update(".".join(parts[:i + 1]) for i in range(len(parts)))
        keys.update(parts)

    for i, a in enumerate(argv):
        if a.startswith("-"):
            flag = a.split("=", 1)[0]
            out.update({flag, flag.lstrip("-"), flag.lstrip("-").replace("-", "_")})
            if flag in ("--set", "--sft-set"):
                value = a.split("=", 1)[1] if "=" in a else " ".join(argv[i + 1:i + 2])
                add_key(value.partition("=")[0])
        elif "/" in a:
            out.update({a, Path(a).name})

    def walk(d: dict, prefix: str = "") -> None:
        for k, v in d.items():
            add_key(f"{prefix}{k}")
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")

    if isinstance(config, dict):
        walk(config)
    if any("attributes" in n for n in out):  # "group attribute 'x' is not a column; ..."
        out.add("group attribute")
    return {n for n in out if len(n.strip()) >= 2} | {k for k in keys if k.strip()}


def names_something(err: str, names: set[str]) -> bool:
    return any(re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", err) for n in names)


def check(env: Env, main, argv: list[str], capsys, config: dict | None = None,
          must_fail: bool = False, names: set[str] = frozenset()) -> tuple[int | str, str]:
    """Run one example and check the promises; returns its outcome and stderr."""
    import ray

    before, ray_before = snapshot(env.root), ray.is_initialized()  # a test session's own Ray
    rc, err = call(main, argv, capsys)
    assert rc in (0, 2) or str(rc).startswith("reached"), (rc, argv, err[-3000:])
    assert "Traceback" not in err, (argv, err[-3000:])
    if must_fail:
        assert rc == 2, (rc, argv, err[-2000:])
    if rc == 2:
        assert "error: " in err, (argv, err)
        assert names_something(err, names_given(argv, config) | names), (argv, err)
        assert snapshot(env.root) == before, (argv, sorted(snapshot(env.root) - before))
    assert ray.is_initialized() == ray_before, argv
    return rc, err


# ------------------------------------------------------------------------------ strategies

KEY_CHARS = string.ascii_lowercase + "_"
SPECIAL_VALUES = ["nan", "NaN", ".nan", "inf", "-inf", ".inf", "1e400", "-1e400", "-1", "0", "-0",
                  "1.5", "0.5", "1e-400", "99999999999999999999999", "-99999999999999999999",
                  "", " ", "null", "~", "true", "false", "yes", "[]", "{}", "[1, 2]", "[a, b]",
                  "{a: 1}", "[", "{", "'", '"', "a: b", "x", "0x10", "1_000", "１", "é", "-",
                  "--", "=", "a=b", "!!python/object/apply:os.system [echo]", "&a b", "*a"]
VALUES = st.one_of(
    st.sampled_from(SPECIAL_VALUES),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8),
)
#: fields that name folders a run writes or deletes: never given random values here
WRITE_PATHS = {"checkpoint_dir", "export_dir", "run_name"}


def _near_miss(name: str) -> st.SearchStrategy[str]:
    """A misspelling of ``name``: a letter dropped, doubled or swapped, a suffix, the wrong case,
    a bad dotted path."""
    n = len(name)
    return st.one_of(
        st.integers(0, n - 1).map(lambda i: name[:i] + name[i + 1:]),
        st.integers(0, n - 1).map(lambda i: name[:i] + name[i] + name[i:]),
        st.integers(0, max(0, n - 2)).map(lambda i: name[:i] + name[i + 1:i + 2] + name[i]
                                          + name[i + 2:]),
        st.text(KEY_CHARS, min_size=1, max_size=3).map(lambda s: f"{name}{s}"),
        st.just(name.upper()),
        st.just(f"{name}.inner"),
        st.just(name.replace(".", "..") if "." in name else f".{name}"),
        st.just(f"{name}."),
    )


def mostly(valid: st.SearchStrategy[str], other: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``valid`` three times in four, so examples also get past the first check."""
    return st.one_of(valid, valid, valid, other)


def values_for(type_name: str) -> st.SearchStrategy[str]:
    """Plausible values of a config field of type ``type_name`` (``base.config`` spelling)."""
    literals = re.findall(r"'([^']*)'", type_name)
    if literals:
        return st.sampled_from(literals)
    if re.fullmatch(r"[\d |]+", type_name):  # Literal[2, 3]
        return st.sampled_from(type_name.replace(" ", "").split("|"))
    if type_name.startswith("list"):
        return st.sampled_from(["[sex]", "[16, 16]", "[]", "age_band,sex", "[1]"])
    if type_name.startswith("dict"):
        return st.sampled_from(["{}", "{alpha: 1}"])
    base = type_name.split(" | ")[0]
    return {"int": st.integers(-3, 50).map(str), "float": st.floats(-1, 2).map(repr),
            "bool": st.sampled_from(["true", "false"])}.get(base, st.sampled_from(["", "x"]))


def _real_fields(cls: type) -> dict[str, str]:
    """Dotted leaf field -> its type name, without the folders a run writes."""
    return {f.name: f.type for f in fields_of(cls) if f.name.rsplit(".", 1)[-1] not in WRITE_PATHS}


def keys_for(cls: type) -> st.SearchStrategy[str]:
    """Dotted keys of ``cls``: real leaf fields and sections, and near misses of them."""
    fields = _real_fields(cls)
    real = sorted(set(fields) | {k.rsplit(".", 1)[0] for k in fields if "." in k})
    return st.one_of(st.sampled_from(real), st.sampled_from(real).flatmap(_near_miss),
                     st.text(KEY_CHARS + ".", min_size=1, max_size=10)).filter(
        lambda k: k.rsplit(".", 1)[-1] not in WRITE_PATHS)


def overrides(cls: type) -> st.SearchStrategy[list[str]]:
    """``--set KEY=VALUE`` pairs (1-3), as argv: mostly real fields with plausible values."""
    fields = _real_fields(cls)
    real = st.sampled_from(sorted(fields)).flatmap(
        lambda k: st.tuples(st.just(k), mostly(values_for(fields[k]), VALUES)))
    pair = st.one_of(real, real, st.tuples(keys_for(cls), VALUES)).map(
        lambda kv: ["--set", f"{kv[0]}={kv[1]}"])
    return st.lists(pair, min_size=1, max_size=3).map(lambda xs: [a for x in xs for a in x])


UNKNOWN_FLAGS = st.one_of(
    st.from_regex(r"\A--[a-z][a-z-]{1,10}\Z"),
    st.sampled_from(["--sets", "--seeds", "--iteration", "--lamda", "--Seed", "-x", "--",
                     "--set=", "--tracking_uri", "--run_name", "---seed"]))


def flag_values(flags: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[str]]:
    """0-3 of ``flags`` with values (``--flag v`` or ``--flag=v``), maybe an unknown flag."""
    def one(flag: str) -> st.SearchStrategy[list[str]]:
        values = flags[flag]
        if values is None:  # a switch
            return st.just([flag])
        return st.tuples(values, st.booleans()).map(
            lambda vb: [f"{flag}={vb[0]}"] if vb[1] else [flag, vb[0]])

    known = st.lists(st.sampled_from(sorted(flags)).flatmap(one), max_size=3)
    unknown = st.lists(UNKNOWN_FLAGS.map(lambda f: [f]), max_size=1)
    return st.tuples(known, unknown).map(lambda ku: [a for x in ku[0] + ku[1] for a in x])


def config_files() -> st.SearchStrategy[tuple[str, object]]:
    """``--config`` contents: a list, a scalar, invalid YAML, unknown keys, nested junk."""
    junk = st.dictionaries(st.text(KEY_CHARS, min_size=3, max_size=8), VALUES, max_size=3)
    return st.one_of(
        st.sampled_from(["- seed: 1\n- lr: 2\n", "42\n", "just a string\n", "seed: [unclosed\n",
                         "seed: 1\nseed: 2\n", "{a: {b: {c: 1}}}\n", "\t- x\n", "a: !!binary x\n",
                         "!!python/object/apply:os.system [echo]\n", "---\n...\n---\nx: 1\n"]
                        ).map(lambda text: (text, None)),
        junk.map(lambda d: (yaml.safe_dump(d), d)),
        junk.map(lambda d: (yaml.safe_dump({"nested": d}), {"nested": d})),
    )


def with_config(env: Env) -> st.SearchStrategy[tuple[list[str], object]]:
    """``(argv, parsed config)`` for a ``--config`` file written into the tmp dir."""
    def write(item: tuple[str, object]) -> tuple[list[str], object]:
        text, parsed = item
        path = env.root / "config.yaml"
        path.write_text(text)
        if parsed is None:
            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError:
                pass
        return ["--config", str(path)], parsed

    return config_files().map(write)


INTS = mostly(st.integers(0, 40).map(str), st.one_of(st.integers(-5, -1).map(str), st.sampled_from(
    ["x", "1.5", "nan", "", "-", "1e9", str(2**70), str(-(2**70))])))
FLOATS = mostly(st.floats(0, 1).map(repr), st.one_of(st.floats(-2, 3).map(repr), st.sampled_from(
    ["nan", "inf", "-inf", "x", ""])))
TEXT = st.one_of(st.sampled_from(["", " ", ",", "a,b", "x", "-x", "..", "é"]),
                 st.text(string.ascii_letters + ",|_-", max_size=8))


# ------------------------------------------------------------------ property: platform.train

def _train_main():
    from platform.train import main

    return main


def choice(*valid: str) -> st.SearchStrategy[str]:
    """Mostly one of ``valid``, else any text."""
    return mostly(st.sampled_from(valid), TEXT)


SCENARIO = choice("rural", "urban", "HospitalRural-v0", "starved")
GROUP_KEY = choice("age_group", "sex", "age_group+sex")
ALLOCATION_FLAGS = {"--seed": INTS, "--iterations": INTS, "--scenario": SCENARIO,
                    "--lambda": FLOATS, "--mode": choice("worst_group", "ggf", "gap"),
                    "--group-key": GROUP_KEY, "--num-env-runners": INTS,
                    "--resume": None}
CLINICAL_FLAGS = {"--seed": INTS, "--iterations": INTS, "--resume": None, "--data": TEXT,
                  "--model": TEXT}
TABULAR_FLAGS = {"--dataset": choice("actg175", "kidney"),
                 "--sensitive": choice("race", "race,gender", "sex"), "--epochs": INTS,
                 "--fairness-loss": choice("eo", "dp", "eo+dp"), "--bootstrap": INTS,
                 "--seed": INTS, "--resume": None}
HEURISTIC_FLAGS = {"--seed": INTS, "--policy": choice("triage", "fcfs", "random"),
                   "--scenario": SCENARIO, "--group-key": GROUP_KEY,
                   "--iterations": INTS, "--lambda": FLOATS}


def _config_class(algorithm: str) -> type:
    from platform.allocation.config import AllocationConfig, HeuristicConfig
    from platform.clinical.config import ALGORITHMS, ClinicalConfig
    from platform.tabular import TabularConfig

    if algorithm in ALGORITHMS:
        return ClinicalConfig
    return {"group-robust-ppo": AllocationConfig, "ppo": AllocationConfig,
            "heuristic": HeuristicConfig, "fairgrad-classifier": TabularConfig}[algorithm]


def _flags_of(algorithm: str) -> dict:
    from platform.clinical.config import ALGORITHMS

    if algorithm in ALGORITHMS:
        return CLINICAL_FLAGS
    return {"heuristic": HEURISTIC_FLAGS, "fairgrad-classifier": TABULAR_FLAGS}.get(
        algorithm, ALLOCATION_FLAGS)


def _safe_tail(env: Env, algorithm: str) -> list[str]:
    """Given last (so they win): the tmp tracking store, and for the clinical track a run name
    and folders inside the tmp dir (a fresh clinical run clears its checkpoint folder)."""
    from platform.clinical.config import ALGORITHMS

    tail = ["--tracking-uri", env.uri, "--experiment", "bad-input"]
    if algorithm in ALGORITHMS:
        tail += ["--run-name", "fuzz", "--set", f"checkpoint_dir={env.root / 'ck'}",
                 "--set", f"export_dir={env.root / 'export'}"]
    return tail


TRAIN_ALGORITHMS = ["group-robust-ppo", "ppo", "heuristic", "fairgrpo", "grpo", "sft",
                    "fairgrad-classifier"]


@pytest.mark.parametrize("algorithm", TRAIN_ALGORITHMS)
def test_train_random_set_keys_and_values(algorithm, env, capsys):
    main = _train_main()

    @EXAMPLES
    @given(sets=overrides(_config_class(algorithm)))
    def run(sets):
        check(env, main, [algorithm, *sets, *_safe_tail(env, algorithm)], capsys)

    run()


@pytest.mark.parametrize("algorithm", TRAIN_ALGORITHMS)
def test_train_random_flags_and_config_files(algorithm, env, capsys):
    main = _train_main()

    @EXAMPLES
    @given(flags=flag_values(_flags_of(algorithm)), config=st.one_of(st.none(), with_config(env)))
    def run(flags, config):
        argv, parsed = config if config else ([], None)
        check(env, main, [algorithm, *flags, *argv, *_safe_tail(env, algorithm)], capsys,
              config=parsed if isinstance(parsed, dict) else None)

    run()


@EXAMPLES
@given(first=st.one_of(st.sampled_from(["", "-", "--set", "PPO", "fairGRPO", "dqn", "-h"]),
                       st.text(KEY_CHARS + "-", max_size=12)))
def test_train_unknown_algorithm(env, capsys, first):
    from platform.train import ALGORITHMS

    if first in ALGORITHMS:
        return
    argv = [first, "--tracking-uri", env.uri]
    rc, _ = check(env, _train_main(), argv, capsys, names={"algorithm"})
    assert rc == (0 if first == "-h" else 2)


# ------------------------------------------------------------ property: the other commands

def _sweep(argv):
    from platform.sweep import main

    return main(argv)


SWEEP_FLAGS = {"--scenarios": choice("rural", "rural,urban"), "--lambdas": choice(
    "0,0.3", "0,nan", "1.5", "0,0", "-0.1", "0.3,inf"), "--modes": choice("worst_group", "ggf,gap"),
    "--baselines": choice("triage", "fcfs,random"),
    "--iterations-per-scenario": st.sampled_from(["rural=3", "rural=0", "x=1", "rural", "=",
                                                  "rural=1,rural=2", "urban=-1"]),
    "--seeds": INTS, "--seed": INTS, "--iterations": INTS, "--max-failures": INTS,
    "--max-concurrent": INTS, "--name": st.sampled_from(["s1", "s 2", "sweep"]),
    "--resume": None, "--no-report": None}


def _report(argv):
    from platform.report import main

    return main(argv)


REPORT_FLAGS = {"--experiment": TEXT, "--baseline-lambda": FLOATS, "--claim-lambda": FLOATS,
                "--parent-run-id": TEXT, "--partial": TEXT, "--no-log": None,
                "--check-convergence": None}


def _ui(argv):
    from platform.ui import main

    return main(argv)


UI_FLAGS = {"--port": st.one_of(INTS, st.sampled_from(["0", "65535", "65536", "-1", "80000",
                                                       str(2**64)])),
            "--experiment": TEXT}


def _export(argv):
    from platform.export import main

    return main(argv)


EXPORT_FLAGS = {"--run": st.one_of(TEXT, st.text(string.hexdigits, min_size=32, max_size=32)),
                "--step": INTS}


def _compare(argv):
    from platform.clinical.compare import main

    return main(argv)


COMPARE_FLAGS = {"--algorithms": choice("fairgrpo,grpo", "ppo", "fairgrpo,,", "sft"),
                 "--seeds": choice("0,1", "x", "-1", "1.5", "0,0"),
                 "--iterations": INTS, "--n-per-source": INTS, "--sft-iterations": INTS,
                 "--sft-keep": FLOATS, "--hard-groups": choice("F|>75", "M|<=25,F|>75"),
                 "--hard-strength": FLOATS,
                 "--sft-seed": INTS, "--resume": None, "--report-only": None}


def _compare_tail(env: Env) -> list[str]:
    return ["--out", str(env.root / "cmp"), "--tracking-uri", env.uri]


COMMANDS = {
    "sweep": (_sweep, ["group-robust-ppo"], SWEEP_FLAGS,
              lambda env: ["--tracking-uri", env.uri]),
    "report": (_report, ["--experiment", "nope"], REPORT_FLAGS,
               lambda env: ["--out", str(env.root / "report"), "--tracking-uri", env.uri]),
    "ui": (_ui, [], UI_FLAGS, lambda env: ["--tracking-uri", env.uri]),
    "export": (_export, ["--run", "0" * 32], EXPORT_FLAGS,
               lambda env: ["--out", str(env.root / "model"), "--tracking-uri", env.uri]),
    "compare": (_compare, [], COMPARE_FLAGS, _compare_tail),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_commands_random_flags(command, env, capsys):
    main, head, flags, tail = COMMANDS[command]

    @EXAMPLES
    @given(argv=flag_values(flags))
    def run(argv):
        check(env, main, [*head, *argv, *tail(env)], capsys)

    run()


@pytest.mark.parametrize("command", ["sweep", "compare"])
def test_commands_random_set_and_config(command, env, capsys):
    from platform.allocation.config import AllocationConfig
    from platform.clinical.config import ClinicalConfig

    main, head, _, tail = COMMANDS[command]
    cls = AllocationConfig if command == "sweep" else ClinicalConfig

    @EXAMPLES
    @given(sets=st.one_of(st.just([]), overrides(cls)),
           config=st.one_of(st.none(), with_config(env)))
    def run(sets, config):
        argv, parsed = config if config else ([], None)
        check(env, main, [*head, *sets, *argv, *tail(env)], capsys,
              config=parsed if isinstance(parsed, dict) else None)

    run()


# ----------------------------------------------------------- property: commands on files

@pytest.fixture
def files(env):
    """A small valid clinical dataset, a fake model dir and a predictions table, in tmp."""
    from envs.clinical.dataset import save_dataset
    from envs.clinical.synth import make_synthetic

    d = env.root / "inputs"
    (d / "model").mkdir(parents=True)
    (d / "model" / "config.json").write_text("{}")
    save_dataset(make_synthetic(n_per_source=6, image_size=8), d / "clinical.parquet")
    import pandas as pd

    pd.DataFrame({"y": [0, 1] * 10, "yhat": [0, 1, 1, 0] * 5, "g": ["a", "b"] * 10,
                  "h": ["x"] * 10 + ["z"] * 10, "p": [0.1, 0.9, 0.8, 0.3] * 5,
                  "txt": ["u", "v"] * 10}).to_csv(d / "preds.csv", index=False)
    return d


def _fairness(argv):
    from platform.fairness import main

    return main(argv)


COLUMNS = choice("y", "yhat", "g", "h", "p", "txt", "g,h", "g,,h", "y,g", "nope", "")
FAIRNESS_FLAGS = {"--label": COLUMNS, "--pred": COLUMNS, "--sensitive": COLUMNS,
                  "--score": COLUMNS, "--json": None, "--ci": None, "--n-boot": INTS,
                  "--seed": INTS, "--min-group-size": INTS,
                  "--labels": choice("0,1", "1", "0,1,2", "a,b"),
                  "--pos-label": choice("0", "1", "2", "1.0"),
                  "--average": choice("auto", "macro", "binary")}


def test_fairness_random_flags(env, files, capsys):
    head = ["--data", str(files / "preds.csv"), "--label", "y", "--pred", "yhat",
            "--sensitive", "g"]

    @EXAMPLES
    @given(argv=flag_values(FAIRNESS_FLAGS))
    def run(argv):
        check(env, _fairness, [*head, *argv], capsys)

    run()


def _data(argv):
    from platform.data import main

    return main(argv)


DATA_COMMANDS = {
    "check": (lambda files: ["check", str(files / "clinical.parquet")],
              {"--split": choice("train", "val", "test"),
               "--group-attributes": choice("sex", "age_band", "race", "sex age_band")}),
    "synth": (lambda files: ["synth", "--out", str(files.parent / "synth"), "--n-per-source", "4",
                             "--image-size", "8"],
              {"--n-per-source": st.one_of(st.integers(-3, 6).map(str), INTS.filter(
                  lambda v: not v.lstrip("-").isdigit() or int(v) <= 6)),
               "--image-size": st.one_of(st.integers(-3, 12).map(str), st.sampled_from(["x", ""])),
               "--imbalance": FLOATS, "--hard-strength": FLOATS, "--missing-rate": FLOATS,
               "--seed": INTS, "--sources": choice("synth-cxr", "synth-derm"),
               "--hard-groups": choice("F|>75", "M|<=25"), "--minority-groups": choice("F|>75")}),
    "convert": (lambda files: ["convert", "ham10000", str(files / "nowhere"),
                               str(files.parent / "converted")],
                {"--image-root": TEXT, "--embed-images": None, "--seed": INTS}),
}


@pytest.mark.parametrize("command", sorted(DATA_COMMANDS))
def test_data_random_flags(command, env, files, capsys):
    head, flags = DATA_COMMANDS[command]

    @EXAMPLES
    @given(argv=flag_values(flags))
    def run(argv):
        check(env, _data, [*head(files), *argv], capsys)

    run()


def _evaluate(argv):
    from platform.evaluate import main

    return main(argv)


EVALUATE_FLAGS = {"--split": choice("train", "val", "test"),
                  "--attributes": choice("sex", "age_band", "sex,age_band", "race"),
                  "--min-group-size": INTS,
                  "--bootstrap": INTS, "--seed": INTS, "--batch-size": INTS,
                  "--max-new-tokens": INTS, "--answer-only": choice("auto", "on", "off"),
                  "--model": TEXT, "--data": TEXT}


def test_evaluate_random_flags(env, files, capsys):
    head = ["clinical", "--model", str(files / "model"), "--data", str(files / "clinical.parquet")]
    tail = ["--out", str(env.root / "eval"), "--tracking-uri", env.uri]

    @EXAMPLES
    @given(argv=flag_values(EVALUATE_FLAGS))
    def run(argv):
        check(env, _evaluate, [*head, *argv, *tail], capsys)

    run()


# --------------------------------------------------------------------------- corrupt inputs

def _truncated_parquet(files: Path) -> Path:
    data = (files / "clinical.parquet").read_bytes()
    out = files / "truncated.parquet"
    out.write_bytes(data[: len(data) // 2])
    return out


def _wrong_types_parquet(files: Path) -> Path:
    """The clinical schema with ``options`` a plain string, ``age`` text and ``split`` ints."""
    import pandas as pd

    df = pd.read_parquet(files / "clinical.parquet")
    df["options"] = df["options"].map(lambda o: ",".join(o))
    df["age"] = "old"
    df["split"] = 1
    out = files / "wrong_types.parquet"
    df.to_parquet(out)
    return out


def _wrong_types_predictions(files: Path) -> Path:
    """Predictions whose label column holds lists and whose group column holds dicts."""
    import pandas as pd

    df = pd.DataFrame({"y": [[0, 1], [1]] * 5, "yhat": [0, 1] * 5, "g": [{"a": 1}, {"b": 2}] * 5})
    out = files / "wrong_types_preds.parquet"
    df.to_parquet(out)
    return out


CORRUPT = {"truncated": _truncated_parquet, "wrong-types": _wrong_types_parquet}


@pytest.mark.parametrize("corrupt", sorted(CORRUPT))
@pytest.mark.parametrize("command", ["train --set data.path", "train --data", "evaluate",
                                     "data check", "fairness"])
def test_corrupt_parquet_exits_2_naming_the_file(command, corrupt, env, files, capsys):
    path = CORRUPT[corrupt](files)
    if command == "fairness" and corrupt == "wrong-types":
        path = _wrong_types_predictions(files)
    argv, main = {
        "train --set data.path": (["grpo", "--set", f"data.path={path}",
                                   *_safe_tail(env, "grpo")], _train_main()),
        "train --data": (["sft", "--data", str(path), *_safe_tail(env, "sft")], _train_main()),
        "evaluate": (["clinical", "--model", str(files / "model"), "--data", str(path),
                      "--out", str(env.root / "eval"), "--tracking-uri", env.uri], _evaluate),
        "data check": (["check", str(path)], _data),
        "fairness": (["--data", str(path), "--label", "y", "--pred", "yhat", "--sensitive", "g"],
                     _fairness),
    }[command]
    check(env, main, argv, capsys, must_fail=True)


@pytest.mark.parametrize("text", ["- seed: 1\n- iterations: 2\n", "7\n", "[unclosed\n"])
@pytest.mark.parametrize("command", ["ppo", "heuristic", "fairgrpo", "fairgrad-classifier",
                                     "sweep", "compare"])
def test_config_that_is_not_a_mapping_exits_2(command, text, env, capsys):
    path = env.root / "list.yaml"
    path.write_text(text)
    if command == "sweep":
        main, argv = _sweep, ["group-robust-ppo", "--config", str(path), "--tracking-uri", env.uri]
    elif command == "compare":
        main, argv = _compare, ["--config", str(path), *_compare_tail(env)]
    else:
        main, argv = _train_main(), [command, "--config", str(path), *_safe_tail(env, command)]
    check(env, main, argv, capsys, must_fail=True)


# ------------------------------------------------ out-of-range values found by the above

MUST_FAIL = {  # case -> (main, argv, what the message names)
    "ppo --seed -1": ("train", ["ppo", "--seed", "-1"], "seed"),
    "ppo seed beyond numpy's range": ("train", ["ppo", "--set", "seed=4294967296", "--set",
                                                "eval_seed_base=9999999999"], "seed"),
    "heuristic --seed -3": ("train", ["heuristic", "--seed", "-3"], "seed"),
    "fairgrad-classifier --seed -1": ("train", ["fairgrad-classifier", "--seed", "-1"], "seed"),
    "fairgrad-classifier --seed 2**40": ("train", ["fairgrad-classifier", "--seed", str(2**40)],
                                         "seed"),
    "ppo env_config key": ("train", ["ppo", "--set", "env_config.bogus=1"], "env_config.bogus"),
    "heuristic env_config value": ("train", ["heuristic", "--set", "env_config.max_decisions=-5"],
                                   "env_config.max_decisions"),
    "group-robust-ppo --group-key": ("train", ["group-robust-ppo", "--group-key", "zodiac"],
                                     "group_key"),
    "ppo --set algorithm": ("train", ["ppo", "--set", "algorithm=group-robust-ppo"], "algorithm"),
    "fairgrpo --set algorithm": ("train", ["fairgrpo", "--set", "algorithm=grpo"], "algorithm"),
    "sweep --seeds 2**70": ("sweep", ["group-robust-ppo", "--seeds", str(2**70)], "--seeds"),
    "sweep --max-concurrent 0": ("sweep", ["group-robust-ppo", "--max-concurrent", "0"],
                                 "--max-concurrent"),
    "sweep env_config key": ("sweep", ["group-robust-ppo", "--set", "env_config.bogus=1"],
                             "env_config.bogus"),
    "compare --seeds x": ("compare", ["--seeds", "x"], "--seeds"),
    "compare --set before the data": ("compare", ["--set", "learner.lr=-1"], "learner.lr"),
    "fairness --seed -1": ("fairness", ["--ci", "--seed", "-1"], "--seed"),
    "data synth --seed -1": ("data", ["synth", "--seed", "-1"], "seed"),
    "ui --port 70000": ("ui", ["--port", "70000"], "--port"),
}


@pytest.mark.parametrize("case", sorted(MUST_FAIL))
def test_out_of_range_values_exit_2_before_any_work(case, env, files, capsys):
    kind, argv, name = MUST_FAIL[case]
    if kind == "train":
        main, argv = _train_main(), [*argv, *_safe_tail(env, argv[0])]
    elif kind == "fairness":
        main, argv = _fairness, ["--data", str(files / "preds.csv"), "--label", "y", "--pred",
                                 "yhat", "--sensitive", "g", *argv]
    elif kind == "data":
        main, argv = _data, [*argv, "--out", str(env.root / "synth"), "--n-per-source", "4"]
    elif kind == "compare":
        main, argv = _compare, [*argv, *_compare_tail(env)]
    else:
        main, tail = {"sweep": (_sweep, ["--tracking-uri", env.uri]),
                      "ui": (_ui, ["--tracking-uri", env.uri])}[kind]
        argv = [*argv, *tail]
    _, err = check(env, main, argv, capsys, must_fail=True)
    assert re.search(rf"(?<![\w.-]){re.escape(name)}\b", err), err


# --------------------------------------------- folders a run would clear, checkpoints

def _precious(env: Env) -> Path:
    """A folder of someone's files, which no command may delete."""
    folder = env.root / "precious"
    folder.mkdir(exist_ok=True)
    (folder / "thesis.tex").write_text("years of work")
    return folder


WRITE_CASES = {
    "--run-name absolute": lambda env, p: ("train", ["grpo", "--run-name", str(p)], "--run-name"),
    "--run-name with ..": lambda env, p: ("train", ["grpo", "--run-name", "../../../../precious"],
                                          "--run-name"),
    "--experiment absolute": lambda env, p: ("train", ["grpo", "--experiment", str(p.parent),
                                                       "--run-name", p.name], "--experiment"),
    "checkpoint_dir of other files": lambda env, p: (
        "train", ["grpo", "--set", f"checkpoint_dir={p}"], "checkpoint_dir"),
    "export_dir of other files": lambda env, p: (
        "train", ["grpo", "--set", f"checkpoint_dir={env.root / 'ck'}", "--set",
                  f"export_dir={p}"], "export_dir"),
    "export --out of other files (clinical run)": lambda env, p: (
        "export", ["--run", _finished_run(env, "clinical", "r", {"equirl.track": "clinical"}),
                   "--out", str(p)], "--out"),
    "export --out of other files (allocation run)": lambda env, p: (
        "export", ["--run", _finished_run(env, "allocation", "r", {"equirl.track": "allocation"}),
                   "--out", str(p)], "--out"),
}


@pytest.mark.parametrize("case", sorted(WRITE_CASES))
def test_a_folder_of_other_files_is_never_cleared(case, env, capsys):
    precious = _precious(env)
    kind, argv, name = WRITE_CASES[case](env, precious)
    main = _train_main() if kind == "train" else _export
    argv = [*argv, "--tracking-uri", env.uri]
    if kind == "train" and "--experiment" not in argv:
        argv += ["--experiment", "bad-input"]
    _, err = check(env, main, argv, capsys, must_fail=True)
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert name in err, err


def _clinical_checkpoint(root: Path, missing: str) -> Path:
    """A clinical checkpoint folder (``latest`` -> step-000002) with ``missing`` left out."""
    import torch

    step = root / "step-000002"
    ds = step / "learner" / "ds"
    ds.mkdir(parents=True)
    files = {"driver.pt": None, "model_states": ds / "mp_rank_00_model_states.pt",
             "optim_states": ds / "zero_pp_rank_0_mp_rank_00_optim_states.pt"}
    for name, path in files.items():
        if name == missing:
            continue
        if name == "driver.pt":
            torch.save({"step": 2, "run_id": "0" * 32}, step / "driver.pt")
        else:
            torch.save({}, path)
    if missing == "corrupt driver.pt":
        (step / "driver.pt").write_bytes(b"\x80\x02 not a torch file")
    (root / "latest").write_text(step.name)
    return step


CHECKPOINT_CASES = {  # what is wrong -> the words the message must hold
    "driver.pt": "no checkpoint under",
    "model_states": "no learner/ds/*model_states.pt",
    "optim_states": "no learner/ds/*optim_states.pt",
    "corrupt driver.pt": "cannot read",
}


@pytest.mark.parametrize("missing", sorted(CHECKPOINT_CASES))
def test_clinical_resume_from_an_incomplete_checkpoint_exits_2_before_ray(missing, env, capsys):
    _clinical_checkpoint(env.root / "ck", missing)
    argv = ["grpo", "--resume", *_safe_tail(env, "grpo")]
    _, err = check(env, _train_main(), argv, capsys, must_fail=True)
    assert CHECKPOINT_CASES[missing] in err, err


def _finished_run(env: Env, experiment: str, name: str, tags: dict[str, str]) -> str:
    import mlflow

    client = mlflow.MlflowClient(env.uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=name, tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


@pytest.mark.parametrize("step", [None, 2])
@pytest.mark.parametrize("missing", ["driver.pt", "model_states", "optim_states"])
def test_export_of_an_incomplete_checkpoint_exits_2_and_writes_nothing(missing, step, env,
                                                                       capsys):
    root = env.root / "ck"
    _clinical_checkpoint(root, missing)
    run_id = _finished_run(env, "clinical", "fairgrpo-seed0",
                           {"equirl.track": "clinical", "equirl.checkpoint": str(root)})
    argv = ["--run", run_id, "--out", str(env.root / "model"), "--tracking-uri", env.uri]
    argv += ["--step", str(step)] if step else []
    _, err = check(env, _export, argv, capsys, must_fail=True)
    words = {"driver.pt": "no complete checkpoint" if step is None else "no checkpoint step-"}
    assert words.get(missing, CHECKPOINT_CASES[missing]) in err, err
    assert not (env.root / "model").exists()


@pytest.mark.parametrize("missing", [
    "algorithm_state.pkl", "learner_group/learner/rl_module/default_policy/module_state.pkl"])
def test_allocation_resume_from_an_incomplete_checkpoint_exits_2_before_ray(missing, env,
                                                                            capsys):
    from platform.allocation.rllib import CHECKPOINT_FILES

    import mlflow

    folder = env.root / "store" / "iter_000002"
    for name in CHECKPOINT_FILES:
        if name != missing:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"")
    run_id = _finished_run(env, "bad-input", "alloc-run", {"equirl.checkpoint": str(folder)})
    argv = ["group-robust-ppo", "--resume", "--run-name", "alloc-run", *_safe_tail(env, "ppo")]
    _, err = check(env, _train_main(), argv, capsys, must_fail=True)
    assert f"incomplete: no {missing}" in err, err
    assert mlflow.MlflowClient(env.uri).get_run(run_id).info.status == "FINISHED"
