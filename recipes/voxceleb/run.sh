#!/usr/bin/env bash
# VoxCeleb recipe: train on VoxCeleb2 dev (5,994 speakers) with triplet loss and online mining,
# evaluate on the cleaned Vox1-O / Vox1-E / Vox1-H lists with cosine, mean subtraction and
# AS-Norm, calibrate on held-out training speakers, report EER / minDCF and DET plots.
#
# Corpora (nothing is downloaded; stage 0 says what is missing and where to get it):
#   VOX1=/path/to/voxceleb1   holds wav/idNNNNN/... (dev + test) and the trial lists
#                             veri_test2.txt, list_test_all2.txt, list_test_hard2.txt
#                             (or set VOX1_O, VOX1_E, VOX1_H to the list files)
#   VOX2=/path/to/voxceleb2   holds dev/aac/idNNNNN/... (m4a) or dev/wav/... (converted)
#   MUSAN=/path/to/musan      optional: music/ speech/ noise/
#   RIRS=/path/to/RIRS_NOISES optional: simulated_rirs/
#
#   VOX1=... VOX2=... MUSAN=... RIRS=... bash run.sh [--stage N] [--stop-stage M]
#       [--config conf/xvector_triplet.yaml] [--train-set vox2|vox2+vox1] [--ngpu N]
#       [--jobs N] [--valid heldout|vox1_o|none] [--valid-trials N] [--set key=value ...]
#       [--workdir DIR]
# data/ and exp/ are made in --workdir (default: this recipe's directory).
# --valid: the trial list whose EER is logged after every epoch (and picks best.pt): heldout
# (default; --valid-trials 2,000 trials of the held-out training speakers) or vox1_o (the test
# list itself, so best.pt is then chosen on the test list; stage 4 averages epochs regardless).
set -euo pipefail

stage=0
stop_stage=6
config=conf/xvector_triplet.yaml
train_set=vox2
ngpu=${NGPU:-}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 4)}
num_average=10
heldout_speakers=200
heldout_trials=20000
valid=heldout
valid_trials=2000
top_n=300
overrides=()
recipe=$(cd "$(dirname "$0")" && pwd)
workdir=$recipe
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --train-set) train_set=$2; shift 2 ;;
    --ngpu) ngpu=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --num-average) num_average=$2; shift 2 ;;
    --heldout-speakers) heldout_speakers=$2; shift 2 ;;
    --heldout-trials) heldout_trials=$2; shift 2 ;;
    --valid) valid=$2; shift 2 ;;
    --valid-trials) valid_trials=$2; shift 2 ;;
    --top-n) top_n=$2; shift 2 ;;
    --set) overrides+=("$2"); shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$train_set" in vox2|vox2+vox1) ;; *) echo "--train-set: vox2 or vox2+vox1" >&2; exit 2 ;; esac
case "$valid" in heldout|vox1_o|none) ;; *) echo "--valid: heldout, vox1_o or none" >&2; exit 2 ;; esac

