import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # a suite started in the background (`nohup ... &`) ignores SIGINT, and every child process
    # inherits that: the tests that interrupt snakemake with SIGINT need it to have its default action
    signal.signal(signal.SIGINT, signal.default_int_handler)
os.environ.setdefault("GLANN_TRACKING", "0")  # unit tests do not write to mlflow.db
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # one worker per core: one intra-op thread each (two OpenMP teams per core thrash);
    # workflow jobs still use the threads their rule gives them (--threads)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def mnist5k_dir(tmp_path_factory):
    from glann.data.datasets import prepare

    d = tmp_path_factory.mktemp("mnist5k")
    prepare("mnist5k", {}, d)
    return d


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    from glann.data.datasets import prepare

    d = tmp_path_factory.mktemp("digits")
    prepare("digits", {"size": 16}, d)
    return d


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory):
    """$TORCH_HOME with VGG16 and pytorch-fid Inception files of the real architectures holding
    random weights (tests/weights.py), where the paper presets look for them: one per worker."""
    from presets import make_torch_home

    return make_torch_home(tmp_path_factory.mktemp("torch_home"))


def _cut(tmp_path_factory, n_train: int, n_test: int, name: str = "digits", opts=None):
    """Dataset ``name`` (default: the digits at 16x16) cut to its first ``n_train`` training and
    ``n_test`` test images, prepared as the pipeline prepares any dataset."""
    from glann.data import datasets

    full = datasets.LOADERS[name]
    opts = {"size": 16} if opts is None else opts

    def first(o):
        xtr, ytr, xte, yte, source = full(o)
        return xtr[:n_train], ytr[:n_train], xte[:n_test], yte[:n_test], f"{source}, first {n_train} / {n_test}"

    d = tmp_path_factory.mktemp(f"{name}_{n_train}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(datasets.LOADERS, name, first)
        datasets.prepare(name, opts, d)
    return d


@pytest.fixture(scope="session")
def digits_small_dir(tmp_path_factory):
    """320 training and 64 test digits: for tests of exact properties (resume, rollback,
    snapshots bit for bit) that hold on any data and need no more epochs' worth of it, and for
    the code paths every trainer takes (five batches: a G step after WGAN's and BEGAN's five
    D steps)."""
    return _cut(tmp_path_factory, 320, 64)


@pytest.fixture(scope="session")
def digits_batch_dir(tmp_path_factory):
    """One batch (64) of training digits: for tests of what a single training step does (the
    first step of every trainer steps both networks)."""
    return _cut(tmp_path_factory, 64, 64)


def copy_workflow(dest: Path) -> Path:
    """A fresh copy of the workflow (Snakefile, rules, config, src) in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "profiles", "workflow", "config", "src", "dvc.yaml", "pyproject.toml"):
        src = REPO / name
        if src.is_symlink():
            (dest / name).symlink_to(os.readlink(src))
        elif src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def package_env(wf) -> dict:
    """The environment that makes a workflow copy run its own src/ (jobs and code hashes alike):
    the installed package is this checkout's; PYTHONPATH puts the copy's first."""
    src = Path(wf) / "src"
    return {"PYTHONPATH": str(src)} if (src / "glann").is_dir() else {}


def snakemake(cwd, *args, env=None, check=True, timeout=900):
    exe = Path(sys.executable).with_name("snakemake")
    full_env = {**os.environ, **package_env(cwd), **(env or {})}
    proc = subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=full_env,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


# --------------------------------------------------------------------------- the shared quick pipeline run
QUICK = ["--cores", "2"]
# The shared quick run's methods: every kind of job the rules run (GLANN's two stages, the
# Gaussian fit, pixel IMLE, a GAN with a v1 generator and BN re-estimation, WGAN-GP's penalty,
# the VAE, flow matching's ODE sampler). The other five GANs take the same rules; each trains and
# samples in process in test_baselines.py and tests/presets.py.
QUICK_METHODS = ["glann", "glo_gauss", "imle_pixel", "nsgan", "wgan_gp", "vae", "flow"]
# Its sweep: GLANN's (two settings, each with its own GLO and IMLE). A GAN's sweep settings take
# the same rules; one runs end to end in test_dvc.py.
QUICK_SWEEP = {"settings": 2, "methods": ["glann"]}


def _finished_outputs(log: str) -> set[str]:
    """Outputs of the jobs snakemake reported as finished in ``log``."""
    outputs, done = {}, set()
    for block in re.split(r"\n(?=\[\w{3} \w{3} )", log):
        m_out = re.search(r"^\s+output: (.+)$", block, re.M)
        m_id = re.search(r"^\s+jobid: (\d+)$", block, re.M)
        if m_out and m_id:
            outputs[m_id.group(1)] = [s.strip() for s in m_out.group(1).split(",")]
        done |= set(re.findall(r"Finished jobid: (\d+)", block))
    return {f for j in done for f in outputs.get(j, [])}


def _fingerprint(wf: Path, files) -> dict:
    return {f: (hashlib.sha256((wf / f).read_bytes()).hexdigest(), (wf / f).stat().st_mtime_ns) for f in files}


def _glann_job(wf: Path, rule: str):
    import psutil

    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmd = p.info["cmdline"] or []
            if p.info["cwd"] == str(wf) and rule in cmd and any(c.endswith("glann") for c in cmd[:2]):
                return p
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def _wait(what, cond, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def quick_config(extra: dict) -> str:
    """config/quick.yaml with ``extra`` merged in, as the text of a config file."""
    import yaml

    def merge(a, b):
        return {**a, **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
                        for k, v in b.items()}}

    return yaml.safe_dump(merge(yaml.safe_load((REPO / "config/quick.yaml").read_text()), extra))


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, worker_id):
    """See tests/test_pipeline.py: one quick pipeline run, killed and interrupted on the way.

    Built once per pytest invocation, whichever worker asks first: the workers share it through
    a file lock in their common temp folder (pytest-xdist's documented pattern for a session
    fixture); the others read what it left there. Its tests only read the run (or copy it)."""
    if worker_id == "master":  # no pytest-xdist workers
        return _quick_run(tmp_path_factory.mktemp("pipeline"))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent
    record = shared / "quick_run.json"
    with FileLock(str(shared / "quick_run.lock")):
        if not record.is_file():
            run = _quick_run(shared / "quick_run")
            record.write_text(json.dumps({**run, "wf": str(run["wf"])}))
    run = json.loads(record.read_text())
    return {**run, "wf": Path(run["wf"]), "before": {f: tuple(v) for f, v in run["before"].items()}}


def _quick_run(where: Path) -> dict:
    import torch

    wf = copy_workflow(where)
    # The embedded config of this copy: the quick preset (GLANN's sweep: QUICK_SWEEP), with nsgan
    # diverging in epoch 1 and a GLO long enough to be killed mid-training, on one method of each
    # kind of job (QUICK_METHODS). Being config/config.yaml, it is also what dvc.yaml's stages run.
    (wf / "config/config.yaml").write_text(quick_config({
        "methods": QUICK_METHODS, "fault_injection": {"nsgan": 1}, "glo": {"epochs": 6, "lr_halve_every": 2},
        "sweep": QUICK_SWEEP, "records": {"dir": "records"}}))
    (wf / "split1.yaml").write_text("data: {digits: {size: 8, split_seed: 1}}\n")
    env = {**os.environ, "GLANN_TRACKING": "1"}
    exe = str(Path(sys.executable).with_name("snakemake"))
    first_log = wf / "first.log"
    # train_glo first (Snakemake would start it late): the kill, and so the interrupt, come early,
    # and most jobs run in the warm rerun
    with open(first_log, "w") as fh:
        proc = subprocess.Popen([exe, *QUICK, "--prioritize", "results/digits/glann/seed0/glo.pt"], cwd=wf,
                                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        resume = wf / "results/digits/glann/seed0/glo.pt.resume"

        def glo_two_epochs():
            try:
                return resume.exists() and torch.load(resume, weights_only=False)["epoch"] >= 2
            except Exception:  # being replaced right now
                return False

        _wait("train_glo to checkpoint 2 epochs", glo_two_epochs)
        job = _wait("the train_glo process", lambda: _glann_job(wf, "train-glo"), timeout=10)
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)  # gone: it can no longer replace the resume file
        killed_at = torch.load(resume, weights_only=False)["epoch"]
        assert not (wf / "results/digits/glann/seed0/glo.pt").exists(), "killed too late"
        # keep-going: other jobs go on. Interrupt once a few more have finished.
        _wait("more jobs to finish", lambda: first_log.read_text().count("Finished jobid") >= 5)
        assert proc.poll() is None, "snakemake ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first = first_log.read_text()
    # the snapshot files are temp() outputs: the rerun deletes them once it has scored them
    finished = sorted(f for f in _finished_outputs(first) if (wf / f).exists() and not f.endswith("snapshots.pt"))
    before = _fingerprint(wf, finished)
    rerun = snakemake(wf, *QUICK, "--printshellcmds", env={"GLANN_TRACKING": "1"})
    return {"wf": wf, "first": first, "rerun": rerun.stdout + rerun.stderr, "returncode": proc.returncode,
            "finished": finished, "before": before, "killed_at": killed_at}


# --------------------------------------------------------------------------- file order (pytest-xdist)
# `python -m pytest -n N --dist loadfile --no-loadscope-reorder` (README, .ci/run: N = 2, one per
# core): pytest-xdist sends each test file whole to the next free worker, in the order of the
# collection. That order is set here, for any N (and without xdist): the file with most tests of
# the shared quick run first (its worker builds the run, then keeps busy with its tests), then the
# longest files (the paper presets': longest first keeps the workers' ends close), the other files,
# and last the other files that read the quick run, built by the time they start (nobody waits on
# quick_run's lock while a file that does not need it could run).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    def module(item):
        return item.nodeid.split("::")[0]

    readers = {}
    for item in items:
        if "quick_run" in getattr(item, "fixturenames", ()):
            readers[module(item)] = readers.get(module(item), 0) + 1
    builder = max(readers, key=readers.get, default=None)

    def rank(item):
        m = module(item)
        return 0 if m == builder else 1 if "test_presets" in m else 3 if m in readers else 2

    items.sort(key=rank)  # stable: collection order within each rank
