"""CURVE key pairs and the policy server's allow-list (pyzmq's `zmq.auth`).

`make_keys(folder, name)` writes `name.key` (public) and `name.key_secret` (secret), the
certificate files `zmq.auth` reads. The server authenticates with its own pair and accepts a
client only if the client's public certificate lies in its allow-list folder (ZAP); every
refusal is logged by the authenticator and counted by the server's socket monitor.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

LOG = logging.getLogger("shakedown.bridge.auth")


@dataclasses.dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair (Z85 text)."""

    public: bytes
    secret: bytes


def make_keys(folder: Path | str, name: str) -> tuple[Path, Path]:
    """A new key pair in `folder`: (public certificate, secret certificate) paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def load_keys(secret_file: Path | str) -> KeyPair:
    """The pair in a secret certificate file (made by `make_keys`)."""
    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise ValueError(f"{secret_file} holds no secret key; pass the '.key_secret' file")
    return KeyPair(public, secret)


def load_public(public_file: Path | str) -> bytes:
    """The public key in a certificate file."""
    public, _ = zmq.auth.load_certificate(str(public_file))
    return public


@dataclasses.dataclass(frozen=True)
class ServerSecurity:
    """The server's own pair and the folder of client certificates it accepts."""

    keys: KeyPair
    allowed_clients: Path


@dataclasses.dataclass(frozen=True)
class ClientSecurity:
    """The client's own pair and the server's public key it expects."""

    keys: KeyPair
    server_public: bytes


def secure_server(context: zmq.Context, socket: zmq.Socket, security: ServerSecurity) -> ThreadAuthenticator:
    """Make `socket` a CURVE server with a ZAP allow-list; returns the running authenticator."""
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq has no CURVE support; install pyzmq from its wheels")
    auth = ThreadAuthenticator(context, log=LOG)
    auth.start()
    auth.configure_curve(domain="*", location=str(security.allowed_clients))
    socket.curve_secretkey = security.keys.secret
    socket.curve_publickey = security.keys.public
    socket.curve_server = True
    return auth


def secure_client(socket: zmq.Socket, security: ClientSecurity) -> None:
    socket.curve_secretkey = security.keys.secret
    socket.curve_publickey = security.keys.public
    socket.curve_serverkey = security.server_public
