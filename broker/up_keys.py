"""``jobcast up --curve-dir DIR``: the CURVE keys of a one-box install, made once and reused.

``up`` runs the broker and, as its clients, the web server and a worker pool. Off
loopback each of them needs keys: the broker its own pair and an allowlist, the local
parts a pair of their own that the allowlist holds. The directory keeps them::

    DIR/broker.key, DIR/broker.key_secret    the broker's pair (give broker.key to peers)
    DIR/local.key,  DIR/local.key_secret     the pair of up's own web server and workers
    DIR/allow/local.key                      the allowlist: add other hosts' NAME.key here

Existing files are never overwritten, so a restart keeps the keys its peers know.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Final

from broker.security import create_key_pair, load_key_pair, load_public_key

BROKER_NAME: Final = "broker"
LOCAL_NAME: Final = "local"
ALLOW_SUBDIR: Final = "allow"


@dataclass(frozen=True, slots=True)
class UpKeys:
    """The key files ``jobcast up`` hands to its parts (file names only)."""

    broker_secret: str
    broker_public: str
    local_secret: str
    allow_dir: str

    def broker_argv(self) -> list[str]:
        """The broker's CURVE options."""
        return ["--curve-secret", self.broker_secret, "--curve-allow", self.allow_dir]

    def client_env(self) -> dict[str, str]:
        """The environment that makes the web server and the workers CURVE clients."""
        return {"JOBCAST_CURVE_SECRET": self.local_secret, "JOBCAST_CURVE_SERVER": self.broker_public}


def prepare_up_keys(directory: str) -> UpKeys:
    """Create whatever key files ``directory`` lacks (mode 0700 dir, 0600 secrets); the set.

    Raises:
        ValueError: a key file exists but holds no key, or the directory cannot be written.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    allow_dir = os.path.join(directory, ALLOW_SUBDIR)
    os.makedirs(allow_dir, mode=0o700, exist_ok=True)
    pairs = {name: _key_pair(directory, name) for name in (BROKER_NAME, LOCAL_NAME)}
    enrolled = os.path.join(allow_dir, f"{LOCAL_NAME}.key")
    if not os.path.exists(enrolled):
        shutil.copyfile(pairs[LOCAL_NAME][0], enrolled)
    load_public_key(enrolled)
    return UpKeys(
        broker_secret=pairs[BROKER_NAME][1],
        broker_public=pairs[BROKER_NAME][0],
        local_secret=pairs[LOCAL_NAME][1],
        allow_dir=allow_dir,
    )


def _key_pair(directory: str, name: str) -> tuple[str, str]:
    """(public file, secret file) of ``name``, created if neither exists, checked either way."""
    public_file = os.path.join(directory, f"{name}.key")
    secret_file = f"{public_file}_secret"
    if not os.path.exists(public_file) and not os.path.exists(secret_file):
        create_key_pair(directory, name)
    load_key_pair(secret_file)
    load_public_key(public_file)
    return public_file, secret_file
