#!/usr/bin/env bash
# CN-Celeb recipe: train on CN-Celeb1 dev (800 speakers) + CN-Celeb2 (1,996 speakers) with triplet
# loss and online mining, evaluate on the official CN-Celeb1 evaluation list (multi-utterance
# enrollment as enroll.map defines it) with cosine, mean subtraction and AS-Norm, calibrate on
# held-out training speakers, report EER / minDCF and DET plots. Same stages 3-6 as VoxCeleb.
#
# Corpora (nothing is downloaded; stage 0 says what is missing and where to get it):
#   CNC1=/path/to/CN-Celeb_flac   holds data/idNNNNN/<genre>-<session>-<utt>.flac, dev/dev.lst,
#                                 eval/test/, eval/lists/{enroll.lst,test.lst,trials.lst,enroll.map}
#   CNC2=/path/to/CN-Celeb2_flac  holds data/idNNNNN/<genre>-<session>-<utt>.flac
#   MUSAN=/path/to/musan          optional: music/ speech/ noise/
#   RIRS=/path/to/RIRS_NOISES     optional: simulated_rirs/
#
#   CNC1=... CNC2=... bash run.sh [--stage N] [--stop-stage M] [--config conf/xvector_triplet.yaml]
#       [--init CKPT] [--ngpu N] [--jobs N] [--set key=value ...] [--workdir DIR]
# --init fine-tunes from a checkpoint (e.g. a VoxCeleb model) instead of training from scratch.
# data/ and exp/ are made in --workdir (default: this recipe's directory).
set -euo pipefail

stage=0
stop_stage=6
config=conf/xvector_triplet.yaml
init=
ngpu=${NGPU:-}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 4)}
num_average=10
heldout_speakers=200
heldout_trials=20000
top_n=300
overrides=()
recipe=$(cd "$(dirname "$0")" && pwd)
workdir=$recipe
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --init) init=$(realpath "$2"); shift 2 ;;
    --ngpu) ngpu=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --num-average) num_average=$2; shift 2 ;;
    --heldout-speakers) heldout_speakers=$2; shift 2 ;;
    --heldout-trials) heldout_trials=$2; shift 2 ;;
    --top-n) top_n=$2; shift 2 ;;
    --set) overrides+=("$2"); shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

