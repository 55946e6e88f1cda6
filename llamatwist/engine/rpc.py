# -*- test-case-name: tests.test_rpc -*-
"""ggml's RPC backend: model layers on other machines.

`add_servers` makes each ``rpc-server`` (llama.cpp's, or ``llamatwist-rpc-server``) a device of this
process (RPC0, RPC1, ...: -ngl and -dev use them as any GPU); `serve` is the server side, offering this
machine's devices. ggml aborts the whole process when an RPC server cannot be reached, so each endpoint is
first connected to here and an unreachable one is a clear error instead.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from llamatwist.engine.errors import EngineError
from llamatwist.native.binding import backend_init, ffi, lib

__all__ = ["add_servers", "serve", "supported"]
_added: set[str] = set()


def _reg() -> object:
    backend_init()
    reg = lib.ggml_backend_reg_by_name(b"RPC")
    if reg == ffi.NULL:
        raise EngineError("RPC not supported in this build (it has no ggml RPC backend)")
    return reg


def supported() -> bool:
    try:
        _reg()
    except EngineError:
        return False
    return True


def _proc(name: str, signature: str) -> object:
    address = lib.ggml_backend_reg_get_proc_address(_reg(), name.encode())
    if address == ffi.NULL:
        raise EngineError(f"the RPC backend of this build has no {name}")
    return ffi.cast(signature, address)


def add_servers(endpoints: Sequence[str], timeout: float = 10.0) -> None:
    """Register each server's devices (``host:port`` each, once per endpoint); EngineError if one cannot
    be reached."""
    add = _proc("ggml_backend_rpc_add_server", "ggml_backend_reg_t (*)(const char *)")
    for endpoint in endpoints:
        if endpoint in _added:
            continue
        host, _, port = endpoint.partition(":")  # as ggml splits it
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
        except OSError as exc:
            raise EngineError(f"cannot reach the RPC server at {endpoint}: {exc.strerror or exc}") from None
        reg = add(endpoint.encode())  # type: ignore[operator]
        if reg == ffi.NULL:
            raise EngineError(f"the RPC server at {endpoint} offers no devices")
        lib.ggml_backend_register(reg)
        _added.add(endpoint)


def serve(host: str, port: int, devices: Sequence[str], n_threads: int, cache_dir: str | None) -> None:
    """Serve this machine's devices (by name; none named: its GPUs, else the CPU) until the process ends.

    Blocks in ggml (the GIL released); the caller's signal handlers do not run meanwhile.
    """
    start = _proc("ggml_backend_rpc_start_server",
                  "void (*)(const char *, const char *, size_t, size_t, ggml_backend_dev_t *)")
    chosen = [_device(name) for name in devices] or _default_devices()
    arr = ffi.new("ggml_backend_dev_t[]", chosen)
    start(f"{host}:{port}".encode(), cache_dir.encode() if cache_dir else ffi.NULL,  # type: ignore[operator]
          n_threads, len(chosen), arr)


def _device(name: str) -> object:
    backend_init()
    dev = lib.ggml_backend_dev_by_name(name.encode())
    if dev == ffi.NULL:
        raise EngineError(f"unknown device: {name}")
    return dev


def _default_devices() -> list[object]:
    """rpc-server's choice: the devices that are neither CPU nor accelerator, else the CPU."""
    backend_init()
    devs = [lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count())]
    other = [d for d in devs if lib.ggml_backend_dev_type(d) not in (lib.GGML_BACKEND_DEVICE_TYPE_CPU,
                                                                       lib.GGML_BACKEND_DEVICE_TYPE_ACCEL)]
    return other or [lib.ggml_backend_dev_by_type(lib.GGML_BACKEND_DEVICE_TYPE_CPU)]
