#!/usr/bin/env bash
# Every CUDA path of ntksap, in under 5 minutes on one GPU: one line per check (PASS or FAIL,
# seconds); the exit status is 1 if any check failed. A failed check's log tail follows its line.
#
#   benchmarks/gpu_check.sh [--device cuda|cpu] [--data-dir DIR] [--keep]
#
# Checks: pruning with every registered method on the GPU (exact counts, model untouched, float64
# masks equal to the CPU's for the deterministic methods); NTK-SAP's batched draws (pair_vmap,
# draws_per_pass, the GPU defaults) against the sequential path in float64 with the same random
# numbers, BatchNorm statistics included; the NTK on the GPU against the CPU in float64 (both
# backends, traces); `ntksap prune` and `ntksap ntk` on the GPU; one training epoch of `ntksap run`
# with bf16 autocast and channels_last on a real CIFAR-10 subset; DDP with NCCL in one process
# under torchrun; a sweep with a GPU worker slot; a pack against separate runs in float64 and a
# sweep in one pack with bf16 autocast and channels_last; `ntksap lab asi`; the benchmarks in
# quick mode.
# Float32 on the GPU against float64 is printed, not asserted (cuDNN may convolve in TF32).
#
# --device cpu: the same commands with smaller sizes on the CPU (gloo instead of NCCL), to check
# the script on a machine without a GPU. --data-dir: the folder holding cifar10-jpeg.tar.gz
# (default ../shared/datasets). --keep: keep the work folder (logs, runs) and print its path.
set -u -o pipefail

cd "$(dirname "$0")/.."
DEVICE=cuda
DATA_DIR=../shared/datasets
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --data-dir) DATA_DIR="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in
  cuda|cpu) ;;
  *) echo "gpu_check.sh: error: --device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;;
esac
PY=${PYTHON:-python}
CIFAR="$DATA_DIR/cifar10-jpeg.tar.gz"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ntksap-gpu-check.XXXXXX")
export NTKSAP_CACHE="$WORK/cache" WORK DEVICE
if [ "$KEEP" = 1 ]; then echo "work folder: $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi

if [ "$DEVICE" = cuda ]; then  # sizes: quick on a GPU
  MODEL=resnet20; EXAMPLES=64; LIMIT=100; NTK_INPUTS=16; PRUNE_METHODS=""; DRAWS=2
  TRAIN_STEPS="--steps 5 --reps 2 --warmup 2"; ROUNDS=20; REPEATS=5; PER_CHECK=240
else  # dry run: the same commands, small enough for a CPU
  MODEL=convnet; EXAMPLES=16; LIMIT=13; NTK_INPUTS=2; PRUNE_METHODS="--methods magnitude,snip"
  DRAWS=1; TRAIN_STEPS="--steps 1 --reps 1 --warmup 1 --batch-size 16"; ROUNDS=2; REPEATS=1
  PER_CHECK=600
fi

FAILED=0
check() {  # check NAME COMMAND...: run it with a time limit, print PASS/FAIL and seconds
  local name=$1 start end status
  shift
  start=$(date +%s%N)
  if timeout "$PER_CHECK" "$@" >"$WORK/$name.log" 2>&1; then status=PASS; else status=FAIL; fi
  end=$(date +%s%N)
  printf '%s %5d.%d s  %s\n' "$status" $(((end - start) / 1000000000)) \
    $(((end - start) / 100000000 % 10)) "$name"
  if [ "$status" = FAIL ]; then
    FAILED=1
    tail -n 15 "$WORK/$name.log" | sed 's/^/      /'
  fi
}

cat >"$WORK/prune_every_method.py" <<'EOF'
"""Every registered method prunes MODEL on DEVICE: exact count, model untouched; in float64
the deterministic methods give the CPU's masks."""
import copy, dataclasses, os, torch, ntksap
from ntksap.methods import METHODS
device = torch.device(os.environ["DEVICE"])
TINY = {"ntksap": {"repeats": 2}, "prospr": {"steps": 1},
        "ntt": {"steps": 2, "ntk_inputs": 2, "progress": False, "progress_bar": False}}
