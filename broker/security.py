"""CURVE keys and socket security: one place for every socket that crosses a host boundary.

Off loopback the broker runs the Ironhouse model of the ZeroMQ Guide: each of its four
sockets is a CURVE server with ``ZAP_ENFORCE_DOMAIN``, and a ZAP authenticator (pyzmq's,
in its own thread) accepts only the client public keys found in an allowlist directory.
Without ZAP, CURVE encrypts but lets any key in, so the broker never runs CURVE without
it. libzmq also refuses legacy ZMTP/1.0 peers once ZAP is on.

Three sockets are in ZAP domain ``jobcast``; the event stream out (which carries every
job's id and progress to whoever subscribes) is in ``jobcast-events``, which admits the
allowlisted keys except those narrowed by a task grant (``broker.task_grants``): a worker
key trusted for some tasks has no business reading every job's id.

Key files are pyzmq certificates: ``NAME.key`` (public) and ``NAME.key_secret`` (both
keys, mode 0600), as ``jobcast keys DIR --name NAME`` writes them. Keys are loaded into
frozen dataclasses whose ``repr`` shows file names only: no key material reaches a log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

logger = logging.getLogger(__name__)

ZAP_DOMAIN: Final = "jobcast"
EVENTS_ZAP_DOMAIN: Final = "jobcast-events"  # the event stream out: no task-granted keys
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


def configure_server(sock: zmq.Socket[Any], keys: ServerKeys | None, domain: str = ZAP_DOMAIN) -> None:
    """Make ``sock`` a CURVE server checked by ZAP in ``domain`` (before ``bind``); no-op for None."""
    if keys is None:
        return
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True
    sock.zap_domain = domain.encode()
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # a ZAP failure refuses, never waves through


class AdmittedKeys:
    """The ZAP check (a pyzmq credentials provider): which client keys each domain admits."""

    def __init__(self, by_domain: Mapping[str, frozenset[bytes]]) -> None:
        self.by_domain = dict(by_domain)  # domain -> Z85 public keys

    def callback(self, domain: str, key: bytes) -> bool:
        """Whether the client with Z85 public ``key`` may connect to a socket in ``domain``."""
        return key in self.by_domain.get(domain, frozenset())


def start_authenticator(
    context: zmq.Context[Any], keys: ServerKeys, not_watching: Iterable[str] = ()
) -> ThreadAuthenticator:
    """Start pyzmq's ZAP handler on ``context``, allowing only the allowlisted client keys;
    those in ``not_watching`` (Z85 text) may not connect to the event stream out.

    Raises:
        ValueError: the allowlist holds no key (every client would be refused).
    """
    allowed = frozenset(zmq.auth.load_certificates(keys.allow_dir))
    if not allowed:
        raise ValueError(f"no client .key files in {keys.allow_dir}: nothing could connect")
    barred = frozenset(key.encode() for key in not_watching)
    admitted = AdmittedKeys({ZAP_DOMAIN: allowed, EVENTS_ZAP_DOMAIN: allowed - barred})
    authenticator = ThreadAuthenticator(context, log=logging.getLogger("jobcast.zap"))
    authenticator.start()
    for domain in admitted.by_domain:
        authenticator.configure_curve_callback(domain=domain, credentials_provider=admitted)
    logger.info("CURVE on: %d allowed client keys from %s (%d of them not on the event stream)",
                len(allowed), keys.allow_dir, len(allowed & barred))  # fmt: skip
    return authenticator
