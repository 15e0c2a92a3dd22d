#!/bin/sh
# Run a training command until it finishes, resuming from the last epoch checkpoint whenever
# the process dies (OOM killer, a restarted container, an interrupted shared session...).
#   nohup training/run_resumable.sh .venv-train/bin/python -m training.train ARGS... > training/runs/NAME.log 2>&1 &
# ARGS must not contain --resume (it is added from the second attempt on).
tries=0
while :; do
  if [ "$tries" -eq 0 ]; then "$@"; else "$@" --resume; fi
  status=$?
  [ "$status" -eq 0 ] && exit 0
  tries=$((tries + 1))
  if [ "$tries" -ge 20 ]; then echo "giving up after $tries attempts"; exit 1; fi
  echo "training exited with status $status; resuming (attempt $tries)"
  sleep 5
done
