#!/usr/bin/env bash
# Every GPU measurement in one run (bench/README.md has the results), in parts that can also run alone:
#  check: bench/packing_check.py: packed against padded loss and gradients on the GPU's compiled kernels;
#  bench: bench/throughput.py with t5-small's shape, this project against the seed's setup, with the best
#         token-budget batches measured so far: as the stages run (compiled: train.compile), and with the
#         candidates `eager` (not compiled), `eager-attention` (compiled with T5's own attention code, as a
#         CPU trains), `pack` (train.packing) and `pack-compile` (recompiles logged,
#         with their reasons); then profiled, with `pack-compile`. One run failing (e.g. out of memory)
#         does not stop the next;
#  repro, repro-packed: the seed-sized experiment end to end: 20k / 5k / 5k questions from the bundled
#         data's generator, a randomly initialised t5-small-shaped checkpoint, `dvc repro` one stage at a
#         time with each stage's time (train compiled as by default, its recompiles logged; packed: not
#         compiled whole); batches of 64 examples, or (packed) of 4,096 source tokens: whole
#         rows, which on the bundled data are 1,408 tokens of ~27 examples, so 2 rows, ~53 examples and
#         more steps than unpacked (the train stage prints the rows). After `repro`, `repro-packed`
#         re-runs train and evaluate only;
#  evaluate: after a repro, the evaluate stage's imports timed, then the stage profiled (where its seconds go);
#         run before `repro-packed`, which deletes the model if its train stage fails.
# Run it from the root of a scratch copy of the repository: repro rewrites params.yaml and the outputs.
#   bash bench/gpu.sh ["check repro evaluate repro-packed bench" or some of them] [scratch folder]
# All of it outlasts one 10-minute device call: call it twice, "check repro evaluate repro-packed" (the
# parts that share the scratch copy's outputs), then "bench".
# Without a package index there, carry the wheels of bench/gpu_wheels.py and first run
#   python -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
# (`python -m`: the image's own pip belongs to another Python than the one with PyTorch and its packages)
set -euo pipefail
export PYTHONUNBUFFERED=1  # a run cut off at the call's limit keeps what it printed
parts=${1:-check repro evaluate repro-packed bench}
work=${2:-/tmp/seed_sized}
best=(--batch-size 1024 --batch-tokens 131072 --eval-batch-size 1024)  # 38 GiB peak on an H100
throughput() { python bench/throughput.py "$@" || echo "bench/throughput.py $* failed with status $?"; }

repro() {  # $1: true for train.packing
  if [ ! -e .git ]; then  # dvc and dvclive work in a git repository with a commit; a bare copy of the files has none
    git init -q && git add -A && git -c user.name=bench -c user.email=bench@localhost commit -qm "scratch copy"
  fi
  if [ ! -e "$work/t5-small-random" ]; then
    python -m stages.synthetic --out "$work/data" --train-paragraphs 13000 --validation-paragraphs 2700
    python bench/random_checkpoint.py "$work/t5-small-random" --data "$work/data/train.json"
  fi
  python - "$work" "$1" <<'PY'
import sys, yaml
work, packed = sys.argv[1], sys.argv[2] == "true"
p = yaml.safe_load(open("params.yaml"))
p["data"]["source"] = f"{work}/data"
p["data"]["splits"] = {"train": "train[:20000]", "validation": "train[20000:25000]", "test": "validation[:5000]"}
p["model"]["name"] = f"{work}/t5-small-random"
p["train"].update(lr=3e-4, epochs=3, batch_size=64, batch_tokens=4096 if packed else 0, packing=packed,
                  compile=not packed)
p["evaluate"]["batch_size"] = 512
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
print(p)
PY
  for stage in prepare tokenize train evaluate; do
    start=$(date +%s%N)
    TORCH_LOGS=recompiles python -m dvc repro --single-item "$stage" || { echo "stage $stage failed with status $?"; return 1; }
    echo "stage $stage: $(( ($(date +%s%N) - start) / 1000000 )) ms"
  done
  cat metrics/eval.json
}

for part in $parts; do
  case $part in
    check) python bench/packing_check.py || echo "bench/packing_check.py failed with status $?" ;;
    bench)
      TORCH_LOGS=recompiles throughput "${best[@]}" --candidate eager --candidate eager-attention --candidate pack \
        --candidate pack-compile
      throughput "${best[@]}" --steps 5 --generate 256 --profile --candidate pack-compile ;;
    repro) repro false || echo "repro failed" ;;
    repro-packed) repro true || echo "repro-packed failed" ;;
    evaluate)
      for i in 1 2; do
        python -c "import time; t = time.perf_counter(); import stages.evaluate
print(f'import stages.evaluate: {time.perf_counter() - t:.2f} s')"
      done
      python -m cProfile -o /tmp/evaluate.prof -m stages.evaluate
      python -c "import pstats; pstats.Stats('/tmp/evaluate.prof').sort_stats('cumtime').print_stats(50)" ;;
    *) echo "unknown part $part: check, bench, repro, repro-packed or evaluate" >&2; exit 2 ;;
  esac
done