[ -f "$config" ] || config=$recipe/$config  # conf/... names a file of this recipe
config=$(realpath "$config")
mkdir -p "$workdir"
cd "$workdir"
local=$recipe/local
CNC1=${CNC1:-}
CNC2=${CNC2:-}
MUSAN=${MUSAN:-}
RIRS=${RIRS:-}
name=$(basename "$config" .yaml)
exp=exp/$name
# CN-Celeb file names are <genre>-<session>-<utt>: the session (genre-session) is what a layout
# field matches greedily up to the last dash
layout="{speaker}/{session}-{utt}"
command -v speakerverify >/dev/null || { echo "speakerverify is not installed (make install)" >&2; exit 2; }
detect_gpus() {  # only the stages that need it pay for importing torch
  if [ -z "$ngpu" ]; then
    ngpu=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
  fi
  nproc_per_node=$(( ngpu > 0 ? ngpu : 1 ))
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "stage 0: check the corpora"
  python "$local"/check_corpora.py --cnc1 "$CNC1" --cnc2 "$CNC2" --musan "$MUSAN" --rirs "$RIRS"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "stage 1: data dirs: CN-Celeb1 dev speakers, CN-Celeb2, CN-Celeb1 evaluation (enrollment + test)"
  speakerverify prepare dir "$CNC1/data" data/cnc1_dev --layout "$layout" --speakers "$CNC1/dev/dev.lst"
  speakerverify prepare dir "$CNC2/data" data/cnc2 --layout "$layout"
  # evaluation: the enrollment utterances of enroll.map (data/idNNNNN/...) and the test files
  # (eval/test/idNNNNN-<genre>-<session>-<utt>), ids relative to CN-Celeb_flac/
  awk '{ sub(/-enroll$/, "", $1); print $1 }' "$CNC1/eval/lists/enroll.lst" > data/eval_speakers.lst
  speakerverify prepare dir "$CNC1" data/eval --skip-unmatched --speakers data/eval_speakers.lst \
    --pattern '^(data/|eval/test/)(?P<speaker>id[0-9]+)[-/](?P<session>[^/]+)-[^-/]+$'
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "stage 2: train = CN-Celeb1 dev + CN-Celeb2 minus $heldout_speakers held-out speakers; the official lists; noise indexes"
  speakerverify prepare split data/cnc1_dev data/cnc2 --hold-out-speakers "$heldout_speakers" \
    --train-out data/train --heldout-out data/heldout
  speakerverify prepare trials data/heldout data/heldout/trials.txt \
    --num-targets $(( heldout_trials / 2 )) --num-nontargets $(( heldout_trials / 2 ))
  # trials.lst ("id00800-enroll test/id00800-singing-01-005.wav 1") and enroll.map
  # ("id00800-enroll id00800/speech-01-001.wav ...") in the ids of data/eval, Kaldi format
  awk '{ t = $2; sub(/\.[^.\/]*$/, "", t); print $1, "eval/" t, ($3 == 1 ? "target" : "nontarget") }' \
    "$CNC1/eval/lists/trials.lst" > data/eval/trials.txt
  awk '{ printf "%s", $1; for (i = 2; i <= NF; i++) { u = $i; sub(/\.[^.\/]*$/, "", u); printf " data/%s", u }; print "" }' \
    "$CNC1/eval/lists/enroll.map" > data/eval/enroll.map
  [ -z "$MUSAN" ] || speakerverify prepare musan "$MUSAN" data/musan.txt
  [ -z "$RIRS" ] || speakerverify prepare rirs "$RIRS" data/rirs.txt
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  detect_gpus
  echo "stage 3: train $config on $nproc_per_node process(es) -> $exp${init:+ (fine-tuning $init)}"
  sets=(data.train_dir=data/train)
  [ -z "$MUSAN" ] || sets+=(data.musan_index=data/musan.txt)
  [ -z "$RIRS" ] || sets+=(data.rir_index=data/rirs.txt)
  [ "$ngpu" -gt 0 ] || sets+=(train.device=cpu)
  start=()
  [ -z "$init" ] || start=(--init "$init")
  ls "$exp"/checkpoints/epoch_*.pt >/dev/null 2>&1 && start=(--resume)
  torchrun --standalone --nproc_per_node "$nproc_per_node" "$(command -v speakerverify)" \
    train "$config" --exp-dir "$exp" "${start[@]}" --set "${sets[@]}" "${overrides[@]}"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  echo "stage 4: average the last $num_average checkpoints; embed the evaluation set, the training set (mean, cohort), held-out"
  detect_gpus
  mapfile -t last < <(ls "$exp"/checkpoints/epoch_*.pt | grep -v _step_ | sort | tail -n "$num_average")
  speakerverify average "${last[@]}" --out "$exp/avg.pt"
  device=cpu
  [ "$ngpu" -gt 0 ] && device=cuda
  for set in eval train heldout; do
    speakerverify embed --model "$exp/avg.pt" --device "$device" --jobs "$jobs" \
      "data/$set" "$exp/embeddings/$set"
  done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  echo "stage 5: score CN-Celeb1 eval (models averaged over enroll.map; cosine, mean subtraction, AS-Norm top $top_n); calibrate on held-out speakers"
  emb=$exp/embeddings
  mkdir -p "$exp/scores"
  score=(speakerverify score data/eval/trials.txt "$emb/eval" --enroll data/eval/enroll.map)
  "${score[@]}" --out "$exp/scores/cnc1_eval.cosine.txt"
  "${score[@]}" --mean-store "$emb/train" --out "$exp/scores/cnc1_eval.mean.txt"
  "${score[@]}" --mean-store "$emb/train" --cohort-store "$emb/train" --norm asnorm \
    --top-n "$top_n" --out "$exp/scores/cnc1_eval.asnorm.txt"
  speakerverify score data/heldout/trials.txt "$emb/heldout" --out "$exp/scores/heldout.cosine.txt"
  speakerverify calibrate data/heldout/trials.txt "$exp/scores/heldout.cosine.txt" \
    --model "$exp/avg.pt" --out "$exp/avg.calibration.json"
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  echo "stage 6: report (EER, minDCF 0.01 / 0.05) and DET plots"
  for backend in cosine mean asnorm; do
    speakerverify evaluate data/eval/trials.txt "$exp/scores/cnc1_eval.$backend.txt" --json \
      --plot "$exp/plots/cnc1_eval.$backend" > "$exp/scores/cnc1_eval.$backend.json"
  done
  python "$local"/report.py "$exp" > "$exp/results.md"
  cat "$exp/results.md"
  echo "DET plots: $exp/plots/cnc1_eval.<backend>/det.png"
fi