g = torch.Generator().manual_seed(0)
n = int(os.environ["EXAMPLES"])
x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)

def model(dtype=torch.float32, on=device):
    net = ntksap.build_model(os.environ["MODEL"], 10, seed=0).to(on, dtype)
    with torch.no_grad():  # BatchNorm statistics away from their initial values
        net(x[:16].to(on, dtype))
    return net

def prune(name, net, on=device):
    fields = {f.name for f in dataclasses.fields(METHODS[name])}
    options = {k: v for k, v in TINY.get(name, {}).items() if k in fields}
    data = (x, y) if METHODS[name].needs_data else None
    return ntksap.prune(net, name, 0.9, rounds=2, input_shape=(3, 32, 32), data=data,
                        device=on, seed=0, **options)

for name in METHODS:
    net = model()
    before = copy.deepcopy(net.state_dict())
    masks = prune(name, net)
    assert masks.total - masks.remaining == round(0.9 * masks.total), name
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()), name
    print(f"{name:>10}: {masks.meta['seconds']:6.2f} s, channels_last "
          f"{masks.meta.get('channels_last')}")
for name in ("magnitude", "snip", "iter_snip", "grasp", "synflow", "force"):
    if name in METHODS:
        here = prune(name, model(torch.float64))
        cpu = prune(name, model(torch.float64, "cpu"), "cpu")
        same = sum(int((here[n] == cpu[n]).sum()) for n in cpu) / cpu.total
        print(f"{name:>10}: float64 mask on {device.type} = CPU's for {same:.6f} of weights")
        assert same > 0.999, name
EOF

cat >"$WORK/ntksap_batched_draws.py" <<'EOF'
"""NTK-SAP's batched draws against the sequential path on DEVICE, same random numbers."""
import os, torch, ntksap
device = torch.device(os.environ["DEVICE"])

def scores(dtype, **options):
    net = ntksap.build_model(os.environ["MODEL"], 10, seed=0).to(device, dtype)
    n = int(os.environ["EXAMPLES"])
    return ntksap.score(net, "ntksap", input_shape=(3, 32, 32), samples=n, batch_size=n // 4,
                        repeats=2, seed=1, device=device, **options)

def rel(a, b):
    return max(float((a[n].double() - b[n].double()).abs().max() / b[n].double().abs().max())
               for n in b)

sequential = scores(torch.float64, pair_vmap=False, draws_per_pass=1)
for label, options in [("pair_vmap", {"pair_vmap": True, "draws_per_pass": 1}),
                       ("draws_per_pass=3", {"pair_vmap": False, "draws_per_pass": 3}),
                       ("both", {"pair_vmap": True, "draws_per_pass": 6}),
                       ("device defaults", {}), ("channels_last", {"channels_last": True})]:
    diff = rel(scores(torch.float64, **options), sequential)
    print(f"float64 {label:>16}: max rel diff {diff:.2e}")
    assert diff < 1e-9, label
fused = rel(scores(torch.float64, fused_statistics=True), sequential)
print(f"float64 fused_statistics: max rel diff {fused:.2e} (documented: up to about 2 %)")
assert fused < 0.05
f32 = rel(scores(torch.float32), sequential)
print(f"float32 device defaults against float64: max rel diff {f32:.2e} (printed only)")
EOF

cat >"$WORK/ntk_cuda.py" <<'EOF'
"""The NTK on DEVICE against the CPU in float64: kernel (both backends) and traces."""
import os, torch, ntksap
from ntksap.ntk import empirical_ntk, finite_difference_trace, hutchinson_trace, ntk_trace
device = torch.device(os.environ["DEVICE"])
n = int(os.environ["NTK_INPUTS"])
x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
cpu_model = ntksap.build_model("resnet20", 10, seed=0).double()
masks = ntksap.prune(cpu_model, "magnitude", 0.9)
reference = empirical_ntk(cpu_model, x)
masked_reference = empirical_ntk(
    masks.apply(ntksap.build_model("resnet20", 10, seed=0).double()), x)
