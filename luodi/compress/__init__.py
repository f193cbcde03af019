"""`luodi compress`: a smaller model from a larger one, as an ordinary Hugging Face folder.

Structured pruning (whole blocks, KV groups, MLP channels, hidden width; luodi/compress/prune_*.py) ranked
by what each unit does on calibration text (importance.py), sized to a parameter or byte target (plan.py),
then distillation from the original model (distill.py) with checkpoints to resume from (checkpoint.py),
evaluated on held-out text before and after (quality.py); compression.json records all of it (record.py).
pipeline.compress_model runs the sequence; cli.py is the subcommand. Nothing here is imported by the
torch-free runtime path except record.py (through luodi.outputs).
"""
