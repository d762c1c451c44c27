"""NTT as its authors run it: enough steps for its mask to move at the defaults, the mask it
last chose, the counts in the masks' record, and training from the transferred weights (in
``ntksap.prune``, ``ntksap prune --json`` and a run directory that resumes)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import ConvBN

import ntksap
from ntksap import rundir
from ntksap.cli import main
from ntksap.experiment import resolve, run_dir, run_experiment
from ntksap.methods.ntt import NTT

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(inputs_per_step=4, lr=5e-2, progress_bar=False)


def _images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _model() -> ConvBN:
    torch.manual_seed(0)
    return ConvBN().eval()


def _authors_updates(total: int, every: int) -> int:
    """The authors' loop (nt_transfer/ntt.py): for num_iter in 1..total, the mask is re-chosen
    when num_iter % every == 0 and num_iter < total - every."""
    return sum(1 for i in range(1, total + 1) if i % every == 0 and i < total - every)


@pytest.mark.parametrize("images", [64, 100, 1000, 60000])
def test_default_steps_rechoose_the_mask_at_least_three_times(images):
    """At the defaults the mask moves at least 3 times however small the pruning set (100
    CIFAR-10 images at 64 per step: 20 epochs are only 40 steps), and a large set runs the
    paper's 20 epochs (all of MNIST: 18,760 steps of 64 here, 938 batches)."""
    ntt = NTT()
    batches = -(-images // 64)
    steps = ntt.total_steps(batches)
    assert _authors_updates(steps, 100) >= 3
    assert steps == max(20 * batches, 401)
    assert NTT(min_mask_updates=0).total_steps(batches) == 20 * batches
    assert NTT(steps=7).total_steps(batches) == 7  # given steps are exact


@pytest.mark.parametrize("every, least", [(2, 3), (3, 1), (5, 4)])
def test_the_mask_is_rechosen_as_often_as_the_authors_loop_does(every, least):
    x, y = _images(10)
    masks = ntksap.prune(_model(), "ntt", 0.7, data=(x, y), mask_update_every=every,
                         min_mask_updates=least, epochs=1, **FAST)
    steps = (least + 1) * every + 1
    assert masks.meta["transfer_steps"] == steps
    assert masks.meta["mask_updates"] == _authors_updates(steps, every) == least


def test_prune_json_reports_the_mask_updates(capsys):
    assert main(["prune", "--model", "convnet", "--method", "ntt", "--sparsity", "0.98",
                 "--dataset", "synthetic", "--json", "--no-progress",
                 "--option", "steps=5", "--option", "mask_update_every=2",
                 "--option", "ntk_inputs=2", "--option", "progress_bar=false"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mask_updates"] == _authors_updates(5, 2) == 1
    assert report["transfer_steps"] == 5 and report["start_weights"] == "method"
    assert main(["prune", "--model", "convnet", "--method", "snip", "--sparsity", "0.9",
                 "--dataset", "synthetic", "--json", "--no-progress"]) == 0
    assert "mask_updates" not in json.loads(capsys.readouterr().out)


def test_the_model_starts_from_the_transferred_weights():
    """The paper trains the sparse network from NTT's learned parameters: prune writes them
    into the model (every parameter, not the BatchNorm statistics); "initial" leaves the
    model alone, and the reinit sanity check re-draws the weights instead."""
    learned = []
    transfer = NTT.transfer

    def recording(self, net, ctx):
        result = transfer(self, net, ctx)
        learned.append(result.params)
        return result

    x, y = _images(10)
    model = _model()
    before = copy.deepcopy(model.state_dict())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NTT, "transfer", recording)
        masks = ntksap.prune(model, "ntt", 0.7, data=(x, y), steps=3, **FAST)
    assert masks.meta["start_weights"] == "method"
    params = dict(model.named_parameters())
    assert set(params) == set(learned[0])
    for name, value in learned[0].items():
        assert torch.equal(params[name].detach(), value), name
    assert any(not torch.equal(params[n].detach(), before[n]) for n in params)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name

    kept = _model()
    assert ntksap.prune(kept, "ntt", 0.7, data=(x, y), steps=3, start_from="initial",
                        **FAST).meta["start_weights"] == "initial"
    assert all(torch.equal(v, before[k]) for k, v in kept.state_dict().items())
    redrawn = _model()
    meta = ntksap.prune(redrawn, "ntt", 0.7, data=(x, y), steps=3, transform="reinit",
                        **FAST).meta
    assert meta["start_weights"] == "initial"
    assert not torch.equal(dict(redrawn.named_parameters())["conv1.weight"].detach(),
                           learned[0]["conv1.weight"])


def test_transferred_weights_reach_a_masked_model_through_its_parametrization():
    x, y = _images(10)
    model = _model()
    ntksap.prune(model, "random", 0.5).apply(model)
    masks = ntksap.prune(model, "ntt", 0.7, data=(x, y), steps=3, **FAST)
    plain = ntksap.Masks.plain_copy(model)
    reference = _model()
    ntksap.prune(reference, "random", 0.5).apply(reference)
    ntksap.prune(reference, "ntt", 0.7, data=(x, y), steps=3, start_from="initial", **FAST)
    assert masks.meta["start_weights"] == "method"
    assert not torch.equal(plain.conv1.weight, ntksap.Masks.plain_copy(reference).conv1.weight)


def _config(**options):
    return resolve("cifar10-resnet20", "ntt", 0.8, dataset="synthetic", model="convnet",
                   limit_per_class=10, train_overrides={"epochs": 1, "batch_size": 50},
                   method_options={"steps": 3, "inputs_per_step": 8, "ntk_inputs": 4,
                                   "progress_bar": False, **options})


def test_a_run_trains_from_the_transferred_weights_and_resumes_from_them(tmp_path,
                                                                        monkeypatch):
    """The run saves the transferred weights as start.pt before its masks, trains from them,
    and a run resumed before its first checkpoint starts from start.pt, not theta_0; the
    option is in the run's identity."""
    config = _config()
    assert run_dir(config, tmp_path) != run_dir(_config(start_from="initial"), tmp_path)
    trained_from = []
    from ntksap.runs import driver as experiment

    real_train = experiment.train

    def recording(model, *args, **kwargs):
        trained_from.append({k: v.clone() for k, v in model.state_dict().items()})
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(experiment, "train", recording)
    run_experiment(config, out_dir=tmp_path, progress=False)
    directory = run_dir(config, tmp_path)
    start = rundir.load_weights(rundir.start_path(directory))
    init = rundir.load_weights(directory / rundir.INIT)
    assert any(not torch.equal(start[k], init[k]) for k in start)
    assert all(torch.equal(trained_from[0][k], start[k]) for k in start)

    for name in (rundir.CHECKPOINT, rundir.DONE, rundir.SUMMARY, rundir.METRICS):
        (directory / name).unlink(missing_ok=True)  # interrupted before its first epoch
    masks_file = (directory / rundir.MASKS).read_bytes()
    run_experiment(config, out_dir=tmp_path, progress=False)
    assert (directory / rundir.MASKS).read_bytes() == masks_file  # not pruned again
    assert all(torch.equal(trained_from[1][k], start[k]) for k in start)

    initial = _config(start_from="initial")
    run_experiment(initial, out_dir=tmp_path, progress=False)
    assert not rundir.start_path(run_dir(initial, tmp_path)).exists()
    theta0 = rundir.load_weights(run_dir(initial, tmp_path) / rundir.INIT)
    assert all(torch.equal(trained_from[2][k], theta0[k]) for k in theta0)


def test_a_quiet_run_silences_ntts_own_progress_bar(tmp_path, capsys):
    """--no-progress reaches NTT's bar, a display option left at its default (so the run's
    directory is the same as a run that shows it)."""
    quiet = resolve("cifar10-resnet20", "ntt", 0.8, dataset="synthetic", model="convnet",
                    limit_per_class=10, train_overrides={"epochs": 1, "batch_size": 50},
                    method_options={"steps": 3, "inputs_per_step": 8, "ntk_inputs": 4})
    assert "progress_bar" not in quiet.method_options
    run_experiment(quiet, out_dir=tmp_path, progress=False)
    assert "ntt:" not in capsys.readouterr().err
    masks = ntksap.Masks.load(rundir.masks_path(run_dir(quiet, tmp_path)))
    assert masks.meta["options"]["progress_bar"] is False
