"""Warm starts for many small jobs on one machine: ``glann serve``.

Every workflow job is one ``glann <step>`` process, and before it does any work it
imports torch, torch._dynamo (which every optimizer pulls in), torchvision,
scikit-learn, pytorch-fid and MLflow: about 3 s of one core per job on a 2-core
CPU, more than most jobs of a small config spend on their own work. ``glann serve``
pays those imports once; each ``glann <step>`` whose environment names the server's
socket in ``GLANN_JOB_SERVER`` hands its command line, working directory,
environment, umask and its stdin/stdout/stderr to the server, which forks a process
that runs the step exactly as ``glann <step>`` would and reports its exit status
back. The ``glann`` process waits for it, passes on SIGINT/SIGTERM/SIGHUP/SIGQUIT
and exits with the step's status (128 + N when the step died of signal N).

    glann serve --socket /tmp/glann.sock &
    GLANN_JOB_SERVER=/tmp/glann.sock snakemake --cores all

What stays as without the server: the step's code, arguments, environment variables,
working directory, umask, log redirection, exit status and pid-based job locks (the
forked process is the one training). What differs:

- the forked process is a child of the server, not of Snakemake's job shell, so a
  rule's ``benchmark:`` file times the job correctly but its memory and CPU columns
  measure only the waiting ``glann`` process;
- variables a library reads once when it is imported (e.g. ``PYTORCH_*`` settings
  read by torch at import) are those of the server's environment;
- the server refuses a job when the ``glann`` source files changed after it started
  (so a code edit is never run with the old code); the job then runs in its own
  process, as it does when no server answers at ``GLANN_JOB_SERVER``.

The server never runs a tensor operation itself (a fork after torch's OpenMP
thread pool exists would hang), and serves one machine: the socket is a local file.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

SERVER_ENV = "GLANN_JOB_SERVER"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# What a step may import; the server imports it once. Missing optional packages are skipped.
PRELOAD = ("numpy", "scipy.linalg", "torch", "torch._dynamo", "torchvision", "pytorch_fid.inception",
           "sklearn.cluster", "prdc", "mlflow", "mlflow.tracking")
_HEADER = struct.Struct("!I")


def source_signature() -> str:
    """Names, sizes and modification times of the glann package's source files."""
    root = Path(__file__).resolve().parent
    parts = []
    for p in sorted(root.rglob("*.py")):
        st = p.stat()
        parts.append(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed early")
        buf += chunk
    return buf


def _read_line(sock: socket.socket) -> str | None:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return None
        buf += chunk
    return buf.decode().strip()


# --- client: `glann <step>` with GLANN_JOB_SERVER set -------------------------------------------


def run_on_server(argv: list[str], path: str) -> int | None:
    """Run ``glann *argv`` in a process forked by the server at ``path``.

    Returns the step's exit status, or None when no server answers there or it refuses
    the job (its glann source differs from ours): the caller then runs the step itself.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        umask = os.umask(0)
        os.umask(umask)
        payload = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                              "source": source_signature()}).encode()
        socket.send_fds(sock, [_HEADER.pack(len(payload))], [0, 1, 2])
        sock.sendall(payload)
        reply = _read_line(sock)
    except OSError:
        sock.close()
        return None
    if reply is None or not reply.startswith("pid "):
        print(f"glann: the job server at {path} did not take this job ({reply or 'no reply'}); "
              "running it in this process", file=sys.stderr)
        sock.close()
        return None
    pid = int(reply.split()[1])

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for s in FORWARDED_SIGNALS:
        signal.signal(s, forward)
    line = _read_line(sock)
    sock.close()
    if line is None or not line.startswith("exit "):
        print(f"glann: the job server at {path} stopped before the job (pid {pid}) reported its exit status",
              file=sys.stderr)
        return 1
    return int(line.split()[1])


# --- server ----------------------------------------------------------------------------------


def _preload() -> list[str]:
    import importlib
    import pkgutil

    import glann

    loaded = []
    names = list(PRELOAD) + [f"glann.{m.name}" for m in pkgutil.iter_modules(glann.__path__)
                             if m.name != "__main__"]
    for name in names:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except ImportError:
            pass
    return loaded


def _exit_status(waitstatus: int) -> int:
    code = os.waitstatus_to_exitcode(waitstatus)
    return 128 - code if code < 0 else code


def _run_child(request: dict, fds: list[int], import_env: dict, run) -> int:
    """In the forked process: become the client's process, then run the step."""
    import atexit
    import random
    import traceback

    os.setpgid(0, 0)  # a Ctrl-C at the server's terminal reaches the server, which stops its jobs
    for s in FORWARDED_SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    for key, value in import_env.items():  # what imports set with os.environ.setdefault
        os.environ.setdefault(key, value)
    random.seed()
    try:
        import numpy as np

        np.random.seed()
    except ImportError:
        pass
    sys.argv = ["glann", *request["argv"]]
    try:
        code = run(request["argv"])
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    return int(code or 0)


SUN_PATH_MAX = 107  # bytes of a Unix socket's path on Linux (sun_path is 108 with its NUL)


def socket_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a Unix socket to listen on, in one line; None when it can."""
    size = len(os.fsencode(path))
    if size > SUN_PATH_MAX:
        return (f"the socket path {path} is {size} bytes long; a Unix socket's path may have at most "
                f"{SUN_PATH_MAX}: pass a shorter --socket (e.g. /tmp/glann-$USER.sock)")
    parent = Path(path).parent
    if not parent.is_dir():
        return f"the socket's folder {parent} does not exist: create it or pass another --socket"
    return None


def serve(path: str, run, idle_exit: float | None = None) -> int:
    """Preload, listen on the Unix socket ``path`` and fork one process per job until stopped.

    ``run(argv) -> int`` runs one step in the forked process (glann.cli.run)."""
    problem = socket_path_problem(path)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    before = dict(os.environ)
    loaded = _preload()
    import_env = {k: v for k, v in os.environ.items() if k not in before}
    signature = source_signature()

    sock_path = Path(path)
    if sock_path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(sock_path))
            print(f"error: a job server already listens on {path}", file=sys.stderr)
            return 2
        except OSError:
            sock_path.unlink()  # left by a server that was killed
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(64)
    jobs: dict[int, socket.socket] = {}
    stopping = []

    def stop(signum, _frame):
        stopping.append(signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, stop)
    print(f"glann serve: ready on {path} (pid {os.getpid()}; {len(loaded)} modules preloaded)",
          file=sys.stderr, flush=True)
    idle_since = time.monotonic()
    try:
        while not stopping:
            try:
                ready, _, _ = select.select([listener], [], [], 0.05)
            except InterruptedError:
                ready = []
            if ready:
                conn, _ = listener.accept()
                conn.settimeout(10)  # a client that connects and sends nothing cannot hold up the others
                try:
                    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
                    request = json.loads(_read_exact(conn, _HEADER.unpack(header)[0]))
                except (OSError, ValueError, struct.error):
                    conn.close()
                    continue
                conn.settimeout(None)
                if request.get("source") != signature or len(fds) != 3:
                    for fd in fds:
                        os.close(fd)
                    conn.sendall(b"refused: the glann source changed since this server started\n")
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        listener.close()
                        conn.close()
                        for other in jobs.values():
                            other.close()
                        code = _run_child(request, fds, import_env, run)
                    finally:
                        os._exit(code)
                for fd in fds:
                    os.close(fd)
                try:
                    conn.sendall(f"pid {pid}\n".encode())
                except OSError:
                    pass
                jobs[pid] = conn
            _reap(jobs, block=False)
            if jobs:
                idle_since = time.monotonic()
            elif idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                break
        for pid in list(jobs):  # stopped: stop the running jobs too, and report how they ended
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        _reap(jobs, block=True)
    finally:
        listener.close()
        try:
            sock_path.unlink()
        except FileNotFoundError:
            pass
    return 0


def _reap(jobs: dict[int, socket.socket], block: bool) -> None:
    while jobs:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return
        conn = jobs.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(f"exit {_exit_status(status)}\n".encode())
            except OSError:
                pass
            conn.close()


