"""The fastest correct training step by default: bf16 autocast where the hardware has bf16, channels_last for
convolutional backbones, ``torch.compile`` on request, each chosen at start, shown in one log line and overridable.

``trainer.precision: auto`` (the default of pretraining) becomes ``bf16-mixed`` when the device computes in bf16
natively, else ``32-true``:

- CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and later);
- CPU: AVX512-BF16 or AMX instructions (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``; on
  other CPUs oneDNN emulates bf16 and it is slower than fp32, so ``auto`` keeps fp32 there);
- MPS and anything else: fp32.

A method whose fixed-step parity study did not show equal accuracy keeps fp32 under ``auto`` (its
``auto_bf16 = False``; ``benchmarks/precision_parity.py`` is the study). ``trainer.channels_last: auto`` converts the
backbones to NHWC when they are convolutional (more than one ``Conv2d``: ResNet, ConvNeXt, EfficientNet; a ViT or
Swin has one, its patch embedding, and gains nothing). The measured speed-ups are in
``benchmarks/results/throughput_cpu.json`` (``benchmarks/throughput.py``).

Only the precisions the methods are built for are accepted: ``32-true`` and the two mixed ones. The views, the
queues, the EMA teachers and the precision-sensitive losses keep fp32 state under autocast (tested per method);
Lightning's ``*-true`` half precisions would cast that state too, and ``64-true`` / transformer-engine are not
supported by the views. Anything else is one :class:`~rspretrain.core.errors.ConfigError` line naming the choices;
``bf16-mixed`` on a GPU without bf16 is one line too, and mixed precision on a CPU without the instructions runs
(emulated) with one warning line.

Written here rather than taken from Lightning: Lightning resolves ``precision`` as given and has no "fastest correct
for this hardware and this method" choice; the choice itself is two library calls.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rspretrain.core.errors import ConfigError

__all__ = ["PRECISION_CHOICES", "FastStep", "accelerator_kind", "apply_fast_step", "check_accelerator",
           "check_channels_last", "check_compile_backend", "check_precision", "is_convolutional", "native_bf16",
           "resolve_fast_step", "resolve_precision"]

log = logging.getLogger("rspretrain")

#: What ``trainer.precision`` (and fine-tuning's / dense tasks' ``precision``) accepts.
PRECISION_CHOICES = ("auto", "32-true", "bf16-mixed", "16-mixed")
#: Lightning's short spellings of the same settings.
_ALIASES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


def check_precision(value: object, key: str = "trainer.precision") -> str:
    """``value`` as one of :data:`PRECISION_CHOICES` (Lightning's short forms accepted); a one-line ConfigError
    naming ``key`` and the choices otherwise."""
    text = str(value)
    text = _ALIASES.get(text, text)
    if text not in PRECISION_CHOICES:
        why = (" (the views, queues and EMA teachers keep fp32 state, which a '-true' half or 64-bit precision "
               "would cast)" if text in ("bf16-true", "16-true", "64-true", "64") else "")
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(PRECISION_CHOICES)}{why}")
    return text


def accelerator_kind(accelerator: str) -> str:
    """``cpu``, ``cuda`` or ``mps`` for a Lightning accelerator name (``auto``: what Lightning would pick)."""
    name = str(accelerator).lower()
    if name in ("gpu", "cuda"):
        return "cuda"
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    return name


def check_accelerator(accelerator: str) -> str:
    """:func:`accelerator_kind` of an accelerator this machine has; one ConfigError line for one it lacks (Lightning's
    own message is a traceback)."""
    kind = accelerator_kind(accelerator)
    if kind == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"trainer.accelerator {accelerator}: this machine has no usable CUDA GPU (torch "
                          f"{torch.__version__}, {build}); use cpu or auto")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"trainer.accelerator {accelerator}: MPS is not available here; use cpu or auto")
    return kind


def native_bf16(kind: str) -> tuple[bool, str]:
    """Whether a device of ``kind`` computes in bf16 natively, and why (for the start-up line)."""
    if kind == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA device"
        name = torch.cuda.get_device_name()
        return (True, f"{name} has bf16") if torch.cuda.is_bf16_supported() else (False, f"{name} has no bf16")
    if kind == "cpu":
        cpu = torch.cpu
        for flag, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported")):
            check = getattr(cpu, probe, None)
            if check is not None and check():
                return True, f"the CPU has {flag}"
        if _arm_bf16():
            return True, "the CPU has Arm BF16"
        return False, "the CPU has no bf16 instructions"
    return False, f"{kind}: bf16 autocast not chosen automatically"


def _arm_bf16() -> bool:
    """Arm CPUs list ``bf16`` among their features (torch has no probe for it)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(re.search(r"\bbf16\b", line) for line in text.splitlines() if line.startswith("Features"))


def resolve_precision(precision: str, accelerator: str, *, auto_bf16: bool = True) -> tuple[str, str]:
    """The Lightning precision a run uses, and why.

    Args:
        precision: one of :data:`PRECISION_CHOICES` (checked).
        accelerator: the run's accelerator (``auto``, ``cpu``, ``gpu``...).
        auto_bf16: whether ``auto`` may choose bf16 (False for a method whose parity study did not hold).

    Raises:
        ConfigError: an unknown precision; ``bf16-mixed`` on a GPU without bf16.
    """
    precision = check_precision(precision)
    kind = check_accelerator(accelerator)
    has_bf16, why = native_bf16(kind)
    if precision == "auto":
        if not auto_bf16:
            return "32-true", "auto: this method keeps fp32 (its bf16 parity did not hold)"
        return ("bf16-mixed", f"auto: {why}") if has_bf16 else ("32-true", f"auto: {why}")
    if precision == "bf16-mixed" and not has_bf16:
        if kind == "cuda" and torch.cuda.is_available():
            raise ConfigError(f"trainer.precision bf16-mixed: {why}; choose 16-mixed or 32-true")
        if kind == "cpu":
            log.warning("trainer.precision bf16-mixed: %s; bf16 runs emulated, slower than 32-true", why)
    if precision == "16-mixed" and kind == "cpu" and not getattr(torch.cpu, "_is_amx_fp16_supported", bool)():
        log.warning("trainer.precision 16-mixed: the CPU has no fp16 instructions; fp16 runs emulated, slower than "
                    "32-true")
    return precision, "as given"


def is_convolutional(network: nn.Module) -> bool:
    """True when ``network`` is a convolutional network (more than one ``Conv2d``; a ViT / Swin has only its patch
    embedding), the networks channels_last speeds up."""
    convs = 0
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            convs += 1
            if convs > 1:
                return True
    return False


@dataclass
class FastStep:
    """How a run's step is made fast: the resolved precision and memory format, and why."""

    precision: str
    channels_last: bool
    compile: str = ""
    reasons: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the start-up log."""
        why = {k: self.reasons.get(k, "as given") for k in ("precision", "channels_last")}
        parts = [f"precision {self.precision} ({why['precision']})",
                 f"channels_last {'on' if self.channels_last else 'off'} ({why['channels_last']})"]
        parts.append(f"torch.compile {self.compile}" if self.compile else "torch.compile off")
        return "fast step: " + ", ".join(parts)

    def record(self) -> dict[str, object]:
        return {"precision": self.precision, "channels_last": self.channels_last, "compile": self.compile,
                "reasons": dict(self.reasons)}


def resolve_fast_step(precision: str, channels_last: bool | str, compile_backend: str, accelerator: str,
                      network: nn.Module, *, auto_bf16: bool = True) -> FastStep:
    """The precision, memory format and compile backend of a run of ``network`` on ``accelerator``.

    ``channels_last: auto`` is on for a convolutional ``network`` (:func:`is_convolutional`); ``True`` / ``False``
    are kept as given.
    """
    resolved, why = resolve_precision(precision, accelerator, auto_bf16=auto_bf16)
    if channels_last == "auto":
        conv = is_convolutional(network)
        nhwc, nhwc_why = conv, f"auto: {'a convolutional' if conv else 'not a convolutional'} backbone"
    else:
        nhwc, nhwc_why = bool(channels_last), "as given"
    return FastStep(resolved, nhwc, compile_backend, {"precision": why, "channels_last": nhwc_why})


def check_channels_last(value: object, key: str = "trainer.channels_last") -> bool | str:
    """``True``, ``False`` or ``"auto"``; a one-line ConfigError otherwise."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise ConfigError(f"{key}: {value!r} is not one of true, false, auto")


def check_compile_backend(value: str, key: str = "trainer.compile") -> str:
    """``""`` (off) or a registered ``torch.compile`` backend; a one-line ConfigError naming them otherwise."""
    if not value:
        return ""
    import torch._dynamo

    backends = torch._dynamo.list_backends(exclude_tags=())
    if value not in backends:
        raise ConfigError(f"{key}: {value!r} is not a torch.compile backend ({', '.join(backends)}; '' for off)")
    return value


def apply_fast_step(networks: nn.Module, channels_last: bool = False, compile_backend: str = "",
                    kind: type[nn.Module] | None = None) -> None:
    """channels_last and ``torch.compile`` on every network of ``networks`` of type ``kind`` (default: the toolkit's
    :class:`~rspretrain.nn.backbones.Backbone`: student and teacher backbones), in place, so parameter names
    (checkpoints, exports) do not change.

    channels_last converts the weights and, through a forward pre-hook, each input batch to NHWC. compile replaces
    the timm model's call with a compiled one (as ``nn.Module.compile``) that falls back to eager with one warning
    line naming the backend if compiling fails (a missing C compiler, an unsupported op).
    """
    if not channels_last and not compile_backend:
        return
    if kind is None:
        from rspretrain.nn.backbones import Backbone as kind
    for module in networks.modules():
        if not isinstance(module, kind):
            continue
        net = getattr(module, "model", module)
        if channels_last:
            net.to(memory_format=torch.channels_last)
            net.register_forward_pre_hook(_to_channels_last)
        if compile_backend:
            net._compiled_call_impl = _CompiledOrEager(net, compile_backend)


def _to_channels_last(module, args):
    x, *rest = args
    if torch.is_tensor(x) and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return (x, *rest)


class _CompiledOrEager:
    """A module's call compiled with ``backend``; on the first failure, one warning and eager calls from then on."""

    def __init__(self, module: nn.Module, backend: str) -> None:
        self.module, self.backend = module, backend
        self.compiled = torch.compile(module._call_impl, backend=backend)

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.module._call_impl(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any compile failure falls back; the eager call re-raises real errors
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            log.warning("trainer.compile %s failed (%s: %s); running eager", self.backend, type(err).__name__,
                        first[:200])
            self.compiled = None
            return self.module._call_impl(*args, **kwargs)
