"""int8 inference through ``torch.ao.quantization`` (Vanhoucke, Senior and Mao, "Improving the speed
of neural networks on CPUs", 2011: 8-bit fixed-point weights and activations, about 3x on CPUs).

* ``dynamic``: Linear weights are quantized to int8 ahead of time, activations per batch at run time
  (``quantize_dynamic``); no calibration data, best for fully connected and recurrent models.
* ``static``: weights and activations int8 with scales fixed by observers on calibration batches;
  the FX graph mode fuses Conv/Linear + ReLU first (``prepare_fx``/``convert_fx``); best for CNNs.
* ``qat``: quantization-aware training (Jacob et al., CVPR 2018): fake-quantize modules simulate int8
  in the forward pass while escala's training loop fine-tunes the float weights, then ``convert_fx``.

The kernels are fbgemm/x86 (onednn and qnnpack where selected). torch 2.13 marks ``torch.ao.quantization``
as deprecated in favour of torchao, but on CPU its eager int8 kernels are the fast ones (torchao's eager
CPU paths run slower than fp32), so it is used here; its deprecation warnings are silenced locally.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Callable

import torch
from torch import nn

METHODS = ("dynamic", "static", "qat")


@contextlib.contextmanager
def _quiet():
    """Silence torch.ao's deprecation chatter (it would be printed on every call)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"(?s).*(deprecated|reduce_range|quantize_per).*")
        yield


class _Flatten(nn.Module):
    """``nn.Flatten`` that FX traces through to ``torch.flatten``, a shape op int8 tensors pass.

    FX keeps ``nn.Flatten`` as an opaque module without a quantization pattern, so ``convert_fx``
    dequantizes before it and quantizes again after it; as ``torch.flatten`` the conv -> fc handover
    stays int8 (measured on LeNet-5, 1 thread: batch 1 from 0.78x to 0.97x of fp32, batch 256 1.78x to
    1.86x).
    """

    def __init__(self, start_dim: int, end_dim: int) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, self.start_dim, self.end_dim)


def _traceable(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` with every ``nn.Flatten`` replaced by :class:`_Flatten`."""
    out = copy.deepcopy(model).cpu()
    for name, module in list(out.named_modules()):
        if isinstance(module, nn.Flatten) and name:
            parent, _, child = name.rpartition(".")
            setattr(
                out.get_submodule(parent) if parent else out,
                child,
                _Flatten(module.start_dim, module.end_dim),
            )
    return out


def engine() -> str:
    """The quantized kernel backend torch selected for this CPU (x86/fbgemm on Intel/AMD)."""
    return torch.backends.quantized.engine


def dynamic(model: nn.Module) -> nn.Module:
    """int8 weights for every ``nn.Linear``, activations quantized on the fly."""
    from torch.ao.quantization import quantize_dynamic

    with _quiet():
        return quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)


def static(model: nn.Module, calibration: list[torch.Tensor]) -> nn.Module:
    """Post-training static int8: fuse, observe ``calibration`` batches, convert (FX graph mode)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with _quiet():
        float_model = _traceable(model).eval()
        prepared = prepare_fx(float_model, get_default_qconfig_mapping(engine()), (calibration[0],))
        with torch.no_grad():
            for batch in calibration:
                prepared(batch)
        return convert_fx(prepared)


def prepare_qat(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with fake-quantization inserted, ready to be trained."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    with _quiet():
        return prepare_qat_fx(
            _traceable(model).train(), get_default_qat_qconfig_mapping(engine()), (example,)
        )


def convert_qat(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with _quiet():
        return convert_fx(copy.deepcopy(prepared).cpu().eval())


def quantize(
    model: nn.Module,
    method: str,
    calibration: list[torch.Tensor],
    train_qat: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    """int8 model by ``method``; ``train_qat(prepared)`` trains the fake-quantized copy for ``qat``."""
    if method == "dynamic":
        return dynamic(model)
    if method == "static":
        return static(model, calibration)
    prepared = prepare_qat(model, calibration[0])
    if train_qat is not None:
        with _quiet():
            train_qat(prepared)
    return convert_qat(prepared)


def saved_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())``: what an int8 model really costs on disk."""
    buf = io.BytesIO()
    with _quiet():
        torch.save(model.state_dict(), buf)
    return buf.tell()
