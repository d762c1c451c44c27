"""ntksap.lightning.PruneAtInit: prunes a LightningModule when fit starts, trains it masked,
and comes back from a Lightning checkpoint with the same masks (restored, not re-pruned)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ntksap

lightning = pytest.importorskip("lightning")
pytestmark = pytest.mark.usefixtures("one_thread")


class Net(lightning.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(64, 8, generator=g), torch.arange(64) % 3),
                      batch_size=16)


def _trainer(tmp_path, steps: int, callback) -> lightning.Trainer:
    return lightning.Trainer(max_steps=steps, accelerator="cpu", logger=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=str(tmp_path), callbacks=[callback])


def test_prune_at_init_trains_masked_and_resumes_from_a_checkpoint(tmp_path):
    from ntksap.lightning import PruneAtInit

    model = Net()
    first = PruneAtInit("random", 0.75, seed=0)
    _trainer(tmp_path, 2, first).fit(model, _data())
    assert ntksap.measured_sparsity(model) == pytest.approx(0.75, abs=0.01)
    pruned = {n: (m.parametrizations.weight.original == 0) for n, m in model.named_modules()
              if isinstance(m, nn.Linear)}
    assert all(bool((first.masks[n] == ~p).all()) for n, p in pruned.items())  # 2 steps masked
    path = tmp_path / "two.ckpt"
    trainer = _trainer(tmp_path, 2, first)
    trainer.fit(model, _data())  # (already at max_steps: nothing more)
    trainer.save_checkpoint(path)

    fresh, again = Net(), PruneAtInit("random", 0.75, seed=99)  # another seed: another mask
    _trainer(tmp_path, 4, again).fit(fresh, _data(), ckpt_path=str(path))
    assert all(torch.equal(again.masks[n], first.masks[n]) for n in first.masks)  # restored
    assert ntksap.measured_sparsity(fresh) == pytest.approx(0.75, abs=0.01)

    outside = Net()
    masks = ntksap.load_pruned(outside, torch.load(path, weights_only=False)["state_dict"])
    assert all(torch.equal(masks[n], first.masks[n]) for n in first.masks)
