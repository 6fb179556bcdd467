r"""The one save format of probkit: every fitted model, network weight file and checkpoint.

A file is

1. the magic line ``PROBKIT\n``;
2. an 8-byte little-endian length, then a JSON header: ``format_version``, ``class`` (the saved
   object's ``module:qualname``), ``config`` (the object's structure: its class, static fields and
   one placeholder per array with shape and dtype), ``metadata`` (training metadata: steps, time,
   seed, device, anything the caller adds), the probkit version, and the length and SHA-256 of
   the array section;
3. the array section: the arrays in order, written by :func:`equinox.tree_serialise_leaves`.

:func:`load` rebuilds the object from the header (without calling its ``__init__``, so no
fitting or checking is redone) and reads the arrays back with their saved dtypes, so the loaded
object computes bit-for-bit what the saved one did. What can be saved: equinox Modules,
NamedTuples, frozen dataclasses, NumPyro distributions (and their transforms), tuples, lists,
dicts with string keys, NumPy/JAX arrays (typed PRNG keys too), Python scalars, and references
to importable classes and module-level functions (a NumPyro model, a kernel class). Loading
imports the modules those references name, so load files you trust, as with any model format
that names code.

Errors name the path: a file that is not a probkit file, a damaged or truncated header or array
section (the checksum is checked), a newer format version, or an object of another class than
the caller expects are each a :class:`ValueError`; a missing file is a
:class:`FileNotFoundError`.

Examples
--------
>>> import tempfile, pathlib, jax.numpy as jnp
>>> from probkit import _io
>>> from probkit.posterior import Gaussian
>>> path = pathlib.Path(tempfile.mkdtemp()) / "g.pk"
>>> _ = _io.save(path, Gaussian(jnp.zeros(2), scale=jnp.ones(2)), metadata={"note": "demo"})
>>> _io.load(path).scale.tolist(), _io.read_header(path)["metadata"]["note"]
([1.0, 1.0], 'demo')
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import pathlib
import struct
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FORMAT_VERSION", "save", "load", "read_header", "encode", "decode", "fingerprint"]

#: Version of the file layout and of the structure encoding; files of a newer version are refused.
FORMAT_VERSION = 1
_MAGIC = b"PROBKIT\n"


def _ref(obj) -> str:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module is None or qualname is None or "<" in qualname:
        raise ValueError(f"cannot save a reference to {obj!r}: define it at module level so that "
                         "it can be imported by name")
    if _resolve(f"{module}:{qualname}") is not obj:
        raise ValueError(f"cannot save a reference to {obj!r}: {module}:{qualname} does not "
                         "import to the same object")
    return f"{module}:{qualname}"


def _resolve(ref: str):
    module, qualname = ref.split(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _is_namedtuple(value) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def encode(value, leaves: list[np.ndarray]):
    """JSON-able description of ``value``; its arrays are appended to ``leaves`` (in order)."""
    import numpyro.distributions as dist

    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float) and not isinstance(value, np.generic):
        return value
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        leaves.append(np.asarray(jax.random.key_data(value)))
        return {"__key__": len(leaves) - 1, "impl": str(jax.random.key_impl(value)),
                "shape": list(leaves[-1].shape)}
    if isinstance(value, np.ndarray | jax.Array | np.generic):
        arr = np.asarray(value)
        leaves.append(arr)
        kind = "numpy" if isinstance(value, np.ndarray | np.generic) else "jax"
        return {"__array__": len(leaves) - 1, "shape": list(arr.shape), "dtype": arr.dtype.str,
                "kind": kind, "scalar": isinstance(value, np.generic)}
    if isinstance(value, dist.transforms.Transform | dist.constraints.Constraint):
        # e.g. the ExpTransform of a LogNormal and its domain constraint: NumPyro pytrees
        tag = "__transform__" if isinstance(value, dist.transforms.Transform) else "__constraint__"
        children, aux = value.tree_flatten()
        return {tag: _ref(type(value)),
                "children": [encode(c, leaves) for c in children], "aux": encode(aux, leaves)}
    if isinstance(value, type) or callable(value) and not isinstance(value, eqx.Module
                                                                     | dist.Distribution):
        if not (isinstance(value, type) or hasattr(value, "__qualname__")):
            raise ValueError(f"cannot save {type(value).__name__} object {value!r}")
        return {"__ref__": _ref(value)}
    if isinstance(value, eqx.Module) or (dataclasses.is_dataclass(value)
                                         and not isinstance(value, type)):
        fields = {f.name: encode(getattr(value, f.name), leaves)
                  for f in dataclasses.fields(value) if hasattr(value, f.name)}
        return {"__object__": _ref(type(value)), "fields": fields}
    if _is_namedtuple(value):
        return {"__namedtuple__": _ref(type(value)),
                "fields": [encode(v, leaves) for v in value]}
    if isinstance(value, dist.Distribution):
        names = type(value).gather_pytree_data_fields() + tuple(
            n for n in type(value).gather_pytree_aux_fields() if n != "_validate_args")
        return {"__distribution__": _ref(type(value)),
                "fields": {n: encode(getattr(value, n), leaves) for n in sorted(names)},
                "batch_shape": list(value.batch_shape), "event_shape": list(value.event_shape)}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, leaves) for v in value]}
    if isinstance(value, list):
        return [encode(v, leaves) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("cannot save a dict with non-string keys")
        return {"__dict__": {k: encode(v, leaves) for k, v in value.items()}}
    raise ValueError(f"cannot save {type(value).__module__}.{type(value).__qualname__} objects")


def _new(cls, fields: dict[str, Any]):
    obj = object.__new__(cls)
    for name, v in fields.items():
        object.__setattr__(obj, name, v)
    return obj


def decode(spec, leaves: list[np.ndarray]):
    """Inverse of :func:`encode`: rebuild the object from its description and its arrays."""
    if isinstance(spec, list):
        return [decode(v, leaves) for v in spec]
    if not isinstance(spec, dict):
        return spec
    if "__array__" in spec:
        arr = leaves[spec["__array__"]]
        if spec["scalar"]:
            return arr.dtype.type(arr[()])
        if spec["kind"] == "numpy":
            return arr
        with jax.enable_x64(arr.dtype.itemsize == 8):
            return jnp.asarray(arr)
    if "__key__" in spec:
        return jax.random.wrap_key_data(jnp.asarray(leaves[spec["__key__"]]), impl=spec["impl"])
    if "__ref__" in spec:
        return _resolve(spec["__ref__"])
    if "__object__" in spec:
        fields = {k: decode(v, leaves) for k, v in spec["fields"].items()}
        return _new(_resolve(spec["__object__"]), fields)
    for tag in ("__transform__", "__constraint__"):
        if tag in spec:
            return _resolve(spec[tag]).tree_unflatten(
                decode(spec["aux"], leaves), tuple(decode(c, leaves) for c in spec["children"]))
    if "__namedtuple__" in spec:
        return _resolve(spec["__namedtuple__"])(*[decode(v, leaves) for v in spec["fields"]])
    if "__distribution__" in spec:
        import numpyro.distributions as dist

        cls = _resolve(spec["__distribution__"])
        fields = {k: decode(v, leaves) for k, v in spec["fields"].items()}
        # as numpyro's own tree_unflatten: the parameters were validated when first built
        obj = _new(cls, {**fields, "_validate_args": False})
        dist.Distribution.__init__(obj, batch_shape=tuple(spec["batch_shape"]),
                                   event_shape=tuple(spec["event_shape"]))
        return obj
    if "__tuple__" in spec:
        return tuple(decode(v, leaves) for v in spec["__tuple__"])
    if "__dict__" in spec:
        return {k: decode(v, leaves) for k, v in spec["__dict__"].items()}
    raise ValueError(f"unknown entry in a saved structure: {sorted(spec)}")


def _skeleton(spec, out: list[np.ndarray]) -> None:
    if isinstance(spec, list):
        for v in spec:
            _skeleton(v, out)
    elif isinstance(spec, dict):
        if "__array__" in spec:
            out.append(np.zeros(spec["shape"], np.dtype(spec["dtype"])))
        elif "__key__" in spec:
            out.append(np.zeros(spec["shape"], np.uint32))
        else:
            for v in spec.values():
                _skeleton(v, out)


def save(path, obj, *, metadata: dict[str, Any] | None = None) -> pathlib.Path:
    """Write ``obj`` and ``metadata`` (JSON-able) to ``path``; return the path."""
    from probkit import __version__

    path = pathlib.Path(path)
    leaves: list[np.ndarray] = []
    config = encode(obj, leaves)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, leaves)
    data = buf.getvalue()
    header = {"format": "probkit", "format_version": FORMAT_VERSION,
              "class": _ref(type(obj)), "probkit_version": __version__,
              "config": config, "metadata": dict(metadata or {}),
              "data_bytes": len(data), "data_sha256": hashlib.sha256(data).hexdigest()}
    try:
        text = json.dumps(header).encode()
    except TypeError as err:
        raise ValueError(f"metadata: not JSON-serialisable ({err})") from None
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_MAGIC + struct.pack("<Q", len(text)) + text + data)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written file at path
    return path


def _read(path) -> tuple[dict[str, Any], bytes]:
    path = pathlib.Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(_MAGIC):
        raise ValueError(f"{str(path)!r}: not a probkit file (no probkit header)")
    try:
        (size,) = struct.unpack("<Q", raw[len(_MAGIC):len(_MAGIC) + 8])
        start = len(_MAGIC) + 8
        if start + size > len(raw):
            raise ValueError("header runs past the end of the file")
        header = json.loads(raw[start:start + size])
    except (struct.error, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r}: damaged or truncated header ({err})") from None
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{str(path)!r}: format version {version!r} is newer than this probkit "
                         f"reads ({FORMAT_VERSION}); upgrade probkit to load it")
    data = raw[start + size:]
    if len(data) != header.get("data_bytes") or (
            hashlib.sha256(data).hexdigest() != header.get("data_sha256")):
        raise ValueError(f"{str(path)!r}: truncated or damaged array data "
                         f"({len(data)} bytes, header says {header.get('data_bytes')})")
    return header, data


def read_header(path) -> dict[str, Any]:
    """The JSON header of a probkit file (checked like :func:`load`)."""
    return _read(path)[0]


def load(path, expected: type | tuple[type, ...] | None = None):
    """Read an object written by :func:`save`.

    Parameters
    ----------
    path : str or Path
    expected : type or tuple of types, optional
        Raise a ``ValueError`` naming the path unless the saved object is an instance of these.
    """
    header, data = _read(path)
    try:
        cls = _resolve(header["class"])
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"{str(path)!r}: saved class {header.get('class')!r} is not available "
                         f"in this probkit ({err})") from None
    if expected is not None and not (isinstance(cls, type) and issubclass(cls, expected)):
        names = ", ".join(t.__qualname__ for t in np.atleast_1d(np.array(expected, dtype=object)))
        raise ValueError(f"{str(path)!r}: holds a {cls.__qualname__}, expected {names}")
    like: list[np.ndarray] = []
    _skeleton(header["config"], like)
    try:
        leaves = eqx.tree_deserialise_leaves(io.BytesIO(data), like)
    except Exception as err:  # noqa: BLE001 - any failure here means the data do not match
        raise ValueError(f"{str(path)!r}: array data do not match the header ({err})") from None
    return decode(header["config"], [np.asarray(a) for a in leaves])


def fingerprint(obj) -> str:
    """SHA-256 of an object's content: its structure (classes, static fields, references by name)
    and the bytes of its arrays. Equal content gives an equal fingerprint in any process (no
    memory addresses), so checkpoints can recognise the prior or model they were written for."""
    leaves: list[np.ndarray] = []
    h = hashlib.sha256(json.dumps(encode(obj, leaves), sort_keys=True).encode())
    for leaf in leaves:
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()
