"""``python -m asrflow.pipeline > dvc.yaml``: print the generated dvc.yaml."""

import sys

from asrflow.pipeline.definition import render_dvc_yaml

sys.stdout.write(render_dvc_yaml())
