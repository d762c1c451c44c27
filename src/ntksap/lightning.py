"""Pruning at initialization in a PyTorch Lightning training: :class:`PruneAtInit`, a
callback (needs ``pip install 'ntksap[lightning]'``).

    trainer = lightning.Trainer(callbacks=[PruneAtInit("ntksap", 0.9, input_shape=(3, 32, 32))])
    trainer.fit(model)        # prunes the LightningModule when fit starts, then trains it masked

The masks are saved in Lightning checkpoints (the callback's state and the module's masked
state dict); ``trainer.fit(model, ckpt_path=...)`` on a fresh module masks it again before
the weights are restored (it is not pruned a second time), and
``ntksap.load_pruned(model, torch.load(path)["state_dict"])`` loads a checkpoint's weights and
masks into a fresh module outside a trainer.
"""

from __future__ import annotations

from typing import Any

import torch

from .engine import prune
from .errors import ConfigError
from .masks import Masks

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as err:  # pragma: no cover - the extra is not installed
    raise ImportError("ntksap.lightning needs Lightning: pip install 'ntksap[lightning]'") from err


class PruneAtInit(Callback):
    """Prune the LightningModule with ``method`` to ``sparsity`` when ``fit`` starts (every
    keyword of :func:`ntksap.prune` is accepted: ``input_shape``, ``data``, ``rounds``,
    ``seed``, the method's options), then train it masked. Restored from a checkpoint, it
    masks the module with the saved masks instead of pruning again."""

    def __init__(self, method: str, sparsity: float, **prune_kwargs: Any) -> None:
        self.method, self.sparsity, self.prune_kwargs = method, sparsity, prune_kwargs
        self.masks: Masks | None = None

    @property
    def state_key(self) -> str:
        return f"PruneAtInit[{self.method}, {self.sparsity}]"

    def setup(self, trainer: Any, pl_module: torch.nn.Module, stage: str) -> None:
        """Let a checkpoint being restored mask the module first: Lightning calls the
        module's ``on_load_checkpoint`` with the checkpoint before it loads the (masked)
        weights, so the module's own hook is wrapped to apply the checkpoint's masks, then
        run."""
        original = pl_module.on_load_checkpoint

        def on_load_checkpoint(checkpoint: dict[str, Any]) -> Any:
            state = (checkpoint.get("callbacks") or {}).get(self.state_key)
            if state is None:
                raise ConfigError(f"the checkpoint holds no {self.state_key} masks; resume it "
                                  "with the callback it was trained with")
            self.load_state_dict(state)
            if self.masks is not None:
                self.masks.apply(pl_module)
            return original(checkpoint)

        pl_module.on_load_checkpoint = on_load_checkpoint

    def on_fit_start(self, trainer: Any, pl_module: torch.nn.Module) -> None:
        if self.masks is None:
            self.masks = prune(pl_module, self.method, self.sparsity, **self.prune_kwargs)
            self.masks.apply(pl_module)

    def state_dict(self) -> dict[str, Any]:
        if self.masks is None:
            return {}
        return {"masks": {name: m.clone() for name, m in self.masks.items()},
                "meta": dict(self.masks.meta)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("masks"):
            self.masks = Masks(state_dict["masks"], state_dict.get("meta"))


__all__ = ["PruneAtInit"]
