"""GLO and IMLE behave as the paper says, sampling is deterministic, and resume is exact."""

import os
import signal
import subprocess
import sys
import time
import json

import numpy as np
import pytest
import torch

from conftest import REPO
from glann.methods.training import TrainContext
from glann.atomic import torch_save
from glann.pipeline.config import fill_defaults, load_schema
from glann.methods.glo import project_to_sphere, train_glo
from glann.methods.imle import mean_nn_distance, train_imle
from glann.methods.models import IMLEMapping
from glann.methods.sampling import Sampler

SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
CFG = fill_defaults({"datasets": ["mnist5k"], "methods": ["glann"], "seeds": [0]}, SCHEMA)
CPU = torch.device("cpu")


def glo_cfg(**kw):
    return {**CFG["glo"], "loss": "lap1", **kw}


def test_projection_keeps_codes_on_sphere():
    z = torch.randn(100, 64) * 5
    assert torch.allclose(project_to_sphere(z).norm(dim=1), torch.ones(100), atol=1e-6)


@pytest.fixture(scope="module")
def glo_run(tmp_path_factory):
    """GLO for 3 epochs on the first 2,000 of mnist5k's training digits (28x28)."""
    from conftest import _cut

    data = _cut(tmp_path_factory, 2000, 200, "mnist5k", {})
    out = tmp_path_factory.mktemp("glo") / "glo.pt"
    glo = train_glo(data, glo_cfg(epochs=3), TrainContext(out, 0, CPU))
    return out, glo


def test_glo_loss_falls_and_codes_stay_on_sphere(glo_run):
    _, glo = glo_run
    losses = [r["loss"] for r in glo["history"]]
    assert len(losses) == 3 and losses[2] < losses[1] < losses[0]
    assert torch.allclose(glo["codes"].norm(dim=1), torch.ones(len(glo["codes"])), atol=1e-5)


def test_imle_lowers_code_to_sample_distance(tmp_path):
    """IMLE's objective (mean distance from each code to its nearest mapped sample) falls."""
    g = torch.Generator().manual_seed(0)
    centres = project_to_sphere(torch.randn(10, 64, generator=g))
    codes = project_to_sphere(centres.repeat(200, 1) + 0.02 * torch.randn(2000, 64, generator=g))
    torch_save(tmp_path / "glo.pt", {"codes": codes})
    torch.manual_seed(1)
    before = mean_nn_distance(IMLEMapping(32, 64, 128), codes, 32, 2.0, seed=7)
    out = train_imle(tmp_path / "glo.pt", {**CFG["imle"], "epochs": 15}, TrainContext(tmp_path / "imle.pt", 0, CPU))
    T = IMLEMapping(32, 64, 128)
    T.load_state_dict(out["mapping"])
    after = mean_nn_distance(T, codes, 32, 2.0, seed=7)
    assert after < 0.9 * before, (before, after)
    assert out["history"][-1]["loss"] < out["history"][0]["loss"]


def test_glann_sampling_is_deterministic(glo_run, tmp_path):
    glo_path, _ = glo_run
    train_imle(glo_path, {**CFG["imle"], "epochs": 1}, TrainContext(tmp_path / "imle.pt", 0, CPU))
    s = Sampler("glann", {"glo": glo_path, "imle": tmp_path / "imle.pt"}, CPU)
    a, b, c = s.generate(50, seed=3), s.generate(50, seed=3), s.generate(50, seed=4)
    assert a.dtype == np.uint8 and a.shape == (50, 28, 28, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def _glann(*args):
    return [str(os.path.join(os.path.dirname(sys.executable), "glann")), *args]


def test_kill9_then_resume_equals_uninterrupted(digits_dir, tmp_path):
    """A real `kill -9` mid-training; the rerun resumes and ends with identical weights."""
    job = json.dumps({"dataset": "digits", "seed": 0, "device": "cpu", "tracking": {"enabled": False},
                      "runtime": {"deterministic": True}, "params": glo_cfg(epochs=6, lr_halve_every=2)})
    env = {**os.environ, "GLANN_TRACKING": "0"}

    def cmd(d):
        return _glann("train-glo", "--job", job, "--threads", "1", "--data", str(digits_dir),
                      "--out", str(d / "glo.pt"), "--csv", str(d / "l.csv"), "--recon", str(d / "r.png"))

    ref, killed = tmp_path / "ref", tmp_path / "killed"
    ref.mkdir(), killed.mkdir()
    # the uninterrupted reference runs alongside (one thread each, two cores)
    ref_log = open(tmp_path / "ref.log", "w")
    reference = subprocess.Popen(cmd(ref), env=env, stdout=subprocess.DEVNULL, stderr=ref_log)
    proc = subprocess.Popen(cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume = killed / "glo.pt.resume"
    deadline = time.time() + 120
    while time.time() < deadline:
        if resume.exists() and torch.load(resume, weights_only=False)["epoch"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "glo.pt").exists(), "killed too late to test resuming"
    epoch_at_kill = torch.load(resume, weights_only=False)["epoch"]
    assert 1 <= epoch_at_kill < 6
    subprocess.run(cmd(killed), check=True, env=env, capture_output=True)
    assert reference.wait(timeout=600) == 0, (tmp_path / "ref.log").read_text()[-2000:]
    ref_log.close()
    a = torch.load(ref / "glo.pt", weights_only=False)
    b = torch.load(killed / "glo.pt", weights_only=False)
    assert torch.equal(a["codes"], b["codes"])
    for k in a["generator"]:
        assert torch.equal(a["generator"][k], b["generator"][k]), k
    assert not resume.exists()
