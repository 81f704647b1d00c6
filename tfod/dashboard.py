"""TensorBoard over the runs folder, on the loopback address, optionally through ngrok.

:func:`tensorboard` starts TensorBoard as a child process bound to 127.0.0.1,
waits until it answers HTTP, and with ``ngrok=True`` opens a pyngrok tunnel to
it (``pip install tfod[ngrok]``). Ctrl-C stops both.

Secrets never reach a command line, a log or the output:

- The ngrok token stays in ngrok's environment (``NGROK_AUTHTOKEN``, which the
  ngrok agent reads itself) or in ngrok's own config file. pyngrok would copy
  ``$NGROK_AUTHTOKEN`` into ``PyngrokConfig.auth_token`` and from there append
  ``--authtoken TOKEN`` to ngrok's argv (visible to every local user in the
  process list), so tfod clears that field.
- The basic-auth ``USER:PASSWORD`` comes from ``TFOD_TB_AUTH`` or a prompt
  (``auth="-"``) rather than tfod's own command line; it reaches ngrok through
  pyngrok's loopback API, never argv. pyngrok's logger (which logs the tunnel
  options at DEBUG) is silenced while the tunnel is open; ngrok's own log lines
  come through :func:`_redact`.
- tfod never downloads ngrok (pyngrok would, when its binary is missing): the
  agent must be on ``PATH`` or named by ``PYNGROK_NGROK_PATH``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tfod.errors import TfodError

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: The environment variable holding the tunnel's ``USER:PASSWORD`` (keeps it off the command line).
AUTH_ENV = "TFOD_TB_AUTH"
#: Seconds pyngrok waits for ngrok to report a session before giving up.
NGROK_STARTUP_TIMEOUT = 15


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


def resolve_auth(auth: str | None, prompt=None) -> str | None:
    """The tunnel's ``USER:PASSWORD``: ``"-"`` asks for it (no echo), ``None`` takes
    ``$TFOD_TB_AUTH`` (or no auth when unset), anything else is used as given.

    Example:
        >>> resolve_auth("-")  # prompts: tensorboard tunnel USER:PASSWORD:
    """
    if auth == "-":
        import getpass

        try:
            auth = (prompt or getpass.getpass)("tensorboard tunnel USER:PASSWORD: ")
        except (EOFError, OSError):
            raise TfodError("no USER:PASSWORD could be read for --auth -", where="--auth -",
                            fix=f"run it in a terminal, or set {AUTH_ENV}=USER:PASSWORD") from None
    elif auth is None:
        auth = os.environ.get(AUTH_ENV) or None
    return _check_auth(auth)


def _check_auth(auth: str | None) -> str | None:
    if auth is None:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not 8 <= len(password) <= 128:
        raise TfodError("--auth must be USER:PASSWORD with a password of 8 to 128 characters "
                        "(ngrok's rule)", where="--auth", fix="e.g. --auth alice:correct-horse")
    return auth


def _ngrok_path(pyngrok) -> str:
    """The ngrok agent pyngrok will run: ``$PYNGROK_NGROK_PATH``, pyngrok's own install
    folder, or ``ngrok`` on ``PATH``. Missing: a TfodError (pyngrok would download it)."""
    default = pyngrok.PyngrokConfig().ngrok_path  # $PYNGROK_NGROK_PATH or pyngrok's folder
    for path in (default, None if "PYNGROK_NGROK_PATH" in os.environ else shutil.which("ngrok")):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise TfodError("the ngrok agent was not found", where=default,
                    fix="install ngrok (https://ngrok.com/download) on PATH, or set "
                        "PYNGROK_NGROK_PATH=/path/to/ngrok; tfod does not download it")


class _Quiet:
    """pyngrok's loggers silenced (it logs tunnel options, the password, at DEBUG and
    ngrok's lines at INFO), restored by :meth:`restore`."""

    def __init__(self):
        self.logger = logging.getLogger("pyngrok")
        self.saved = self.logger.propagate, self.logger.level
        self.null = logging.NullHandler()
        self.logger.addHandler(self.null)
        self.logger.propagate = False

    def restore(self):
        self.logger.removeHandler(self.null)
        self.logger.propagate, level = self.saved
        self.logger.setLevel(level)


