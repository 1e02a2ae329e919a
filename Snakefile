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
import sys
import time
import uuid

from snakemake.exceptions import WorkflowError
from snakemake.io import IOFile

from asrflow.pipeline import definition as P
from asrflow.pipeline.config import ParamsError, validate_params
from asrflow.pipeline.provenance import survey

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

# An output the other orchestrator made (or a checkout brought back) is, to Snakemake, a file with
# a newer date, and when Snakemake has no record of it (or an old one that still matches
# params.yaml) nothing triggers a re-run. Every stage stamps its run into its lineage record
# (params values, code, products: src/asrflow/pipeline/provenance.py). A rule whose products
# its stamp does not vouch for is forced to run again, and says why (products with no stamp at
# all are only named). Where the stamp vouches for the products on disk but Snakemake's own
# record of them holds other params values, that record is of an older run (DVC made these, or
# restored them from its run cache) and is dropped, so it cannot re-run them. Snakemake sets its
# DAG settings and opens its records after it reads this file, so both are done where it
# prepares the DAG (an internal method of the pinned Snakemake; a Snakemake without it gets
# the reasons and the --forcerun to add, printed).
if workflow.is_main_process:
    _stale, _vouched = survey(config)
    for _s in _stale:
        print(f"asrflow: running {_s.stage} again: {_s}" if _s.stamped else
              f"asrflow: {_s} (Snakemake's own record decides; --forcerun {_s.stage} to be sure)", file=sys.stderr)
    _stale = [_s for _s in _stale if _s.stamped]
    if _stale and not hasattr(workflow, "_prepare_dag"):
        print("asrflow: this Snakemake cannot be told to re-run them: add --forcerun "
              f"{' '.join(sorted({_s.stage for _s in _stale}))}", file=sys.stderr)
    if hasattr(workflow, "_prepare_dag"):
        _prepare_dag = workflow._prepare_dag

        def _prepare_dag_with_provenance(*args, _force=frozenset(_s.stage for _s in _stale), **kwargs):
            settings = workflow.dag_settings
            settings.forcerun = frozenset(settings.forcerun) | _force
            result = _prepare_dag(*args, **kwargs)
            for name, dataset, paths in _vouched:
                current = repr(P.smk_params(name, config, dataset))  # as Snakemake records the rule's params
                for path in paths:
                    record = workflow.persistence.metadata(IOFile(path))
                    if record is not None and record.params and current not in record.params:
                        workflow.persistence.cleanup_metadata(IOFile(path))
            return result

        workflow._prepare_dag = _prepare_dag_with_provenance

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
        params: values=P.smk_values(_stage.name, config), template=P.smk_template(_stage.name)
        conda: "envs/asrflow.yaml"
        log: _stage.log
        benchmark: f"benchmarks/{{dataset}}/{_stage.name}.tsv"
        threads: ALL_CORES if _stage.all_cores else 1
        resources: **_stage.resources, **P.smk_resources(_stage.name, config)
        shell: P.SMK_SHELL


_STARTED = time.time()

onerror:
    # A Slurm job stopped at its time limit says so only in its own log: name the knob.
    for _name, _minutes in P.timed_out_jobs(config, _STARTED):
        print(f"asrflow: Slurm stopped the {_name} job at its time limit ({_minutes} min): raise "
              f"cluster.{_name}.runtime in params.yaml (minutes; a stage's entry overrides cluster.default)",
              file=sys.stderr)


onsuccess:
    # Record what Snakemake built in dvc.lock, so `dvc status` agrees nothing is stale.
    committed = P.dvc_commit(config)
    if committed:
        print(f"committed to DVC: {', '.join(committed)}")
