"""CURVE keys and socket security: one place for every socket that crosses a host boundary.

Off loopback the broker runs the Ironhouse model of the ZeroMQ Guide: each of its four
sockets is a CURVE server in ZAP domain ``jobcast`` with ``ZAP_ENFORCE_DOMAIN``, and a ZAP
authenticator (pyzmq's, in its own thread) accepts only the client public keys found in
an allowlist directory. Without ZAP, CURVE encrypts but lets any key in, so the broker
never runs CURVE without it. libzmq also refuses legacy ZMTP/1.0 peers once ZAP is on.

Key files are pyzmq certificates: ``NAME.key`` (public) and ``NAME.key_secret`` (both
keys, mode 0600), as ``jobcast keys DIR --name NAME`` writes them. Keys are loaded into
frozen dataclasses whose ``repr`` shows file names only: no key material reaches a log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

logger = logging.getLogger(__name__)

ZAP_DOMAIN: Final = "jobcast"
ENV_SECRET: Final = "JOBCAST_CURVE_SECRET"
ENV_SERVER: Final = "JOBCAST_CURVE_SERVER"
ENV_ALLOW: Final = "JOBCAST_CURVE_ALLOW"


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """A client's own key pair and the broker's public key (``repr`` hides the keys)."""

    secret_file: str
    server_file: str
    public: bytes = field(repr=False)
    secret: bytes = field(repr=False)
    server: bytes = field(repr=False)

    def argv(self) -> list[str]:
        """The options that hand these keys to a child process (file names, not keys)."""
        return ["--curve-secret", self.secret_file, "--curve-server", self.server_file]


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """The broker's own key pair and its allowlist directory (``repr`` hides the keys)."""

    secret_file: str
    allow_dir: str
    public: bytes = field(repr=False)
    secret: bytes = field(repr=False)


def create_key_pair(directory: str, name: str) -> tuple[str, str]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) into ``directory``.

    Raises:
        ValueError: the name is not a plain file name, or a key file already exists.
    """
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"key name must be a plain file name (got {name!r})")
    public_file = os.path.join(directory, f"{name}.key")
    secret_file = f"{public_file}_secret"
    for path in (public_file, secret_file):
        if os.path.exists(path):
            raise ValueError(f"refusing to overwrite {path}")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    previous = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(previous)
    os.chmod(public_file, 0o644)
    return public_file, secret_file


def load_key_pair(path: str) -> tuple[bytes, bytes]:
    """The (public, secret) keys of a ``.key_secret`` file.

    Raises:
        ValueError: the file is missing, unreadable or holds no secret key.
    """
    public, secret = _load(path)
    if secret is None:
        raise ValueError(f"{path} holds no secret key (give the .key_secret file)")
    return public, secret


def load_public_key(path: str) -> bytes:
    """The public key of a ``.key`` (or ``.key_secret``) file; ValueError if there is none."""
    return _load(path)[0]


def _load(path: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read CURVE key file {path}: {exc}") from None
    if not public:
        raise ValueError(f"{path} holds no CURVE public key")
    return public, secret


def client_keys(secret_file: str | None = None, server_file: str | None = None,
                env: Mapping[str, str] | None = None) -> ClientKeys | None:  # fmt: skip
    """A client's keys from the options, else ``$JOBCAST_CURVE_SECRET/_SERVER``; None: plain.

    Raises:
        ValueError: only one of the two files is given, or a file does not hold a key.
    """
    env = os.environ if env is None else env
    secret_file = secret_file or env.get(ENV_SECRET) or None
    server_file = server_file or env.get(ENV_SERVER) or None
    if secret_file is None and server_file is None:
        return None
    if secret_file is None or server_file is None:
        raise ValueError("CURVE needs both --curve-secret (own key pair) and --curve-server "
                         "(the broker's public key)")  # fmt: skip
    public, secret = load_key_pair(secret_file)
    server = load_public_key(server_file)
    return ClientKeys(secret_file, server_file, public=public, secret=secret, server=server)


def server_keys(secret_file: str | None = None, allow_dir: str | None = None,
                env: Mapping[str, str] | None = None) -> ServerKeys | None:  # fmt: skip
    """The broker's keys from the options, else ``$JOBCAST_CURVE_SECRET/_ALLOW``; None: plain.

    Raises:
        ValueError: only one of the two is given, the key file is bad or the dir is missing.
    """
    env = os.environ if env is None else env
    secret_file = secret_file or env.get(ENV_SECRET) or None
    allow_dir = allow_dir or env.get(ENV_ALLOW) or None
    if secret_file is None and allow_dir is None:
        return None
    if secret_file is None or allow_dir is None:
        raise ValueError("CURVE needs both --curve-secret (the broker's key pair) and "
                         "--curve-allow (a directory of allowed client .key files)")  # fmt: skip
    if not os.path.isdir(allow_dir):
        raise ValueError(f"--curve-allow must be a directory of .key files (got {allow_dir!r})")
    public, secret = load_key_pair(secret_file)
    return ServerKeys(secret_file, allow_dir, public=public, secret=secret)


def configure_client(sock: zmq.Socket[Any], keys: ClientKeys | None) -> None:
    """Make ``sock`` a CURVE client of the broker (before ``connect``); no-op for None."""
    if keys is None:
        return
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server


def configure_server(sock: zmq.Socket[Any], keys: ServerKeys | None) -> None:
    """Make ``sock`` a CURVE server checked by ZAP (before ``bind``); no-op for None."""
    if keys is None:
        return
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True
    sock.zap_domain = ZAP_DOMAIN.encode()
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # a ZAP failure refuses, never waves through


def allowed_key_count(allow_dir: str) -> int:
    """How many client public keys the allowlist directory holds."""
    return len(zmq.auth.load_certificates(allow_dir))


def start_authenticator(context: zmq.Context[Any], keys: ServerKeys) -> ThreadAuthenticator:
    """Start pyzmq's ZAP handler on ``context``, allowing only the allowlisted client keys.

    Raises:
        ValueError: the allowlist holds no key (every client would be refused).
    """
    count = allowed_key_count(keys.allow_dir)
    if count == 0:
        raise ValueError(f"no client .key files in {keys.allow_dir}: nothing could connect")
    authenticator = ThreadAuthenticator(context, log=logging.getLogger("jobcast.zap"))
    authenticator.start()
    authenticator.configure_curve(domain=ZAP_DOMAIN, location=keys.allow_dir)
    logger.info("CURVE on: %d allowed client keys from %s", count, keys.allow_dir)
    return authenticator
