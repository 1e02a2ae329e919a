#!/usr/bin/env bash
# A stand-in for sacct: status.sh JOBID -> running | success | failed
exit_file=".snakemake/local-cluster/$1.exit"
if [ ! -f "$exit_file" ]; then echo running
elif [ "$(cat "$exit_file")" = 0 ]; then echo success
else echo failed
fi
