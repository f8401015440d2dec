"""The grader <-> worker wire format: length-prefixed JSON messages, values encoded as plain data.

The worker runs the student's code, so everything it sends is untrusted. Nothing here executes what it reads
(no pickle, no ``torch.load``): a message is JSON, and a tensor is its dtype (from a fixed list), its shape
and its raw bytes, checked against each other before a tensor is built. :func:`read_message` and
:func:`decode` raise :class:`ProtocolError` for anything malformed or too large, and the grader fails that
exercise; nothing a worker sends can stop the grading run.

Encoded values (``encode`` / ``decode``)::

    None, bool, int, float, str, list       as themselves (JSON)
    {"$": "tuple", "items": [...]}          tuple
    {"$": "dict", "items": [[key, value]]}  dict (str or int keys)
    {"$": "tensor", "dtype": "float32", "shape": [2, 4], "data": base64, "grad": false}
    {"$": "ndarray", "dtype": "float32", "shape": [...], "data": base64}
    {"$": "generator", "state": base64}     torch.Generator (its state)
    {"$": "object", "type": "module.Name"}  anything else: only its type is sent (decoded as :class:`Opaque`)
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import socket
import struct
import time

import numpy as np
import torch

#: Largest message accepted (bytes of JSON).
MAX_MESSAGE = 64 << 20
#: Most elements in one tensor or array.
MAX_ELEMENTS = 1 << 26
#: Deepest nesting of lists, tuples and dicts.
MAX_DEPTH = 16
#: Longest string kept from a message (longer ones are clipped).
MAX_TEXT = 20_000

_HEADER = struct.Struct(">I")
_DTYPES = {
    name: getattr(torch, name)
    for name in (
        "float16", "bfloat16", "float32", "float64", "complex64", "complex128",
        "uint8", "int8", "int16", "int32", "int64", "bool",
    )
}  # fmt: skip
_NUMPY_DTYPES = {n for n in _DTYPES if n != "bfloat16"}


class ProtocolError(Exception):
    """A message that is not what the protocol allows (malformed, too large, unexpected)."""


class Opaque:
    """A value the worker could not send (only its type's name came): what the check reports instead."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


class RemoteError(Exception):
    """An exception raised by the student's code in the worker, as text: its type's name, its message, and
    the frames ``(filename, lineno, function, line)`` of its traceback."""

    def __init__(self, type_name: str, message: str, frames: list[tuple[str, int, str, str]]):
        super().__init__(f"{type_name}: {message}")
        self.type_name, self.message, self.frames = type_name, message, frames


# --------------------------------------------------------------------------------------------------------
# values


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def encode(value, _depth: int = 0):
    """``value`` as JSON-able data (see the module docstring). Never calls the value's own methods beyond
    those of the types listed there; anything else is sent as its type's name only."""
    if _depth > MAX_DEPTH:
        return {"$": "object", "type": "nested too deeply"}
    if value is None or isinstance(value, (bool, str)):
        return value
    if type(value) is int or type(value) is float:  # subclasses could override anything: sent as objects
        return value
    if isinstance(value, torch.Tensor) and type(value) is torch.Tensor:
        name = str(value.dtype).removeprefix("torch.")
        if name not in _DTYPES or value.layout != torch.strided or value.device.type == "meta":
            return {"$": "object", "type": f"torch.Tensor ({value.dtype}, {value.layout}, {value.device})"}
        return {
            "$": "tensor",
            "dtype": name,
            "shape": list(value.shape),
            "data": _b64(_tensor_bytes(value)),
            "grad": bool(value.requires_grad),
        }
    if isinstance(value, (np.ndarray, np.generic)) and str(value.dtype) in _NUMPY_DTYPES:
        array = np.ascontiguousarray(value)
        return {
            "$": "ndarray",
            "dtype": str(array.dtype),
            "shape": list(array.shape),
            "data": _b64(array.tobytes()),
        }
    if type(value) is tuple:
        return {"$": "tuple", "items": [encode(v, _depth + 1) for v in value]}
    if type(value) is list:
        return [encode(v, _depth + 1) for v in value]
    if type(value) is dict and all(type(k) in (str, int) for k in value):
        return {"$": "dict", "items": [[k, encode(v, _depth + 1)] for k, v in value.items()]}
    if type(value) is torch.Generator and value.device.type == "cpu":
        return {"$": "generator", "state": _b64(_tensor_bytes(value.get_state()))}
    cls = type(value)
    return {"$": "object", "type": f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', '?')}"}


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be a string")
    return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + " [clipped]"


def _shape(value) -> tuple[int, ...]:
    if not (isinstance(value, list) and len(value) <= 32):
        raise ProtocolError("a shape must be a list of at most 32 sizes")
    if not all(type(v) is int and 0 <= v <= MAX_ELEMENTS for v in value):
        raise ProtocolError("a shape must hold sizes between 0 and MAX_ELEMENTS")
    if math.prod(value) > MAX_ELEMENTS:
        raise ProtocolError(f"a tensor of shape {value} is too large")
    return tuple(value)


def _data(value, expected: int) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError("tensor data must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("tensor data is not base64") from None
    if len(raw) != expected:
        raise ProtocolError(f"tensor data holds {len(raw)} bytes, its dtype and shape need {expected}")
    return raw


def _tensor(obj: dict) -> torch.Tensor:
    dtype = _DTYPES.get(obj.get("dtype"))
    if dtype is None:
        raise ProtocolError(f"unknown tensor dtype {obj.get('dtype')!r}")
    shape = _shape(obj.get("shape"))
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = _data(obj.get("data"), math.prod(shape) * itemsize)
    if not raw:
        out = torch.zeros(shape, dtype=dtype)
    else:
        out = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)
    grad = obj.get("grad", False)
    if not isinstance(grad, bool):
        raise ProtocolError("'grad' must be true or false")
    return out.requires_grad_(grad) if grad and (out.is_floating_point() or out.is_complex()) else out


def decode(data, _depth: int = 0):
    """The value :func:`encode` encoded; raises :class:`ProtocolError` for anything else."""
    if _depth > MAX_DEPTH + 1:
        raise ProtocolError("values nested too deeply")
    if data is None or isinstance(data, (bool, int, float)):
        return data
    if isinstance(data, str):
        return _text(data, "a string")
    if isinstance(data, list):
        return [decode(v, _depth + 1) for v in data]
    if not isinstance(data, dict):
        raise ProtocolError(f"unexpected JSON value of type {type(data).__name__}")
    kind = data.get("$")
    if kind == "tensor":
        return _tensor(data)
    if kind == "ndarray":
        name = data.get("dtype")
        if name not in _NUMPY_DTYPES:
            raise ProtocolError(f"unknown array dtype {name!r}")
        shape = _shape(data.get("shape"))
        raw = _data(data.get("data"), math.prod(shape) * np.dtype(name).itemsize)
        return np.frombuffer(raw, dtype=name).reshape(shape).copy()
    if kind in ("tuple", "dict"):
        items = data.get("items")
        if not isinstance(items, list):
            raise ProtocolError(f"a {kind} needs a list of items")
        if kind == "tuple":
            return tuple(decode(v, _depth + 1) for v in items)
        out = {}
        for pair in items:
            if not (isinstance(pair, list) and len(pair) == 2 and type(pair[0]) in (str, int)):
                raise ProtocolError("a dict item must be [key, value] with a str or int key")
            out[pair[0]] = decode(pair[1], _depth + 1)
        return out
    if kind == "generator":
        state = data.get("state")
        expected = torch.Generator().get_state().numel()
        raw = _data(state, expected)
        return torch.Generator().set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    if kind == "object":
        name = _text(data.get("type"), "an object's type")
        return Opaque(name[:200])
    raise ProtocolError(f"unknown value kind {kind!r}")


# --------------------------------------------------------------------------------------------------------
# messages on a stream socket: 4-byte big-endian length, then that many bytes of UTF-8 JSON


def write_message(sock: socket.socket, message: dict) -> None:
    """Send one message (a JSON-able dict)."""
    payload = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(payload) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE}")
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def _read_exactly(sock: socket.socket, n: int, deadline: float | None) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
        else:
            sock.settimeout(None)
        try:
            chunk = sock.recv(min(n - got, 1 << 20))
        except TimeoutError:
            raise TimeoutError from None
        if not chunk:
            if got:
                raise ProtocolError("the stream ended inside a message")
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_message(sock: socket.socket, deadline: float | None = None) -> dict | None:
    """The next message (a dict), or None at the end of the stream.

    deadline: a ``time.monotonic()`` value; past it raises TimeoutError. Raises :class:`ProtocolError` for a
    message that is too long, not UTF-8 JSON, or not a JSON object.
    """
    header = _read_exactly(sock, _HEADER.size, deadline)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > MAX_MESSAGE:
        raise ProtocolError(f"a message announces {length} bytes, more than the {MAX_MESSAGE} allowed")
    payload = _read_exactly(sock, length, deadline)
    if payload is None:
        raise ProtocolError("the stream ended inside a message")
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ProtocolError(f"a message is not JSON ({type(err).__name__})") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message
