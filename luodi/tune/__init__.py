"""`luodi tune`: export candidate configurations of a model (target, precision, quantization method, OpenVINO
inference precision, threads, speculative decoding), measure quality against fp32 and speed on this machine, and
keep the fastest within a quality budget (docs/TUNE.md). candidates.py reads the plan (configs/tune.yaml),
measure.py measures through luodi's export, eval and bench code, state.py makes a run resumable, choose.py
picks, report.py and plot.py write the report and the chart, pipeline.py runs it all, cli.py is the command."""

from .candidates import load_plan
from .pipeline import run_tune

__all__ = ["load_plan", "run_tune"]
