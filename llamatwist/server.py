# -*- test-case-name: tests.test_server -*-
"""``make_service``: the whole server as one Twisted MultiService.

Children start in order (engine, then HTTP) and stop in reverse. The HTTP
port is bound at once, so /health answers 503 while the model loads.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.resource import Resource
from twisted.web.server import Site

from llamatwist.api.app import build_app
from llamatwist.api.chatformat import build_formatter
from llamatwist.api.constraints import load_default
from llamatwist.api.http import ApiContext
from llamatwist.api.openapi import OPERATIONS
from llamatwist.api.request_metrics import RequestMetrics
from llamatwist.api.security import (
    SecureResource,
    SecurityPolicy,
    access_log_line,
    body_limited_request,
    guarded_channel,
)
from llamatwist.chat import TemplateError
from llamatwist.config import ServerConfig
from llamatwist.constrain.spec import ConstraintSpec
from llamatwist.engine.context import (
    FLASH_ATTN,
    POOLING_NAMES,
    POOLING_RANK,
    ROPE_SCALING,
    ContextParams,
    CpuParams,
)
from llamatwist.engine.errors import EngineError
from llamatwist.engine.model import Placement
from llamatwist.errors import StartupError
from llamatwist.logs import access_log_formatter, trusted_proxies
from llamatwist.runtime import EngineService, EngineSpec, EngineState, LoadedModel
from llamatwist.runtime.adapters import AdapterSpec
from llamatwist.tools.service import tools_service

if TYPE_CHECKING:
    from twisted.internet.ssl import CertificateOptions

__all__ = ["HTTPService", "ServerService", "add_listeners", "make_service", "tls_options"]

log = logging.getLogger("llamatwist")


class ServerService(MultiService):
    """Holds ``exit_code`` (non-zero after a failed model load).

    Stopping (SIGTERM, SIGINT, twistd's stop) drains first: every request, /health included, answers 503
    while the requests in flight finish, for up to LLAMATWIST_DRAIN_TIMEOUT seconds (default 30); those still
    running then end with an error event. Then the listeners close and the engine frees the model.
    """

    exit_code = 0
    draining = False
    engine: EngineService | None = None

    def stopService(self) -> Deferred[None]:
        self.draining = True
        engine = self.engine
        drained: Deferred[None] = engine.drain(drain_timeout()) if engine is not None else succeed(None)
        drained.addCallback(lambda _: MultiService.stopService(self))
        return drained


def drain_timeout() -> float:
    try:
        return max(0.0, float(os.environ.get("LLAMATWIST_DRAIN_TIMEOUT", "30")))
    except ValueError:
        return 30.0


def _threads(n: int) -> int:
    return n if n > 0 else max(1, os.cpu_count() or 1)


def _check_model_file(path: str) -> None:
    if not os.path.exists(path):
        raise StartupError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise StartupError(f"model path is a directory, not a GGUF file: {path}")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise StartupError(f"cannot read model file {path}: {exc.strerror}") from None
    if magic != b"GGUF":
        raise StartupError(f"not a GGUF file: {path}")


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise StartupError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def tls_options(key_file: str, cert_file: str) -> CertificateOptions:
    """TLS settings from PEM files, as --ssl-key-file/--ssl-cert-file give them.

    The certificate file may hold a chain after the server's certificate. The
    key must not be encrypted (there is no passphrase flag) and must match the
    certificate; TLS 1.2 is the minimum. StartupError says what is wrong.
    """
    try:
        from cryptography import x509
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
        from OpenSSL import SSL, crypto
        from twisted.internet import ssl
    except ImportError as exc:
        raise StartupError(f"TLS needs pyOpenSSL (pip install 'twisted[tls]'): {exc}") from None

    key_pem = _read(key_file, "SSL key file")
    cert_pem = _read(cert_file, "SSL certificate file")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise StartupError(f"SSL key file {key_file} is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise StartupError(f"invalid PEM private key in SSL key file {key_file}: {exc}") from None
    if not isinstance(
        key,
        (
            rsa.RSAPrivateKey,
            ec.EllipticCurvePrivateKey,
            ed25519.Ed25519PrivateKey,
            ed448.Ed448PrivateKey,
            dsa.DSAPrivateKey,
        ),
    ):
        raise StartupError(f"unsupported private key type in SSL key file {key_file}")
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise StartupError(f"invalid PEM certificate in SSL certificate file {cert_file}: {exc}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != certs[0].public_key().public_bytes(encoding, public):
        raise StartupError(f"SSL key file {key_file} does not match the certificate in {cert_file}")
    try:
        return ssl.CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),
            certificate=crypto.X509.from_cryptography(certs[0]),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in certs[1:]],
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )
    except (SSL.Error, crypto.Error, ValueError, TypeError) as exc:
        raise StartupError(f"cannot use SSL key file {key_file} with {cert_file}: {exc}") from None


class _Port(Protocol):
    """What HTTPService uses of the IListeningPort that reactor.listen* returns."""

    def getHost(self) -> Any: ...

    def stopListening(self) -> Any: ...


class HTTPService(Service):
    """Listens with `listen` when started (bound early under twistd, by
    privilegedStartService) and logs the address once the port is bound."""

    def __init__(self, listen: Callable[[], _Port], scheme: str, host: str) -> None:
        self._listen = listen
        self._scheme = scheme
        self._host = host
        self.port: _Port | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self.port = self._listen()

    def startService(self) -> None:
        if self.port is None:
            self.port = self._listen()  # CannotListenError propagates, the service not started
        super().startService()  # type: ignore[no-untyped-call]
        address = self.port.getHost()
        if self._scheme == "unix":
            log.info("llamatwist listening on unix://%s", self._host)
            return
        host = f"[{self._host}]" if ":" in self._host else self._host
        log.info("llamatwist listening on %s://%s:%d", self._scheme, host, getattr(address, "port", 0))

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def _read_text(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read {flag} {path}: {exc}") from None


def _default_constraint(config: ServerConfig) -> ConstraintSpec:
    """--grammar/--grammar-file or -j/-jf; checked for syntax by the first request's compile."""
    grammar = _read_text(config.grammar_file, "--grammar-file") if config.grammar_file else config.grammar
    schema = _read_text(config.json_schema_file, "--json-schema-file") if config.json_schema_file else config.json_schema
    try:
        return load_default(grammar, schema)
    except ValueError as exc:
        raise StartupError(f"-j/--json-schema: {exc}") from None


def _read_template_file(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read --chat-template-file {path}: {exc}") from None


def _thread_pools(config: ServerConfig, draft: bool = False) -> tuple[CpuParams | None, CpuParams | None]:
    """-C/-Cr/--cpu-strict/--prio/--poll and the -batch forms (which default to those); (None, None) leaves
    ggml's own thread handling, as no flag asks for a pool. ``draft``: the --spec-draft-* forms, each
    defaulting to the target's."""
    def pick(main: Any, other: Any) -> Any:
        return main if other is None else other

    cpu = CpuParams(cpus=config.cpu_mask, strict=config.cpu_strict, prio=config.prio, poll=config.poll)
    batch_flags = (config.cpu_mask_batch, config.cpu_strict_batch, config.prio_batch, config.poll_batch)
    if draft:
        cpu = CpuParams(cpus=pick(cpu.cpus, config.cpu_mask_draft), strict=pick(cpu.strict, config.cpu_strict_draft),
                        prio=pick(cpu.prio, config.prio_draft), poll=pick(cpu.poll, config.poll_draft))
        batch_flags = (config.cpu_mask_batch_draft, config.cpu_strict_batch_draft, config.prio_batch_draft,
                       config.poll_batch_draft)
    if all(v is None for v in batch_flags):
        return (None, None) if cpu == CpuParams() else (cpu, None)
    mask, strict, prio, poll = batch_flags
    batch = CpuParams(cpus=pick(cpu.cpus, mask), strict=pick(cpu.strict, strict), prio=pick(cpu.prio, prio),
                      poll=pick(cpu.poll, poll))
    return cpu, batch


# llama.cpp's LLM_FFN_EXPS_REGEX / LLM_FFN_DENSE_REGEX (common.h), for -cmoe, -ncmoe and -ncffn
_FFN_EXPS = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
_FFN_DENSE = r"\.ffn_(up|down|gate)\."


def _cpu_rules(config: ServerConfig, draft: bool = False) -> tuple[tuple[str, str], ...]:
    """-cmoe, -ncmoe, -ncffn (-cmoed, -ncmoed for the draft model): tensor overrides to the CPU buffer,
    after the -ot ones (first match wins)."""
    cpu_moe, n_cpu_moe, n_cpu_ffn = ((config.cpu_moe_draft, config.n_cpu_moe_draft, 0) if draft
                                     else (config.cpu_moe, config.n_cpu_moe, config.n_cpu_ffn))
    rules = [(_FFN_EXPS, "CPU")] if cpu_moe else []
    rules += [(rf"blk\.{i}{_FFN_EXPS}", "CPU") for i in range(n_cpu_moe)]
    rules += [(rf"blk\.{i}{_FFN_DENSE}", "CPU") for i in range(n_cpu_ffn)]
    return tuple(rules)


def _draft_context(config: ServerConfig) -> dict[str, Any]:
    """The draft context's differences from the target's (-td, -tbd, the draft pools, -ctkd, -ctvd)."""
    out: dict[str, Any] = {}
    if config.threads_draft > 0:
        out["n_threads"] = out["n_threads_batch"] = _threads(config.threads_draft)
    if config.threads_batch_draft > 0:
        out["n_threads_batch"] = _threads(config.threads_batch_draft)
    pools = _thread_pools(config, draft=True)
    if pools != _thread_pools(config):
        out["cpu"], out["cpu_batch"] = pools
    out["type_k"] = config.cache_type_k_draft
    out["type_v"] = config.cache_type_v_draft
    return out


def _flash_attn(config: ServerConfig) -> int:
    """-fa; ``auto`` is off where the model runs on lavapipe (Mesa's CPU Vulkan driver): there the pinned
    ggml-vulkan's flash-attention path corrupts memory and kills the process (a 3-token batch then a 16-token
    one, e.g. a prompt's text then its image; tests/test_gpu.py). An explicit ``-fa on`` is obeyed."""
    if config.flash_attn != "auto" or config.n_gpu_layers == 0 or config.devices == ():
        return FLASH_ATTN[config.flash_attn]
    from llamatwist.engine.model import devices

    soft = [d.name for d in devices() if d.kind != "cpu" and "llvmpipe" in d.description
            and (config.devices is None or d.name in config.devices)]
    if not soft:
        return FLASH_ATTN[config.flash_attn]
    log.info("flash attention off on %s (lavapipe, a software Vulkan device: its flash-attention path crashes "
             "with this llama.cpp); -fa on forces it", ", ".join(soft))
    return FLASH_ATTN["off"]


def _context_params(config: ServerConfig) -> ContextParams:
    n_threads = _threads(config.n_threads)
    embeddings = config.embeddings or config.reranking
    n_ubatch = min(config.n_ubatch, config.n_batch)
    # Pooled embeddings need a whole input in one pass: llama-server also
    # forces n_batch = n_ubatch when embeddings are on.
    n_batch = n_ubatch if embeddings else config.n_batch
    pooling = POOLING_NAMES[config.pooling] if config.pooling else (POOLING_RANK if config.reranking else -1)
    cpu, cpu_batch = _thread_pools(config)
    n_ctx = config.n_ctx
    if config.kv_unified_per_slot > 0 and n_ctx == 0 and config.fit_ctx >= 0:  # llama-server: unless -c is given
        n_ctx = config.n_parallel * config.kv_unified_per_slot
    return ContextParams(
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        n_seq_max=config.n_parallel,
        n_threads=n_threads,
        n_threads_batch=_threads(config.n_threads_batch) if config.n_threads_batch > 0 else n_threads,
        kv_unified=config.kv_unified,
        embeddings=embeddings,
        pooling=pooling,
        type_k=config.cache_type_k,
        type_v=config.cache_type_v,
        flash_attn=_flash_attn(config),
        offload_kqv=config.kv_offload,
        op_offload=config.op_offload,
        swa_full=config.swa_full,
        rope_scaling=ROPE_SCALING[config.rope_scaling] if config.rope_scaling else -1,
        rope_freq_base=config.rope_freq_base,
        rope_freq_scale=config.rope_freq_scale,
        yarn_orig_ctx=config.yarn_orig_ctx,
        yarn_ext_factor=config.yarn_ext_factor,
        yarn_attn_factor=config.yarn_attn_factor,
        yarn_beta_slow=config.yarn_beta_slow,
        yarn_beta_fast=config.yarn_beta_fast,
        perf=config.perf,
        cpu=cpu,
        cpu_batch=cpu_batch,
    )


def engine_spec(config: ServerConfig, model_path: str) -> EngineSpec:
    context = _context_params(config)
    return EngineSpec(
        model_path=model_path,
        n_gpu_layers=config.n_gpu_layers,
        context=context,
        n_slots=config.n_parallel,
        cont_batching=config.cont_batching,
        n_predict=config.sampling.n_predict,
        warmup=config.warmup and not context.embeddings,
        reranking=config.reranking,
        cache_ram_mib=config.cache_ram_mib,
        n_ctx_checkpoints=config.n_ctx_checkpoints,
        checkpoint_min_step=config.checkpoint_min_step,
        cache_idle_slots=config.cache_idle_slots,
        ctx_shift=config.ctx_shift,
        slot_prompt_similarity=config.slot_prompt_similarity,
        adapters=AdapterSpec(
            loras=config.loras,
            lora_init_without_apply=config.lora_init_without_apply,
            control_vectors=config.control_vectors,
            cvec_layer_start=config.control_vector_layer_range[0],
            cvec_layer_end=config.control_vector_layer_range[1],
        ),
        draft_model_path=config.model_draft,
        mtp=config.sampling.speculative.has_mtp,
        eagle3=config.sampling.speculative.has_eagle3,
        dflash=config.sampling.speculative.has_dflash,
        dspark=config.sampling.speculative.has_dspark,
        draft_p_min=config.sampling.speculative.p_min,
        lookup_cache_static=config.lookup_cache_static if "ngram-cache" in config.sampling.speculative.types else None,
        lookup_cache_dynamic=(config.lookup_cache_dynamic if "ngram-cache" in config.sampling.speculative.types
                              else None),
        draft_context=_draft_context(config),
        draft_placement=Placement(devices=config.device_draft,
                                  tensor_overrides=config.override_tensor_draft + _cpu_rules(config, draft=True)),
        draft_n_ctx=config.ctx_size_draft,
        draft_n_gpu_layers=config.gpu_layers_draft,
        load_mode=config.load_mode,
        lazy_mode=config.lazy_mode,
        check_tensors=config.check_tensors,
        kv_overrides=config.override_kv,
        placement=Placement(devices=config.devices, tensor_overrides=config.override_tensor + _cpu_rules(config),
                            repack=config.repack, no_host=config.no_host,
                            split_mode=config.split_mode, main_gpu=config.main_gpu,
                            tensor_split=config.tensor_split),
        numa=config.numa,
        special=config.special,
        sleep_idle_seconds=config.sleep_idle_seconds,
        n_ctx_slot_cap=config.kv_unified_per_slot,
        fit=config.fit,
        fit_margins_mib=config.fit_target_mib,
        fit_min_ctx=config.fit_ctx,
        mmproj_path=config.mmproj,
        mmproj_offload=config.projector_devices != (),
        mmproj_device=next(iter(config.projector_devices or ()), None),
        image_min_tokens=config.image_min_tokens,
        image_max_tokens=config.image_max_tokens,
        mtmd_batch_max_tokens=config.mtmd_batch_max_tokens,
        video_fps=config.video_fps,
        video_timestamp_interval_ms=config.video_timestamp_interval_ms,
        video_ffmpeg_dir=config.video_ffmpeg_dir,
    )


def make_service(config: ServerConfig, reactor: Any = None) -> ServerService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    model_path = config.model
    if model_path is None:
        from llamatwist.models import ensure_default_model

        model_path = str(ensure_default_model())
    _check_model_file(model_path)

    if config.n_threads_http > 0:
        reactor.suggestThreadPoolSize(config.n_threads_http)

    top = ServerService()

    def on_failed(message: str) -> None:
        log.error("error: %s", message)
        top.exit_code = 1
        if reactor.running:
            reactor.stop()

    if config.sampling.backend_sampling:
        log.warning("--backend-sampling: llamatwist samples on the CPU (libllama's sampler chain), not on the "
                    "backend; generation_settings.backend_sampling echoes the request")
    if config.sampling.speculative.has_draft_model and config.draft_backend_sampling:
        log.info("--spec-draft-backend-sampling: llamatwist picks draft tokens on the CPU (the argmax of the draft "
                 "model's logits), not on the backend")
    if rates := config.sampling.speculative.synth_rates:
        log.warning("synthetic speculative acceptance is enabled for benchmarking; generated output is not valid")
        log.info("synthetic acceptance: n_max = %d, mean length = %.6f, rates = [%s]", len(rates), 1 + sum(rates),
                 ", ".join(f"{r:.6g}" for r in rates))
    engine = EngineService(engine_spec(config, model_path), reactor, on_failed)
    engine.setServiceParent(top)
    top.engine = engine
    if config.slot_save_path:
        try:
            os.makedirs(config.slot_save_path, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"--slot-save-path {config.slot_save_path}: {exc.strerror}") from None
    tools = tools_service(config, reactor)
    if tools is not None:
        tools.setServiceParent(top)
    ctx = ApiContext(config=config, engine=engine, model_path=model_path,
                     default_constraint=_default_constraint(config), tools=tools,
                     request_metrics=RequestMetrics(OPERATIONS))
    template_text = _read_template_file(config.chat_template_file)

    def prepare_chat(loaded: LoadedModel) -> None:
        def text(token: int) -> str:
            return engine.token_piece(token).decode("utf-8", "replace") if token >= 0 else ""

        try:
            ctx.chat_formatter = build_formatter(
                config, loaded.chat_template, template_text, text(loaded.bos), text(loaded.eos),
                loaded.add_bos, loaded.add_eos,
            )
        except TemplateError as exc:
            if config.embeddings or config.reranking:  # nothing is generated: the template only shows in /props
                log.warning("chat template: %s", exc)
                return
            raise EngineError(f"chat template: {exc}") from None

    engine.ready_hooks.append(prepare_chat)  # an embedding server lists its template in /props too
    resource = SecureResource(
        build_app(ctx).resource(),
        SecurityPolicy.from_config(config),
        is_ready=lambda: engine.state is EngineState.READY and not top.draining,
        metrics=ctx.request_metrics,
    )
    add_listeners(top, resource, config, reactor)
    return top


def add_listeners(top: MultiService, resource: Resource, config: ServerConfig, reactor: Any) -> None:
    """One HTTP(S) listener per --host address serving `resource`, as children of `top`."""
    tls = None
    if config.ssl_key_file or config.ssl_cert_file:
        if not (config.ssl_key_file and config.ssl_cert_file):
            raise StartupError("--ssl-key-file and --ssl-cert-file must be given together")
        tls = tls_options(config.ssl_key_file, config.ssl_cert_file)
    site = Site(
        resource,
        requestFactory=body_limited_request(),
        timeout=config.timeout if config.timeout > 0 else None,
        # behind nginx & co: the client's address from X-Forwarded-For (LLAMATWIST_TRUSTED_PROXIES)
        logFormatter=access_log_formatter(trusted_proxies(), access_log_line),
    )
    site.displayTracebacks = False
    site.protocol = guarded_channel(config.timeout)  # type: ignore[method-assign,assignment]  # slow clients

    hosts = config.host.split(",")
    n_tcp = sum(not h.endswith(".sock") for h in hosts)
    if config.port == 0 and n_tcp > 1:
        raise StartupError("--port 0 is not supported with multiple TCP addresses")
    for i, host in enumerate(hosts):
        http = HTTPService(_listener(reactor, site, host, config.port, tls, v6only=n_tcp > 1,
                                     reuse_port=config.reuse_port),
                           "unix" if host.endswith(".sock") else "http" if tls is None else "https", host)
        http.setName("http" if i == 0 else f"http-{i}")
        http.setServiceParent(top)


def _listener(reactor: Any, site: Site, host: str, port: int, tls: Any, v6only: bool,
              reuse_port: bool = False) -> Callable[[], _Port]:
    """How to listen on one --host address: TCP (TLS when configured), or a UNIX socket for a ``.sock``
    path. With several TCP addresses ``::`` takes IPv6 only, so that ``0.0.0.0`` can be listed too;
    --reuse-port lets several processes bind the same port (the kernel spreads connections over them)."""
    factory: Any = site if tls is None else TLSMemoryBIOFactory(tls, False, site)  # type: ignore[arg-type]

    def listen() -> _Port:
        if host.endswith(".sock"):
            if os.path.exists(host):
                os.unlink(host)  # a stale socket from an earlier run
            return reactor.listenUNIX(host, factory)  # type: ignore[no-any-return]
        if (":" in host and v6only) or reuse_port:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
            try:
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                raise CannotListenError(host, port, exc) from None
            sock.listen(50)
            sock.setblocking(False)
            try:
                return reactor.adoptStreamPort(sock.fileno(), family, factory)  # type: ignore[no-any-return]
            finally:
                sock.close()  # the reactor holds its own duplicate
        return reactor.listenTCP(port, factory, interface=host)  # type: ignore[no-any-return]

    return listen
