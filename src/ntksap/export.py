"""Export a pruned network: its baked weights (``state_dict``), an ONNX graph of the baked
model (``onnx``, needs ``pip install 'ntksap[onnx]'``), or the model masked the
``torch.nn.utils.prune`` way (``torch_prune``: the whole model, ``torch.save``-d, with
``weight_orig``/``weight_mask`` per layer). Every file is written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_torch_save
from .errors import ConfigError
from .interop import to_torch_prune
from .masks import Masks

FORMATS = ("state_dict", "onnx", "torch_prune")


def export(model: nn.Module, masks: Masks, form: str, out: str | os.PathLike,
           input_shape: tuple[int, ...]) -> Path:
    """Write ``model`` (masked by ``masks``) to ``out`` in the format ``form``
    (:data:`FORMATS`); ``model`` is left as it is. ``input_shape`` (one example's) traces the
    ONNX graph (batch dimension dynamic; weights inside the file, so models under ONNX's
    2 GB limit). The ONNX graph stores the zeros of the baked weights: it is as large as the
    dense model (see docs)."""
    if form not in FORMATS:
        raise ConfigError(f"unknown export format {form!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    baked = Masks.plain_copy(model).eval()
    if form == "state_dict":
        atomic_torch_save(baked.state_dict(), out)
    elif form == "torch_prune":
        atomic_torch_save(to_torch_prune(baked, masks), out)
    else:
        _onnx(baked, out, input_shape)
    return out


def _onnx(model: nn.Module, out: Path, input_shape: tuple[int, ...]) -> None:
    try:
        import onnx  # noqa: F401 - torch's exporter needs it
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ConfigError("the ONNX export needs onnx and onnxscript: pip install "
                          "'ntksap[onnx]'") from err
    parameter = next(model.parameters())
    example = torch.zeros((2, *input_shape), dtype=parameter.dtype, device=parameter.device)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.onnx.export(model, (example,), temporary, dynamo=True, verbose=False,
                          external_data=False, input_names=["input"],
                          output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
        os.replace(temporary, out)
    finally:
        Path(temporary).unlink(missing_ok=True)


__all__ = ["FORMATS", "export"]
