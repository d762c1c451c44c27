"""A run, in one place: its config and identity (:mod:`.config`), the checks made before its
directory exists (:mod:`.checks`), the lock of its directory (:mod:`.lock`), what it records of
the code (:mod:`.source`), the single-run driver (:mod:`.driver`), the IMP driver
(:mod:`.imp`), a run directory read back (:mod:`.record`) and the NTK spectrum of a finished
run (:mod:`.spectrum`). The file layout of a
run directory is :mod:`ntksap.rundir`'s; the kinds of run and their dispatch are
:mod:`ntksap.runners`'."""

from .checks import check_batches, check_device, check_model
from .config import (
    FIRST_FIELDS,
    SHARED_STREAM_SEED,
    RunConfig,
    check_code,
    check_method_options,
    config_from_dict,
    identity,
    method_options,
    normalize_record,
    resolve,
    run_dir,
    setting_label,
)
from .driver import (
    data_record,
    finished_summary,
    loaders,
    open_data,
    prepare_run,
    run_experiment,
    summarize,
    validation_loader,
)
from .lock import run_lock
from .record import RunRecord, read_run, record_settings
from .source import CODE, code_state, provenance

__all__ = [
    "CODE", "FIRST_FIELDS", "SHARED_STREAM_SEED", "RunConfig", "check_batches", "check_code",
    "check_device", "check_method_options", "check_model", "code_state", "config_from_dict",
    "data_record", "finished_summary", "identity", "loaders", "method_options",
    "normalize_record", "open_data", "prepare_run", "provenance", "read_run",
    "record_settings", "RunRecord", "resolve", "run_dir",
    "run_experiment", "run_lock", "setting_label", "summarize", "validation_loader",
]
