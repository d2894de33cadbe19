"""`make_mesh`: a device mesh with the `data`, `fsdp` and `tensor` axes, all of type `Auto`.

`Auto` on purpose: in jax 0.10 `jax.make_mesh` defaults to `Explicit` axes, under which shardings
are part of the array types. Our FSDP matmuls then fail to trace ("Contracting dimensions are
sharded and it is ambiguous how the output should be sharded") and sharding constraints turn
into assertions. With `Auto` axes the compiler propagates shardings from the jit boundary and
the few constraints, as GSPMD always has."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from jax.sharding import AxisType, Mesh

from xmod_jax.parallel.rules import MESH_AXES


def make_mesh(
    data: int = -1, fsdp: int = 1, tensor: int = 1, *, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A `data x fsdp x tensor` mesh over `devices` (default: all); one size may be -1, the rest.

    make_mesh() is pure data parallelism over every device; make_mesh(fsdp=-1) pure FSDP;
    make_mesh(fsdp=4, tensor=2) FSDP + tensor parallelism on 8 devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    wild = [name for name, size in sizes.items() if size == -1]
    if len(wild) > 1 or any(size < 1 and size != -1 for size in sizes.values()):
        raise ValueError(f"mesh sizes must be positive, with at most one -1: {sizes}")
    known = math.prod(size for size in sizes.values() if size != -1)
    if wild:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not split into {sizes}")
        sizes[wild[0]] = len(devices) // known
    if math.prod(sizes.values()) != len(devices):
        raise ValueError(
            f"mesh {sizes} needs {math.prod(sizes.values())} devices; there are {len(devices)}"
        )
    shape = tuple(sizes[name] for name in MESH_AXES)
    return jax.make_mesh(
        shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
    )
