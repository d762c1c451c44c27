"""The run-directory module owns every run file's name and the one config digest."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest
import torch

from ntksap import rundir
from ntksap.errors import CheckpointError
from ntksap.experiment import resolve, run_dir
from ntksap.masks import Masks
from ntksap.runs.imp import imp_config, imp_dir

PACKAGE = Path(rundir.__file__).parent


def literal_run_files(source: str) -> list[tuple[int, str]]:
    """(line, name) of each string in ``source``, docstrings aside, that names a run file
    (``f"round{t}"`` included, the IMP round folders)."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            found += [(part.lineno, "round") for part in node.values
                      if isinstance(part, ast.Constant) and part.value in ("round", "/round")]
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings):
            found += [(node.lineno, name) for name in rundir.FILES if name in node.value]
    return found


def test_the_scan_finds_a_run_file_name_in_code_and_messages_but_not_in_docstrings():
    source = ('"""Writes ``masks.pt``."""\n'
              'def f(d, t):\n    """Reads config.json."""\n'
              '    raise ValueError(f"no summary.json in {d}")\n'
              'path = d / "init.pt"\nfolder = d / f"round{t}"\n')
    assert sorted(literal_run_files(source)) == [(4, "summary.json"), (5, "init.pt"),
                                                 (6, "round")]


def test_no_module_but_rundir_names_a_run_file():
    offenders = [f"{path.relative_to(PACKAGE)}:{line}: {name}"
                 for path in sorted(PACKAGE.rglob("*.py")) if path.name != "rundir.py"
                 for line, name in literal_run_files(path.read_text(encoding="utf-8"))]
    assert offenders == [], "run-file names outside ntksap/rundir.py (use its constants)"


def test_run_and_imp_directories_share_one_digest(monkeypatch):
    run = resolve("cifar10-resnet20", "snip", 0.9)
    imp = imp_config("cifar10-resnet20", 1 - 0.8 ** 4, rewind_epoch=1)
    before = run_dir(run, "o").name, imp_dir(imp, "o").name
    monkeypatch.setattr(rundir, "digest", lambda fields: "0123456789")
    assert run_dir(run, "o") == Path("o/cifar10-resnet20/snip-sp0.9-seed0-0123456789")
    assert imp_dir(imp, "o").name == "imp-sp0.5904-seed0-0123456789"
    assert before[1] == "imp-sp0.5904-seed0-e4a64b65a8"  # the pinned name, unchanged


def test_digest_is_sha256_of_the_sorted_json_first_10_hex_digits():
    fields = {"b": 1, "a": {"y": [1, 2], "x": 0.5}}
    text = '{"a": {"x": 0.5, "y": [1, 2]}, "b": 1}'  # sort_keys, json.dumps' separators
    assert rundir.digest(fields) == hashlib.sha256(text.encode()).hexdigest()[:10]


def test_records_round_trip_and_their_file_names(tmp_path):
    directory = tmp_path / "p" / "run"
    rundir.write_config(directory, {"config": {"model": "m"}, "kind": "run"})
    assert json.loads((directory / "config.json").read_text()) == rundir.read_record(directory)
    assert rundir.config_dirs(tmp_path) == [directory]
    rundir.write_summary(directory, {"best_test_acc": 0.5})
    assert json.loads((directory / "summary.json").read_text()) == {"best_test_acc": 0.5}
    assert rundir.read_summary(directory) == {"best_test_acc": 0.5}
    state = {"w": torch.arange(3.0)}
    rundir.save_init(directory, state)
    rundir.save_init(directory, {"w": torch.zeros(3)})  # theta_0 is never overwritten
    assert torch.equal(torch.load(directory / "init.pt")["w"], state["w"])
    assert rundir.initial_weights(directory) == directory / "init.pt"
    rundir.write_spectrum(directory, {"eigenvalues": [2.0, 1.0]})
    assert json.loads((directory / "ntk_spectrum.json").read_text()) == {
        "eigenvalues": [2.0, 1.0]}
    assert rundir.read_spectrum(directory)["eigenvalues"] == [2.0, 1.0]


def test_masks_and_densities_are_saved_together(tmp_path, one_thread):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    masks = Masks.of(model)
    rundir.save_masks(tmp_path, masks, [{"layer": "0", "density": 1.0}])
    assert json.loads((tmp_path / "densities.json").read_text()) == [
        {"layer": "0", "density": 1.0}]
    assert rundir.existing_masks(tmp_path) == tmp_path / "masks.pt"
    assert rundir.load_masks(tmp_path).total == masks.total


def test_imp_rounds_in_round_order_and_the_rewind_point_first(tmp_path):
    for t in (10, 2, 1):
        (tmp_path / f"round{t}").mkdir()
        (tmp_path / f"round{t}" / "masks.pt").write_bytes(b"")
    (tmp_path / "round11").mkdir()  # not pruned yet
    assert [p.name for p in rundir.pruned_rounds(tmp_path)] == ["round1", "round2", "round10"]
    assert rundir.round_dir(tmp_path, 3) == tmp_path / "round3"
    (tmp_path / "init.pt").write_bytes(b"")
    (tmp_path / "rewind.pt").write_bytes(b"")
    assert rundir.initial_weights(tmp_path, imp=True) == tmp_path / "rewind.pt"
    assert rundir.initial_weights(tmp_path) == tmp_path / "init.pt"


def test_an_unreadable_summary_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "summary.json").write_text('{"best_test_acc": 0.')
    with pytest.raises(CheckpointError, match=r"cannot read the run's summary .*summary\.json.*"
                       r"rm .*done\.json"):
        rundir.read_summary(tmp_path)
