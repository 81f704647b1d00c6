"""TensorBoard over the runs folder, on the loopback address, optionally through ngrok.

:func:`tensorboard` starts TensorBoard as a child process bound to 127.0.0.1,
waits until it answers HTTP, and with ``ngrok=True`` opens a pyngrok tunnel to
it (``pip install tfod[ngrok]``). The ngrok token comes from
``NGROK_AUTHTOKEN`` or from ngrok's own config file and is never printed or
logged; ``auth="user:password"`` puts HTTP basic auth in front of the tunnel,
and a tunnel without it gets a warning. Ctrl-C stops both.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

from tfod.errors import TfodError

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_tensorboard(logdir: str | Path, port: int, host: str = "127.0.0.1",
                      **popen_kwargs) -> subprocess.Popen:
    """TensorBoard as a child process (``python -m tensorboard.main``)."""
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
           "--port", str(port), "--host", host, "--reload_interval", "5"]
    return subprocess.Popen(cmd, **popen_kwargs)


def wait_until_up(url: str, proc: subprocess.Popen | None = None,
                  timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers HTTP 200; a TfodError if the process dies or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TfodError(f"TensorBoard exited with code {proc.returncode} before answering",
                            where=url, fix="check that the port is free, or pass --port N")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise TfodError(f"TensorBoard did not answer within {timeout:.0f}s", where=url,
                    fix="run `python -m tensorboard.main --logdir runs` to see its error")


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate a child process, killing it if it does not end in ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _load_pyngrok():
    try:
        from pyngrok import conf, ngrok
    except ImportError:
        raise TfodError("--ngrok needs the pyngrok package", where="tfod tensorboard --ngrok",
                        fix="pip install 'tfod[ngrok]' (or pip install pyngrok)") from None
    return types.SimpleNamespace(connect=ngrok.connect, disconnect=ngrok.disconnect,
                                 kill=ngrok.kill, PyngrokConfig=conf.PyngrokConfig)


def _check_auth(auth: str | None) -> str | None:
    if auth is None:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not 8 <= len(password) <= 128:
        raise TfodError("--auth must be USER:PASSWORD with a password of 8 to 128 characters "
                        "(ngrok's rule)", where="--auth", fix="e.g. --auth alice:correct-horse")
    return auth


class Tunnel:
    """An ngrok tunnel to a local port, closed by :meth:`close` (or ``with``)."""

    def __init__(self, port: int, auth: str | None = None, pyngrok=None):
        self.auth = _check_auth(auth)
        self.pyngrok = pyngrok or _load_pyngrok()
        token = os.environ.get("NGROK_AUTHTOKEN") or None
        config = self.pyngrok.PyngrokConfig(auth_token=token) if token else None
        options = {"auth": auth} if auth else {}
        # pyngrok logs the tunnel options (the password) at DEBUG: keep its logger quiet
        quiet = logging.getLogger("pyngrok")
        level = quiet.level
        quiet.setLevel(max(quiet.getEffectiveLevel(), logging.WARNING))
        try:
            tunnel = self.pyngrok.connect(str(port), "http", pyngrok_config=config, **options)
        except Exception as exc:  # noqa: BLE001  (pyngrok's errors have no common base here)
            text = _redact(str(exc), token, auth)
            raise TfodError(f"ngrok could not open a tunnel ({text})",
                            where="NGROK_AUTHTOKEN" if token else "ngrok's config file",
                            fix="set NGROK_AUTHTOKEN (your token from the ngrok dashboard) or run "
                            "`ngrok config add-authtoken TOKEN` once") from None
        finally:
            quiet.setLevel(level)
        self.config = config
        self.public_url = tunnel.public_url
        if auth:
            log.info("tensorboard: tunnel %s (basic auth, user %r)", self.public_url,
                     auth.split(":", 1)[0])
        else:
            log.warning("tensorboard: tunnel %s has NO authentication: anyone with the URL can "
                        "see your runs; pass --auth USER:PASSWORD to protect it",
                        self.public_url)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.pyngrok.disconnect(self.public_url, pyngrok_config=self.config)
        with contextlib.suppress(Exception):
            self.pyngrok.kill(pyngrok_config=self.config)
        log.info("tensorboard: tunnel %s closed", self.public_url)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _redact(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
            if ":" in secret:
                text = text.replace(secret.split(":", 1)[1], "***")
    return text


def tensorboard(logdir: str | Path = "runs", port: int = 6006, host: str = "127.0.0.1",
                ngrok: bool = False, auth: str | None = None, pyngrok=None) -> int:
    """Run TensorBoard (and an ngrok tunnel) in the foreground until Ctrl-C; returns 0.

    Example:
        >>> tensorboard("runs", port=6006)
        >>> tensorboard("runs", ngrok=True, auth="me:long-password")  # NGROK_AUTHTOKEN set
    """
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise TfodError("log folder not found", where=str(logdir),
                        fix="train a run first, or pass --logdir")
    if auth and not ngrok:
        raise TfodError("--auth protects the ngrok tunnel", where="--auth",
                        fix="add --ngrok, or drop --auth")
    _check_auth(auth)
    if host not in LOOPBACK:
        log.warning("tensorboard: bound to %s: reachable from the network, without any "
                    "authentication", host)
    from tfod.training import _interrupt_as_keyboard_interrupt

    with _interrupt_as_keyboard_interrupt():  # SIGTERM stops both, like Ctrl-C
        proc = start_tensorboard(logdir, port, host)
        tunnel = None
        try:
            url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
            wait_until_up(url, proc)
            log.info("tensorboard: %s over %s (Ctrl-C stops it)", url, logdir)
            if ngrok:
                tunnel = Tunnel(port, auth=auth, pyngrok=pyngrok)
            return_code = proc.wait()
            # Ctrl-C in a terminal reaches TensorBoard too (same process group): a normal stop
            if return_code not in (0, 130, -signal.SIGINT, -signal.SIGTERM):
                raise TfodError(f"TensorBoard exited with code {return_code}", where=url,
                                fix="see its messages above")
            return 0
        except KeyboardInterrupt:
            log.info("tensorboard: stopping")
            return 0
        finally:
            if tunnel is not None:
                tunnel.close()
            stop(proc)
