#!/usr/bin/env bash
# Re-run every benchmarks/README.md block (and its copies in README.md and docs/) that reports
# SpectralKron's defaults, after a change of a default: each block is written by the script
# that measures it, so no table reports an older default than the code's.
#
#   bash benchmarks/rerun_defaults.sh            # everything: hours on a 2-core machine
#   bash benchmarks/rerun_defaults.sh quality    # the two quality lanes only
#   bash benchmarks/rerun_defaults.sh timing     # the timing blocks only (run on a quiet machine)
#   bash benchmarks/rerun_defaults.sh gpt|rest   # one of the two quality lanes
#
# The quality blocks run in two lanes at once (one torch thread each: their results do not
# depend on the load); each lane keeps the order that the blocks read each other in
# (bench_optim_seeds.py takes its learning rates from the tables written before it). The
# timing blocks run one at a time afterwards, alone on the machine. Logs: results/rerun/.
# The training runs of bench_nn_real.py, bench_optim_quality.py and bench_optim_seeds.py are
# kept in $RERUN_CACHE (default results/rerun/cache): a re-run that stopped resumes from its
# finished runs, and the peers' runs (AdamW, SOAP, Muon), which do not execute SpectralKron,
# are read again after a change of it (nn_training.run_cache says what a key holds).
# RERUN_SKIP="NAME ..." skips the named runs (blocks a stopped re-run already wrote).
# Blocks that do not depend on SpectralKron (results, spd-*, nes, bbob) are not re-run, nor the
# retired option blocks of benchmarks/HISTORY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
LOG=results/rerun
mkdir -p "$LOG"
CACHE=${RERUN_CACHE:-$LOG/cache}
B=benchmarks
SEEDS="python $B/bench_optim_seeds.py --cache $CACHE"
# --refine: rounds of two runs at the best lr's neighbours after the draws (half a stratum,
# then a quarter), the same for every method; one round at the GPT's size, where a run of
# Muon takes about 10 minutes on a 2-core CPU
SMALL="--small --trials 4 --refine 2 --steps 200 --update-every 1 --methods adamw soap muon spectral-p2 --ablations --no-progress --cache $CACHE"
FULL="--precision fp32 --update-every 2 --methods adamw soap muon spectral-p2 --no-progress"
FULL="$FULL --cache $CACHE"

run() {  # run NAME COMMAND...: the command's output in results/rerun/NAME.log
    local name=$1
    shift
    if [[ " ${RERUN_SKIP:-} " == *" $name "* ]]; then
        echo "$(date +%T) skip  $name (RERUN_SKIP)"
        return
    fi
    echo "$(date +%T) start $name"
    "$@" >"$LOG/$name.log" 2>&1 || { echo "$(date +%T) FAILED $name (see $LOG/$name.log)"; return 1; }
    echo "$(date +%T) done  $name"
}

lane_gpt() {  # the full-size GPT: about half of the quality lanes' time
    run full-stdlib python $B/bench_nn_real.py --tasks stdlib $FULL --trials 6 --refine 1 --steps 400 \
        --block full-stdlib --out "$LOG/full-stdlib"
}

lane_rest() {
    run optim-quality python $B/bench_optim_quality.py --seeds 3 --cache "$CACHE"
    run nn-real-fp32 python $B/bench_nn_real.py $SMALL --precision fp32 --out "$LOG/nnreal32"
    run nn-real-bf16 python $B/bench_nn_real.py $SMALL --precision bf16 --out "$LOG/nnreal16"
    run full-digits python $B/bench_nn_real.py --tasks digits $FULL --trials 8 --refine 2 --steps 300 \
        --block full-digits --out "$LOG/full-digits"
    run optim-seeds $SEEDS --option accumulate_gop=False
    run optim-bf16 $SEEDS --option state_dtype=bfloat16 --tasks transformer mlp stdlib \
        --block optim-bf16
    run optim-bf16-digits $SEEDS --option state_dtype=bfloat16 --tasks digits --seeds 300 \
        --block optim-bf16-digits
    run optim-peers $SEEDS --against soap muon adamw
    run optim-peers-digits $SEEDS --against soap muon adamw --tasks digits --seeds 300 \
        --block optim-peers-digits
    run optim-peers-full-digits $SEEDS --against soap muon adamw --tasks digits-full --seeds 10 \
        --block optim-peers-full-digits
    run basis-tracking python $B/bench_basis_tracking.py --steps 300 --beta 0.95
    run basis-oracle python $B/bench_basis_oracle.py
    run heldout python $B/bench_heldout.py
    run optim-max-aspect $SEEDS --option max_aspect=10.0 --tasks mlp digits digits-full --seeds 10 \
        --block optim-max-aspect
    run heldout-max-aspect python $B/bench_heldout.py --tasks cancer wine digits-mlp stdlib-bow \
        --option max_aspect=10.0 --seeds 10 --block heldout-max-aspect
    run optim-clip-rms $SEEDS --option clip_rms=1.0 --tasks transformer mlp stdlib digits \
        digits-full --seeds 10 --block optim-clip-rms
    run heldout-clip-rms python $B/bench_heldout.py --tasks cancer wine diabetes digits-mlp \
        digits-ae digits-vit stdlib-gru stdlib-bow --option clip_rms=1.0 --block heldout-clip-rms
    run optim-gap-floor $SEEDS --option gap_floor=0.001 --tasks digits-full --seeds 10 \
        --block optim-gap-floor
}

timing() {
    run nn-step python $B/bench_nn_step.py
    run nn-step-max-aspect python $B/bench_nn_step.py --tasks digits/full digits/small mlp \
        --methods soap spectral-p2 --option max_aspect=10.0 --block nn-step-max-aspect
    run continuity python $B/bench_continuity.py --steps 50
    run optim-step python $B/bench_optim_step.py
    run optim-batched python $B/bench_optim_batched.py
    run distributed python $B/bench_distributed.py
    run reproduce-all python $B/bench_reproduce_all.py
}

what=${1:-all}
case $what in
    all | quality | timing) ;;
    gpt) lane_gpt; exit ;;  # one quality lane alone (e.g. on two machines, or resumed)
    rest) lane_rest; exit ;;
    *) echo "usage: $0 [all|quality|timing|gpt|rest]" >&2; exit 2 ;;
esac
if [[ $what == all || $what == quality ]]; then
    lane_gpt &
    gpt=$!
    lane_rest
    wait "$gpt"
fi
if [[ $what == all || $what == timing ]]; then
    timing
fi
