"""``platform/`` stands in for the stdlib ``platform`` module everywhere it must.

Covers: stdlib callers (uuid, ray, torch) from the repo root, ``platform.system()``,
pickles of ``platform.uname()`` loading in a process that only has the stdlib module,
plain ``pytest`` and ``python -m pytest``, ``python -m platform.train --help``, Ray
workers started by ``platform.cluster.init_ray`` importing ``platform.*``. Hygiene
(nothing written to ``~/.ray`` or ``~/ray_results``) is tested in test_job_submit.py.
"""

from __future__ import annotations

import os
import pickle
import platform
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

STDLIB_PLATFORM = os.path.join(sysconfig.get_path("stdlib"), "platform.py")


def _run(args, cwd, env, timeout=120, **kw):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


def test_package_is_ours_and_exposes_the_stdlib_api():
    assert hasattr(platform, "__path__")
    assert Path(platform.__file__).resolve().parent.name == "platform"
    import importlib.util

    spec = importlib.util.spec_from_file_location("_probe_stdlib_platform", STDLIB_PLATFORM)
    stdlib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stdlib)
    public = {n for n in vars(stdlib) if not n.startswith("_")}
    assert public <= set(dir(platform)), sorted(public - set(dir(platform)))
    assert platform.system() == stdlib.system() and platform.system()
    assert platform.machine() == stdlib.machine()
    assert platform.python_version() == stdlib.python_version()
    assert tuple(platform.uname()) == tuple(stdlib.uname())


def test_stdlib_callers_import_from_repo_root(repo_root, run_env):
    code = textwrap.dedent("""
        import platform, uuid, ray, torch
        assert hasattr(platform, "__path__"), platform
        print(uuid.uuid4().hex, platform.system(), platform.uname().machine, torch.__version__,
              ray.__version__)
    """)
    res = _run([sys.executable, "-c", code], repo_root, run_env())
    assert res.returncode == 0, res.stderr
    hexid, system, *_ = res.stdout.split()
    assert len(hexid) == 32 and system == platform.system()


def test_uname_pickle_loads_in_a_stdlib_only_process(tmp_path, run_env):
    blob = tmp_path / "uname.pkl"
    blob.write_bytes(pickle.dumps(platform.uname()))
    assert type(platform.uname()).__module__ == "platform"
    code = ("import pickle, sys, platform; assert not hasattr(platform, '__path__'); "
            "u = pickle.load(open(sys.argv[1], 'rb')); "
            "assert type(u) is platform.uname_result, type(u); print(u.system, u.machine)")
    env = {k: v for k, v in run_env().items() if k != "PYTHONPATH"}
    res = _run([sys.executable, "-c", code, str(blob)], tmp_path, env)  # cwd outside the repo
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [platform.uname().system, platform.uname().machine]
    # ...and back: a stdlib pickle loads here.
    out = subprocess.run([sys.executable, "-c", "import pickle, platform, sys; "
                          "sys.stdout.buffer.write(pickle.dumps(platform.uname()))"],
                         cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert out.returncode == 0
    assert pickle.loads(out.stdout) == platform.uname()


@pytest.mark.parametrize("runner", ["pytest", "python -m pytest"])
def test_plain_pytest_and_python_m_pytest(repo_root, run_env, runner):
    # A dot-dir inside the repo: the root conftest applies, normal collection skips it.
    probe_dir = repo_root / f".shadow_probe_{os.getpid()}_{runner.split()[-1]}_{len(runner)}"
    probe_dir.mkdir()
    try:
        (probe_dir / "test_probe.py").write_text(textwrap.dedent("""
            import platform, uuid

            def test_probe():
                assert hasattr(platform, "__path__")
                from platform.train import ALGORITHMS
                assert "fairgrpo" in ALGORITHMS
                assert platform.system() and uuid.uuid4()
        """))
        cmd = ([str(Path(sys.executable).parent / "pytest")] if runner == "pytest"
               else [sys.executable, "-m", "pytest"])
        env = run_env()
        env.pop("PYTHONPATH", None)  # the root conftest / python -m must do the work
        res = _run(cmd + ["-q", "-p", "no:cacheprovider", str(probe_dir / "test_probe.py")],
                   repo_root, env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "1 passed" in res.stdout
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)


def test_train_help_lists_algorithms(repo_root, run_env):
    env = run_env()
    env.pop("PYTHONPATH", None)
    res = _run([sys.executable, "-m", "platform.train", "--help"], repo_root, env)
    assert res.returncode == 0, res.stderr
    for name in ("group-robust-ppo", "ppo", "fairgrpo"):
        assert f"  {name} " in res.stdout
    res = _run([sys.executable, "-m", "platform.train", "group-robust-ppo", "--help"], repo_root, env)
    assert res.returncode == 0, res.stderr
    assert "--lambda" in res.stdout and "--scenario" in res.stdout and "robust_mode" in res.stdout


def test_ray_workers_resolve_platform(ray_session):
    import ray

    @ray.remote
    def probe():
        import pickle as p
        import platform as pf
        from platform.cluster import storage_root

        return hasattr(pf, "__path__"), pf.system(), storage_root.__module__, p.dumps(pf.uname())

    is_pkg, system, module, blob = ray.get(probe.remote(), timeout=120)
    assert is_pkg and system == platform.system() and module == "platform.cluster"
    assert pickle.loads(blob) == platform.uname()
    # and objects of the package travel to workers and back
    assert ray.get(ray.put(platform.uname()), timeout=60) == platform.uname()


# Hygiene (nothing in ~/.ray or ~/ray_results, with HOME pointed at an empty dir) is checked
# end to end in test_job_submit.py: a Ray head, a job and an RLlib training run.
