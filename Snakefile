# asrflow: speech dataset -> trained CTC recognizer -> reports/<dataset>_wer.md
#
#   snakemake -j 8 reports/synth_wer.md          # embedded default corpus (offline)
#   snakemake -j 8 reports/librispeech_wer.md    # LibriSpeech from the mirrors in params.yaml
#   snakemake --report reports/synth_report.html # Snakemake's HTML report of a finished run
#
# Inputs, outputs and commands come from src/asrflow/pipeline/definition.py, the same definition
# dvc.yaml is generated from, so the two orchestrators run identical commands. What lives
# here is what only Snakemake has: logs, benchmarks, threads and resources.

import os
import uuid

from snakemake.exceptions import WorkflowError

from asrflow.pipeline import definition as P
from asrflow.pipeline.config import ParamsError, validate_params

configfile: "params.yaml"
try:  # the schema (src/asrflow/params.schema.yaml) and what it cannot express, before any job runs
    validate_params(config)
except ParamsError as e:  # one line naming the key and what is allowed
    raise WorkflowError(str(e)) from None

# "As many cores as the run was given": Snakemake caps a rule's threads at --cores. (Not
# workflow.cores, which is unset under --report, --dag and friends.)
ALL_CORES = os.cpu_count()

# Every stage of this invocation tags its MLflow run with the same id. Set here, in the main
# process, it reaches every job through the environment (cluster jobs too: their job scripts
# re-read this file and keep it).
if not os.environ.get("ASRFLOW_INVOCATION"):
    os.environ["ASRFLOW_INVOCATION"] = f"snakemake-{uuid.uuid4().hex[:12]}"

wildcard_constraints:
    dataset="|".join(config["datasets"]),

# `snakemake --report reports/<dataset>_report.html`: the workflow description, then the
# outputs below by category, each with its caption (RST under docs/report/).
report: "docs/report/workflow.rst"

REPORT = {
    "reports/{dataset}_wer.md": ("Benchmark report", "docs/report/wer_md.rst"),
    "reports/{dataset}_wer_surface.png": ("Decoder tuning", "docs/report/surface.rst"),
    "plots/{dataset}/tune_grid.csv": ("Decoder tuning", "docs/report/tune_grid.rst"),
    "reports/{dataset}_wer_curve.png": ("Training", "docs/report/curve.rst"),
    "plots/{dataset}/learning_curve.csv": ("Training", "docs/report/learning_curve.rst"),
    "reports/{dataset}_wer_duration.png": ("Evaluation", "docs/report/duration.rst"),
    "plots/{dataset}/wer_by_duration.csv": ("Evaluation", "docs/report/wer_by_duration.rst"),
    "metrics/{dataset}/evaluate.json": ("Evaluation", "docs/report/evaluate_json.rst"),
}



rule all:
    input:
        f"reports/{config['dataset']}_wer.md",


rule download:
    input: P.smk_inputs("download")
    output: P.smk_outputs("download", directory, report, REPORT)
    params: values=P.smk_params("download", config)
    conda: "envs/asrflow.yaml"
    log: "logs/{dataset}/download.log"
    benchmark: "benchmarks/{dataset}/download.tsv"
    threads: ALL_CORES  # synth: espeak-ng processes on every core
    resources: net=1, **P.smk_resources("download", config)  # net: one download at a time per host
    shell: P.smk_shell("download") + " 2>&1 | tee {log}"


rule manifest:
    input: P.smk_inputs("manifest")
    output: P.smk_outputs("manifest", directory, report, REPORT)
    params: values=P.smk_params("manifest", config)
    conda: "envs/asrflow.yaml"
    log: "logs/{dataset}/manifest.log"
    resources: **P.smk_resources("manifest", config)
    benchmark: "benchmarks/{dataset}/manifest.tsv"
    threads: ALL_CORES  # extraction, then header probes on every core
    shell: P.smk_shell("manifest") + " 2>&1 | tee {log}"


rule stats:
    input: P.smk_inputs("stats")
    output: P.smk_outputs("stats", directory, report, REPORT)
    params: values=P.smk_params("stats", config)
    conda: "envs/asrflow.yaml"
    log: "logs/{dataset}/stats.log"
    resources: **P.smk_resources("stats", config)
    shell: P.smk_shell("stats") + " 2>&1 | tee {log}"


rule vocab:
    input: P.smk_inputs("vocab")
    output: P.smk_outputs("vocab", directory, report, REPORT)
    params: values=P.smk_params("vocab", config)
    conda: "envs/asrflow.yaml"
    log: "logs/{dataset}/vocab.log"
    resources: **P.smk_resources("vocab", config)
    shell: P.smk_shell("vocab") + " 2>&1 | tee {log}"


rule lm:
    input: P.smk_inputs("lm")
    output: P.smk_outputs("lm", directory, report, REPORT)
    params: values=P.smk_params("lm", config)
    conda: "envs/asrflow.yaml"
    log: "logs/{dataset}/lm.log"
    resources: **P.smk_resources("lm", config)
    benchmark: "benchmarks/{dataset}/lm.tsv"
    shell: P.smk_shell("lm") + " 2>&1 | tee {log}"


rule train:
    input: P.smk_inputs("train")
    output: P.smk_outputs("train", directory, report, REPORT)
    params: values=P.smk_params("train", config)
    conda: "envs/asrflow.yaml"
    log: "logs/{dataset}/train.log"
    benchmark: "benchmarks/{dataset}/train.tsv"
    threads: ALL_CORES  # torch uses every core on CPU
    resources: **P.smk_resources("train", config)  # nodes and GPUs, memory, runtime, partition
    shell: P.smk_shell("train") + " 2>&1 | tee {log}"


rule tune:
    input: P.smk_inputs("tune")
    output: P.smk_outputs("tune", directory, report, REPORT)
    params: values=P.smk_params("tune", config)
    conda: "envs/asrflow.yaml"
    log: "logs/{dataset}/tune.log"
    resources: **P.smk_resources("tune", config)
    benchmark: "benchmarks/{dataset}/tune.tsv"
    threads: ALL_CORES  # one decoder process per core
    shell: P.smk_shell("tune") + " 2>&1 | tee {log}"


rule evaluate:
    input: P.smk_inputs("evaluate")
    output: P.smk_outputs("evaluate", directory, report, REPORT)
    params: values=P.smk_params("evaluate", config)
    conda: "envs/asrflow.yaml"
    log: "logs/{dataset}/evaluate.log"
    resources: **P.smk_resources("evaluate", config)
    benchmark: "benchmarks/{dataset}/evaluate.tsv"
    shell: P.smk_shell("evaluate") + " 2>&1 | tee {log}"


rule register:
    input: P.smk_inputs("register")
    output: P.smk_outputs("register", directory, report, REPORT)
    params: values=P.smk_params("register", config)
    conda: "envs/asrflow.yaml"
    log: "logs/{dataset}/register.log"
    resources: **P.smk_resources("register", config)
    shell: P.smk_shell("register") + " 2>&1 | tee {log}"


rule report:
    input: P.smk_inputs("report")
    output: P.smk_outputs("report", directory, report, REPORT)
    params: values=P.smk_params("report", config)
    conda: "envs/asrflow.yaml"
    log: "logs/{dataset}/report.log"
    resources: **P.smk_resources("report", config)
    shell: P.smk_shell("report") + " 2>&1 | tee {log}"


onsuccess:
    # Record what Snakemake built in dvc.lock, so `dvc status` agrees nothing is stale.
    committed = P.dvc_commit(config)
    if committed:
        print(f"committed to DVC: {', '.join(committed)}")
