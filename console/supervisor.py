"""Starts child processes, watches them, and stops them in reverse order, so that a Ctrl-C
or SIGTERM to the launcher leaves no process of ours running and no data half-written.

Each child runs in its own session (a terminal's Ctrl-C reaches only the launcher, which
then stops the children in order) and, on Linux, is told by the kernel to stop if the
launcher dies without cleaning up (PR_SET_PDEATHSIG), so even a SIGKILLed launcher leaves
no orphans.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_libc = (
    ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None
)


class ChildFailed(RuntimeError):
    """A supervised process exited on its own; the message names it and its log."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    stop_signal: signal.Signals
    stop_timeout: float
    log: Path | None
    # Starts a replacement should the process end on its own (a web process, whose peers
    # serve the port meanwhile); None: its end ends the run.
    respawn: Callable[[], subprocess.Popen] | None = None
    started: float = field(default_factory=time.monotonic)


# A respawnable child that ends sooner than this after its start fails the run instead of
# being started again and again (a bad configuration, not a crash).
RESPAWN_AFTER_SECONDS = 10.0


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        user: str | None = None,
        log: Path | None = None,
        stop_signal: str = "SIGTERM",
        stop_timeout: float = 20.0,
        pass_fds: tuple[int, ...] = (),
        respawn: Callable[[], subprocess.Popen] | None = None,
    ) -> subprocess.Popen:
        """Start a child and watch it; `respawn` (see Child) replaces it should it end."""
        sig = signal.Signals[stop_signal]
        process = start(argv, env=env, user=user, log=log, stop_signal=sig, pass_fds=pass_fds)
        self.children.append(Child(name, process, sig, stop_timeout, log, respawn))
        return process

    def adopt(
        self,
        name: str,
        process: subprocess.Popen,
        *,
        stop_timeout: float = 20.0,
        respawn: Callable[[], subprocess.Popen] | None = None,
    ) -> None:
        """Watch a child started with `start` (SIGTERM stops it)."""
        self.children.append(Child(name, process, signal.SIGTERM, stop_timeout, None, respawn))

    def run_quiet(
        self,
        argv: list[str],
        *,
        what: str,
        env: dict[str, str] | None = None,
        user: str | None = None,
    ) -> None:
        """Run a one-off command to completion; show its output only if it fails."""
        result = subprocess.run(
            argv, env=env, user=user, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ChildFailed(
                f"{what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def check_alive(self, name: str) -> None:
        for child in self.children:
            if child.name == name and child.process.poll() is not None:
                raise ChildFailed(_died(child))

    def wait(self, interval: float = 0.5) -> None:
        """Block until a child exits on its own (raises ChildFailed) or a signal interrupts;
        a child that can be respawned is replaced instead, and said so."""
        while True:
            for child in self.children:
                if child.process.poll() is not None:
                    lived = time.monotonic() - child.started
                    if child.respawn is None or lived < RESPAWN_AFTER_SECONDS:
                        raise ChildFailed(_died(child))
                    print(f"    {_died(child)}; starting another", flush=True)
                    _signal(child.process, signal.SIGKILL, group=True)  # what it left
                    child.process, child.started = child.respawn(), time.monotonic()
            time.sleep(interval)

    def stop_all(self) -> None:
        """Stop children newest first, each with its own signal and grace period, then kill."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                print(f"    stopping {child.name}…", flush=True)
                _signal(child.process, child.stop_signal)
                try:
                    child.process.wait(child.stop_timeout)
                except subprocess.TimeoutExpired:
                    print(
                        f"    {child.name} did not stop in {child.stop_timeout:.0f}s; killing it",
                        flush=True,
                    )
                    _signal(child.process, signal.SIGKILL, group=True)
                    child.process.wait()
            # Whatever the child left behind in its session (pool processes) goes too.
            _signal(child.process, signal.SIGKILL, group=True)
        self.children.clear()

    @staticmethod
    def require_free_port(port: int, variable: str, what: str, host: str = "127.0.0.1") -> None:
        if not port_is_free(host, port):
            raise PortTaken(
                f"Port {port} on {host}, for {what}, is already in use — by another console "
                f"running from this folder, or another program. Choose another port: "
                f"{variable}={port + 1} …"
            )


class PortTaken(RuntimeError):
    pass


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers themselves do, so a port lingering in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A free port below Linux's ephemeral range (32768+), so that no outgoing connection
    takes it between this check and the server's bind."""
    while True:
        port = random.randrange(20000, 32000)  # noqa: S311 — not a secret
        if port_is_free(host, port):
            return port


def start(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    user: str | None = None,
    log: Path | None = None,
    stop_signal: signal.Signals = signal.SIGTERM,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen:
    """A child in its own session, told to stop if this process dies (the module's doc)."""
    output = log.open("ab") if log else None
    try:
        return subprocess.Popen(
            argv,
            env=env,
            user=user,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
            pass_fds=pass_fds,
            preexec_fn=_die_with_parent(stop_signal),
        )
    finally:
        if output:
            output.close()


def _die_with_parent(sig: signal.Signals):
    def preexec() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, int(sig))

    return preexec


def _signal(process: subprocess.Popen, sig: signal.Signals, group: bool = False) -> None:
    try:
        if group:
            os.killpg(process.pid, sig)  # the child leads its own session and group
        else:
            process.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _died(child: Child) -> str:
    where = f"; its log: {child.log}" if child.log else ""
    return f"{child.name} exited unexpectedly with code {child.process.returncode}{where}"