model = ntksap.build_model("resnet20", 10, seed=0).to(device, torch.float64)
for backend in ("structured", "func"):
    K = empirical_ntk(model, x.to(device), backend=backend).cpu()
    diff = float((K - reference).abs().max() / reference.abs().max())
    print(f"float64 {backend:>10}: max rel diff to the CPU {diff:.2e}")
    assert diff < 1e-10, backend
masked = masks.apply(ntksap.build_model("resnet20", 10, seed=0).to(device, torch.float64))
K = empirical_ntk(masked, x.to(device)).cpu()
assert float((K - masked_reference).abs().max() / masked_reference.abs().max()) < 1e-10
exact = ntk_trace(model, x.to(device))
for estimate in (hutchinson_trace(model, x.to(device), samples=64, seed=0),
                 finite_difference_trace(model, x.to(device), samples=64, seed=0)):
    print(f"trace {exact:.4g}, estimate {estimate.value:.4g} +- {estimate.stderr:.2g}")
    assert abs(estimate.value - exact) < 6 * estimate.stderr + 0.05 * exact
K32 = empirical_ntk(ntksap.build_model("resnet20", 10, seed=0).to(device), x.float().to(device))
print(f"float32 against float64: max rel diff "
      f"{float((K32.cpu().double() - reference).abs().max() / reference.abs().max()):.2e}"
      " (printed only)")
EOF

cat >"$WORK/ddp.py" <<'EOF'
"""One process under torchrun: DDP over NCCL (gloo on the CPU) through run_experiment."""
import os, sys, torch
import torch.distributed as dist
from ntksap.experiment import resolve, run_experiment
cuda = os.environ["DEVICE"] == "cuda"
device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
if cuda:
    torch.cuda.set_device(device)
dist.init_process_group("nccl" if cuda else "gloo")
try:
    assert dist.get_backend() == ("nccl" if cuda else "gloo") and dist.get_world_size() == 1
    config = resolve("cifar10-resnet20", "ntksap", 0.9, rounds=2, repeats=1,
                     limit_per_class=int(os.environ["LIMIT"]),
                     train_overrides={"epochs": 1, "batch_size": 64, "amp": cuda,
                                      "channels_last": True})
    summary = run_experiment(config, out_dir=os.path.join(os.environ["WORK"], "ddp-runs"),
                             data_dir=sys.argv[1], device=device, progress=False,
                             distributed=True)
    print(summary)
    assert summary["remaining"] == summary["total"] - round(0.9 * summary["total"])
finally:
    dist.destroy_process_group()
EOF

cat >"$WORK/check_run.py" <<'EOF'
"""The `ntksap run` record: one epoch trained with amp and channels_last on DEVICE."""
import json, os, sys
summary = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
config = json.loads(open(os.path.join(summary["run_dir"], "config.json")).read())
print(summary, json.dumps(config)[:400])
text = json.dumps(config)
assert summary["epochs"] == 1 and 0.0 <= summary["final_test_acc"] <= 1.0
assert '"amp": true' in text and '"channels_last": true' in text
assert summary["remaining"] == summary["total"] - round(0.9 * summary["total"])
EOF

cat >"$WORK/pack_float64.py" <<'EOF'
"""A pack of 3 runs on DEVICE against the same runs trained apart, in float64."""
import os, torch
from pathlib import Path
torch.set_default_dtype(torch.float64)
from ntksap.experiment import resolve, run_experiment
from ntksap.pack import run_pack
device, work = os.environ["DEVICE"], Path(os.environ["WORK"])
common = dict(dataset="synthetic", model=os.environ["MODEL"], limit_per_class=20,
              train_overrides={"epochs": 2, "batch_size": 16})
configs = [resolve("cifar10-resnet20", m, s, seed=i, **common)
           for i, (m, s) in enumerate([("snip", 0.9), ("random", 0.98), ("dense", 0.0)])]
alone = [run_experiment(c, out_dir=work / "p-alone", device=device, progress=False)
         for c in configs]
packed = run_pack(configs, out_dir=work / "p-pack", device=device, progress=False)
for a, p in zip(alone, packed):
    x = torch.load(Path(a["run_dir"]) / "checkpoint.pt", weights_only=True)["model"]
    y = torch.load(Path(p.summary["run_dir"]) / "checkpoint.pt", weights_only=True)["model"]
    diff = max(float((x[k] - y[k]).abs().max()) for k in x if x[k].is_floating_point())
    print(a["run_dir"], "max weight difference", diff)
    assert diff < 1e-9 and a["final_test_acc"] == p.summary["final_test_acc"]
