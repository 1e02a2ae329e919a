#!/usr/bin/env bash
# A stand-in for sbatch: submit.sh [--option=value ...] JOBSCRIPT
# Starts JOBSCRIPT in the background, records what was asked for, prints a job id.
set -euo pipefail
script="${*: -1}"
queue=.snakemake/local-cluster
mkdir -p "$queue"
id="job-$(date +%s%N)-$$"
printf '%s %s\n' "$id" "${*:1:$#-1}" >> "$queue/submitted.txt"
nohup bash -c 'bash "$1" > "$2.log" 2>&1; echo $? > "$2.exit"' _ "$script" "$queue/$id" </dev/null >/dev/null 2>&1 &
echo "$id"