[ -f "$config" ] || config=$recipe/$config  # conf/... names a file of this recipe
config=$(realpath "$config")
mkdir -p "$workdir"
cd "$workdir"
local=$recipe/local
VOX1=${VOX1:-}
VOX2=${VOX2:-}
MUSAN=${MUSAN:-}
RIRS=${RIRS:-}
VOX1_O=${VOX1_O:-$VOX1/veri_test2.txt}
VOX1_E=${VOX1_E:-$VOX1/list_test_all2.txt}
VOX1_H=${VOX1_H:-$VOX1/list_test_hard2.txt}
VOX2_WAV=${VOX2_WAV:-data/vox2_wav}
name=$(basename "$config" .yaml)
exp=exp/$name
# with VoxCeleb1 dev in training only Vox1-O (test speakers id10270-id10309) stays unseen
lists="vox1_o vox1_e vox1_h"
[ "$train_set" = vox2 ] || lists="vox1_o"
list_file() { case "$1" in vox1_o) echo "$VOX1_O" ;; vox1_e) echo "$VOX1_E" ;; vox1_h) echo "$VOX1_H" ;; esac; }
command -v speakerverify >/dev/null || { echo "speakerverify is not installed (make install)" >&2; exit 2; }
detect_gpus() {  # only the stages that need it pay for importing torch
  if [ -z "$ngpu" ]; then
    ngpu=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
  fi
  nproc_per_node=$(( ngpu > 0 ? ngpu : 1 ))
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "stage 0: check the corpora"
  python "$local"/check_corpora.py --vox1 "$VOX1" --vox2 "$VOX2" --musan "$MUSAN" --rirs "$RIRS" \
    --lists "$VOX1_O" "$VOX1_E" "$VOX1_H"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "stage 1: VoxCeleb2 dev m4a -> 16 kHz wav in $VOX2_WAV/dev/wav (resumable)"
  if [ -d "$VOX2/dev/wav" ]; then
    echo "$VOX2/dev/wav exists: using it as it is"
  else
    speakerverify prepare convert-m4a "$VOX2/dev/aac" "$VOX2_WAV/dev/wav" --jobs "$jobs"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "stage 2: data dirs (train = $train_set minus $heldout_speakers held-out speakers), trial lists, noise indexes"
  vox2_wav=$VOX2_WAV/dev/wav  # the wav tree itself: an m4a tree next to it is not scanned
  [ -d "$VOX2/dev/wav" ] && vox2_wav=$VOX2/dev/wav
  speakerverify prepare voxceleb "$vox2_wav" data/vox2_dev
  speakerverify prepare voxceleb "$VOX1" data/vox1
  extra=()
  if [ "$train_set" = vox2+vox1 ]; then
    speakerverify prepare voxceleb "$VOX1" data/vox1_dev --split dev
    extra=(data/vox1_dev)
  fi
  # calibration needs speakers the encoder never saw, from the training domain
  speakerverify prepare split data/vox2_dev "${extra[@]}" --hold-out-speakers "$heldout_speakers" \
    --train-out data/train --heldout-out data/heldout
  speakerverify prepare trials data/heldout data/heldout/trials.txt \
    --num-targets $(( heldout_trials / 2 )) --num-nontargets $(( heldout_trials / 2 ))
  # a small list for the per-epoch validation EER: rank 0 embeds its files after every epoch
  speakerverify prepare trials data/heldout data/heldout/valid_trials.txt \
    --num-targets $(( valid_trials / 2 )) --num-nontargets $(( valid_trials / 2 ))
  [ -z "$MUSAN" ] || speakerverify prepare musan "$MUSAN" data/musan.txt
  [ -z "$RIRS" ] || speakerverify prepare rirs "$RIRS" data/rirs.txt
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  detect_gpus
  echo "stage 3: train $config on $nproc_per_node process(es) -> $exp"
  sets=(data.train_dir=data/train)
  [ -z "$MUSAN" ] || sets+=(data.musan_index=data/musan.txt)
  [ -z "$RIRS" ] || sets+=(data.rir_index=data/rirs.txt)
  [ "$ngpu" -gt 0 ] || sets+=(train.device=cpu)
  case "$valid" in
    heldout) sets+=(data.valid_dir=data/heldout data.valid_trials=data/heldout/valid_trials.txt) ;;
    vox1_o) sets+=(data.valid_dir=data/vox1 "data.valid_trials=$VOX1_O") ;;
  esac
  resume=()
  ls "$exp"/checkpoints/epoch_*.pt >/dev/null 2>&1 && resume=(--resume)
  torchrun --standalone --nproc_per_node "$nproc_per_node" "$(command -v speakerverify)" \
    train "$config" --exp-dir "$exp" "${resume[@]}" --set "${sets[@]}" "${overrides[@]}"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  echo "stage 4: average the last $num_average checkpoints; embed Vox1, the training set (mean, cohort), held-out"
  detect_gpus
  mapfile -t last < <(ls "$exp"/checkpoints/epoch_*.pt | grep -v _step_ | sort | tail -n "$num_average")
  speakerverify average "${last[@]}" --out "$exp/avg.pt"
  # one extraction job per visible GPU (`--device cuda`), never several CUDA contexts on one
  # GPU; without GPUs, $jobs CPU processes
  parallel=(--device cpu --jobs "$jobs")
  [ "$ngpu" -gt 0 ] && parallel=(--device cuda)
  for set in vox1 train heldout; do
    speakerverify embed --model "$exp/avg.pt" "${parallel[@]}" "data/$set" "$exp/embeddings/$set"
  done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  echo "stage 5: score $lists (cosine, mean subtraction, AS-Norm top $top_n); calibrate on held-out speakers"
  emb=$exp/embeddings
  mkdir -p "$exp/scores"
  for list in $lists; do
    trials=$(list_file "$list")
    speakerverify score "$trials" "$emb/vox1" --out "$exp/scores/$list.cosine.txt"
    speakerverify score "$trials" "$emb/vox1" --mean-store "$emb/train" \
      --out "$exp/scores/$list.mean.txt"
    speakerverify score "$trials" "$emb/vox1" --mean-store "$emb/train" \
      --cohort-store "$emb/train" --norm asnorm --top-n "$top_n" --out "$exp/scores/$list.asnorm.txt"
  done
  speakerverify score data/heldout/trials.txt "$emb/heldout" --out "$exp/scores/heldout.cosine.txt"
  speakerverify calibrate data/heldout/trials.txt "$exp/scores/heldout.cosine.txt" \
    --model "$exp/avg.pt" --out "$exp/avg.calibration.json"
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  echo "stage 6: report (EER, minDCF 0.01 / 0.05) and DET plots"
  for list in $lists; do
    for backend in cosine mean asnorm; do
      speakerverify evaluate "$(list_file "$list")" "$exp/scores/$list.$backend.txt" --json \
        --plot "$exp/plots/$list.$backend" > "$exp/scores/$list.$backend.json"
    done
  done
  python "$local"/report.py "$exp" $lists > "$exp/results.md"
  cat "$exp/results.md"
  echo "DET plots: $exp/plots/<list>.<backend>/det.png"
fi
