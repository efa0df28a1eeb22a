"""``glann serve`` (glann.jobserver): a step run through the job server is the same step.

Same outputs bit for bit, same exit status and stderr for a user error, the step's own
working directory, environment and log redirection; a job the server refuses (its glann
source changed) or a socket nobody serves runs in its own process instead.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from glann.jobserver import _HEADER, run_on_server

GLANN = str(Path(sys.executable).with_name("glann"))


@pytest.fixture
def server(job_server):
    return job_server


def glann(args, cwd, server=None, **env):
    full = {**os.environ, **env}
    full.pop("GLANN_JOB_SERVER", None)
    if server:
        full["GLANN_JOB_SERVER"] = str(server)
    return subprocess.run([GLANN, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300)


PREPARE = ["prepare", "--job", json.dumps({"dataset": "digits", "params": {"size": 16, "split_seed": 3}}),
           "--out-dir", "prepared"]


def test_a_step_through_the_server_is_the_same_step(server, tmp_path):
    own, served = tmp_path / "own", tmp_path / "served"
    own.mkdir(), served.mkdir()
    a = glann(PREPARE, own)
    b = glann(PREPARE, served, server=server)
    assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
    for split in ("train", "test"):  # written relative to the client's working directory
        x, y = np.load(own / "prepared" / f"{split}.npz"), np.load(served / "prepared" / f"{split}.npz")
        assert np.array_equal(x["images"], y["images"]) and np.array_equal(x["labels"], y["labels"])
    assert "prepared digits" in b.stderr  # the step's log reached the client's stderr


def test_exit_status_and_signals_pass_through(server, tmp_path):
    args = ["prepare", "--job", json.dumps({"dataset": "nosuchset"}), "--out-dir", "x"]
    bad, direct = glann(args, tmp_path, server=server), glann(args, tmp_path)
    assert bad.returncode == direct.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == direct.stderr.strip().splitlines()[-1]
    # a long-running step (here a second server, which runs until SIGTERM): SIGTERM to the
    # waiting client reaches the forked step, and the client exits with the step's status
    inner = tmp_path / "inner.sock"
    client = subprocess.Popen([sys.executable, "-c", "import sys; from glann.jobserver import run_on_server; "
                               f"sys.exit(run_on_server(['serve', '--socket', {str(inner)!r}], {str(server)!r}))"],
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not inner.exists():
        assert client.poll() is None and time.time() < deadline, client.stderr.read()
        time.sleep(0.05)
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=60) == 0
    assert "ready on" in client.stderr.read() and not inner.exists()


def test_refused_or_unserved_jobs_run_in_their_own_process(server, tmp_path):
    # a request whose glann source differs is refused, and the client then runs the step itself
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(server))
    payload = json.dumps({"argv": ["--help"], "cwd": str(tmp_path), "env": {}, "umask": 0o22,
                          "source": "edited"}).encode()
    socket.send_fds(s, [_HEADER.pack(len(payload))], [0, 1, 2])
    s.sendall(payload)
    assert s.recv(200).startswith(b"refused")
    s.close()
    assert run_on_server(["--help"], str(tmp_path / "nobody.sock")) is None
    r = glann(PREPARE, tmp_path, server=tmp_path / "nobody.sock")
    assert r.returncode == 0 and (tmp_path / "prepared/train.npz").exists()


def test_an_unusable_socket_path_is_refused_in_one_line_before_preloading(tmp_path, capsys):
    from glann.jobserver import SUN_PATH_MAX, serve

    def never(argv):
        raise AssertionError("no job may run")

    long_path = str(tmp_path / ("s" * (SUN_PATH_MAX + 1)))
    assert serve(long_path, never) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "at most 107" in err and "--socket" in err
    assert serve(str(tmp_path / "missing" / "glann.sock"), never) == 2
    err = capsys.readouterr().err.strip()
    assert "missing" in err and "does not exist" in err
    assert not list(tmp_path.iterdir())