class Tunnel:
    """An ngrok tunnel to a local port, closed by :meth:`close` (or ``with``).

    The token is never handed to pyngrok: ngrok reads ``NGROK_AUTHTOKEN`` from the
    environment it inherits, or its own config file.
    """

    def __init__(self, port: int, auth: str | None = None, pyngrok=None):
        self.auth = _check_auth(auth)
        self.pyngrok = pyngrok or _load_pyngrok()
        token = os.environ.get("NGROK_AUTHTOKEN") or None
        self._secrets = (token, auth)
        config = self.pyngrok.PyngrokConfig(
            ngrok_path=_ngrok_path(self.pyngrok), startup_timeout=NGROK_STARTUP_TIMEOUT,
            log_event_callback=self._ngrok_log)
        config.auth_token = None  # else pyngrok appends --authtoken $NGROK_AUTHTOKEN to argv
        config.api_key = None  # (the same for $NGROK_API_KEY)
        options = {"auth": auth} if auth else {}
        self._quiet = _Quiet()
        try:
            tunnel = self.pyngrok.connect(str(port), "http", pyngrok_config=config, **options)
        except Exception as exc:  # noqa: BLE001  (pyngrok's errors have no common base here)
            self._quiet.restore()
            with contextlib.suppress(Exception):
                self.pyngrok.kill(pyngrok_config=config)
            text = _redact(str(exc), token, auth)
            if token:
                where, fix = "NGROK_AUTHTOKEN", ("check the token in NGROK_AUTHTOKEN (your "
                                                 "ngrok dashboard shows it) and ngrok's message")
            else:
                where, fix = "ngrok's config file", ("set NGROK_AUTHTOKEN (your token from the "
                                                     "ngrok dashboard) or run `ngrok config "
                                                     "add-authtoken TOKEN` once")
            raise TfodError(f"ngrok could not open a tunnel ({text})", where=where,
                            fix=fix) from None
        self.config = config
        self.public_url = tunnel.public_url
        if auth:
            log.info("tensorboard: tunnel %s (basic auth, user %r)", self.public_url,
                     auth.split(":", 1)[0])
        else:
            log.warning("tensorboard: tunnel %s has NO authentication: anyone with the URL can "
                        "see your runs; pass --auth USER:PASSWORD to protect it",
                        self.public_url)

    def _ngrok_log(self, line) -> None:
        """ngrok's own log lines (pyngrok's callback): warnings and errors, redacted."""
        level = getattr(logging, getattr(line, "lvl", "INFO"), logging.INFO)
        if level >= logging.WARNING:
            log.log(level, "ngrok: %s", _redact(getattr(line, "line", str(line)), *self._secrets))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.pyngrok.disconnect(self.public_url, pyngrok_config=self.config)
        with contextlib.suppress(Exception):
            self.pyngrok.kill(pyngrok_config=self.config)
        self._quiet.restore()
        log.info("tensorboard: tunnel %s closed", self.public_url)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _escapes(text: str) -> set[str]:
    quoted = urllib.parse.quote(text, safe="")
    return {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1],
            repr(text)[1:-1], ascii(text)[1:-1], quoted, quoted.lower(),
            urllib.parse.quote(text), urllib.parse.quote_plus(text),
            base64.b64encode(text.encode()).decode()}


def _escaped_forms(secret: str) -> set[str]:
    """``secret`` as it may appear in a message: raw, JSON-escaped, repr, URL-encoded
    (``%XX`` in either case, ``+`` for spaces), base64 (a basic-auth header), and each of
    these escaped once more (a JSON string inside a quoted log field, a repr of a JSON body)."""
    return {twice for once in _escapes(secret) for twice in _escapes(once) if twice}


def _redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret (and, for ``USER:PASSWORD``, the password alone) replaced
    by ``***`` in each of its escaped forms (:func:`_escaped_forms`)."""
    parts = set()
    for secret in secrets:
        if secret:
            parts.add(secret)
            if ":" in secret:
                parts.add(secret.split(":", 1)[1])
    forms = {f for secret in parts for f in _escaped_forms(secret)}
    for form in sorted(forms, key=len, reverse=True):  # longest first: no partial leftovers
        text = text.replace(form, "***")
    return text


def tensorboard(logdir: str | Path = "runs", port: int = 6006, host: str = "127.0.0.1",
                ngrok: bool = False, auth: str | None = None, pyngrok=None) -> int:
    """Run TensorBoard (and an ngrok tunnel) in the foreground until Ctrl-C; returns 0.

    ``auth``: ``USER:PASSWORD`` for the tunnel, ``"-"`` to be asked for it, or ``None``
    for ``$TFOD_TB_AUTH`` (:func:`resolve_auth`).

    Example:
        >>> tensorboard("runs", port=6006)
        >>> tensorboard("runs", ngrok=True, auth="-")  # NGROK_AUTHTOKEN set; asks USER:PASSWORD
    """
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise TfodError("log folder not found", where=str(logdir),
                        fix="train a run first, or pass --logdir")
    if auth and not ngrok:
        raise TfodError("--auth protects the ngrok tunnel", where="--auth",
                        fix="add --ngrok, or drop --auth")
    auth = resolve_auth(auth) if ngrok else None
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