EOF

export MODEL EXAMPLES LIMIT NTK_INPUTS
RUN=(run --preset cifar10-resnet20 --data-dir "$CIFAR" --limit-per-class "$LIMIT" --epochs 1
     --batch-size 64 --amp --channels-last --device "$DEVICE" --out-dir "$WORK/runs"
     --no-progress --json)

echo "ntksap GPU check on $DEVICE ($(date -u +%Y-%m-%dT%H:%MZ)); logs in $WORK"
check environment "$PY" -c "import torch, ntksap; print(torch.__version__, ntksap.__file__);
assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'no CUDA device';
print(torch.cuda.get_device_name() if '$DEVICE' == 'cuda' else 'cpu dry run')"
check prune-every-method "$PY" "$WORK/prune_every_method.py"
check ntksap-batched-draws "$PY" "$WORK/ntksap_batched_draws.py"
check ntk "$PY" "$WORK/ntk_cuda.py"
check cli-prune-ntksap "$PY" -m ntksap prune --model resnet20 --method ntksap --sparsity 0.9 \
  --rounds "$ROUNDS" --repeats "$REPEATS" --device "$DEVICE" --out "$WORK/ntksap.pt" --json \
  --no-progress
check cli-ntk "$PY" -m ntksap ntk --model resnet20 --inputs "$NTK_INPUTS" --masks \
  "$WORK/ntksap.pt" --out "$WORK/ntk" --device "$DEVICE" --json --no-progress
check run-amp-channels-last bash -c '"$0" -m ntksap "${@}" >"$WORK/run.json" &&
  "$0" "$WORK/check_run.py" "$WORK/run.json"' "$PY" "${RUN[@]}" --method ntksap --sparsity 0.9 \
  --rounds 2 --repeats 1
check ddp-torchrun "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 \
  "$WORK/ddp.py" "$CIFAR"
check sweep "$PY" -m ntksap sweep configs/smoke-cifar10.yaml --data-dir "$CIFAR" \
  --device "$DEVICE" --workers 1 --methods magnitude --only c=4 --epochs 1 \
  --limit-per-class "$LIMIT" --set fixed.batch_size=64 --out-dir "$WORK/sweep" \
  --db "$WORK/sweep.db" --no-progress --json
check pack-float64 "$PY" "$WORK/pack_float64.py"
check pack-sweep-amp "$PY" -m ntksap sweep configs/smoke-cifar10.yaml --data-dir "$CIFAR" \
  --device "$DEVICE" --workers 1 --pack-size 6 --epochs 1 --limit-per-class "$LIMIT" \
  --set fixed.batch_size=64 --set fixed.amp=true --set fixed.channels_last=true \
  --out-dir "$WORK/packs" --db "$WORK/packs.db" --no-progress --json
check lab-asi "$PY" -m ntksap lab asi --device "$DEVICE" --widths 1 256 256 1 --steps 50 \
  --out "$WORK/lab" --json --no-progress
# shellcheck disable=SC2086
check bench-prune-speed "$PY" benchmarks/prune_speed.py --device "$DEVICE" --no-reference \
  $PRUNE_METHODS --json
check bench-prune-per-draw "$PY" benchmarks/prune_speed.py --device "$DEVICE" --per-draw \
  --draws "$DRAWS" --repeat 1 --json
check bench-ntk-speed "$PY" benchmarks/ntk_speed.py --device "$DEVICE" --inputs "$NTK_INPUTS" \
  --check-inputs 2 --json
# shellcheck disable=SC2086
check bench-train-speed "$PY" benchmarks/train_speed.py --device "$DEVICE" $TRAIN_STEPS --json

check bench-pack-speed "$PY" benchmarks/pack_speed.py --device "$DEVICE" --quick --profile \
  --json

if [ "$FAILED" = 0 ]; then echo "all checks passed"; else echo "some checks FAILED"; fi
exit "$FAILED"
