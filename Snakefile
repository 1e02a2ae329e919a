# asrflow: speech dataset -> trained CTC recognizer -> reports/<dataset>_wer.md
#
#   snakemake -j 8 reports/synth_wer.md          # embedded default corpus (offline)
#   snakemake -j 8 reports/librispeech_wer.md    # LibriSpeech from the mirrors in params.yaml
#   snakemake --report reports/synth_report.html # Snakemake's HTML report of a finished run
#
# Inputs, outputs and commands come from src/asrflow/pipeline/definition.py, the same definition
# dvc.yaml is generated from, so the two orchestrators run identical commands. What lives
# here is what only Snakemake has: logs, benchmarks, threads and resources, set in one
# loop over the stages.

import os
import uuid

from snakemake.exceptions import WorkflowError

from asrflow.pipeline import definition as P
from asrflow.pipeline.config import ParamsError, validate_params

configfile: "params.yaml"
try:  # the schema (src/asrflow/pipeline/params.schema.yaml) and what it cannot express, before any job runs
    validate_params(config)
except ParamsError as e:  # one line naming the key and what is allowed
    raise WorkflowError(str(e)) from None
# Every stage reads params.yaml itself (the same command runs under DVC), so a value given with
# --config or --configfile would change what Snakemake plans but not what the stages compute:
# refused, naming the keys, rather than accepted and ignored.
_overridden = P.overridden_keys(config, "params.yaml")
if _overridden:
    raise WorkflowError(f"--config/--configfile change {', '.join(_overridden)}, but every stage reads params.yaml "
                        "from disk, so the change would be planned and not applied: edit params.yaml instead "
                        "(or try it as a DVC experiment: dvc exp run -S key=value)")

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


# One rule per stage, generated from the definition, so none can lose its log, benchmark,
# threads or resources. Only values fixed here may use `_stage` (the shell line is evaluated
# when the job runs: see P.SMK_SHELL).
for _stage in P.STAGES:
    rule:
        name: _stage.name
        input: P.smk_inputs(_stage.name)
        output: P.smk_outputs(_stage.name, directory, report, REPORT)
        params: values=P.smk_params(_stage.name, config), template=P.smk_template(_stage.name)
        conda: "envs/asrflow.yaml"
        log: _stage.log
        benchmark: f"benchmarks/{{dataset}}/{_stage.name}.tsv"
        threads: ALL_CORES if _stage.all_cores else 1
        resources: **_stage.resources, **P.smk_resources(_stage.name, config)
        shell: P.SMK_SHELL


onsuccess:
    # Record what Snakemake built in dvc.lock, so `dvc status` agrees nothing is stale.
    committed = P.dvc_commit(config)
    if committed:
        print(f"committed to DVC: {', '.join(committed)}")
