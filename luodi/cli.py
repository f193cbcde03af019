"""The `luodi` command line: export, generate, bench, inspect, eval, bundle, verify, triton, models (and
ceiling, greedy-check from cli_measure.py). Errors print one line and exit non-zero."""

import argparse
import sys
from pathlib import Path

from . import cli_batching, cli_measure
from .bench_plot import plot_if_asked
from .compress import cli as compress_cli
from .tune import cli as tune_cli
from .cli_checks import (OneLineParser, at_least, finite_float, fraction_or_percent, non_negative_int, os_error_line,
                         out_path, png_path, positive_float, positive_int, print_json, thread_count, utf8_text)
from .contract.quantization import DEFAULT_GROUP_SIZE
from .errors import LuodiError, one_line
from .runtimes.openvino import INFERENCE_PRECISIONS
from .runtimes.speculative import MAX_DRAFT_TOKENS


def _add_sampling(p):
    p.add_argument("--max-new-tokens", type=non_negative_int, default=128)
    p.add_argument("--temperature", type=finite_float, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-k", type=non_negative_int, default=0)
    p.add_argument("--top-p", type=finite_float, default=1.0, help="in (0, 1]")
    p.add_argument("--repetition-penalty", type=finite_float, default=1.0, help="> 0")
    p.add_argument("--seed", type=non_negative_int)
    p.add_argument("--stop", type=utf8_text, action="append", default=[], help="stop string (repeatable)")


def _parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="luodi", description="Export decoder-only LLMs and run them fast.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="export a model (folder, .gguf or registry name) for a target")
    p.add_argument("model")
    p.add_argument("--target", default="ort")
    p.add_argument("--out", type=out_path, help="output folder (default build/<model>-<target>)")
    _add_force(p, "export folder")
    p.add_argument("--max-context", type=positive_int, help="max positions (default: the model's own)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8", "int4"],
                   help="weights (default the target's; fp16/int8/int4 as the target config lists them; "
                        "for trt, fp16 is the whole graph's precision)")
    p.add_argument("--passes", help="edit the target's pass list: 'list' shows it; 'a,b' replaces it; "
                                    "'-a,+b' drops a and appends b")
    p.add_argument("--json", action="store_true", help="print the manifest summary as JSON, no progress bars")
    quant = p.add_argument_group("weight quantization (--target ort --precision int4|int8)")
    quant.add_argument("--method", choices=["search", "rtn", "rtn_sym", "minmax", "hqq", "gptq", "awq"],
                       help="default the target config's (int4: search, the fastest recipe within "
                            "--max-quality-loss); minmax: each block's own min and max (float zero point, llama.cpp's "
                            "Q4_1 grid); gptq and awq need --calib")
    quant.add_argument("--max-quality-loss", type=fraction_or_percent, metavar="LOSS",
                       help="int4 search budget: perplexity increase over fp32 on calibration text, 3%% or 0.03 "
                            "(default 3%%)")
    quant.add_argument("--group-size", type=positive_int,
                       help=f"block along the input dimension (default {DEFAULT_GROUP_SIZE}; openvino: configs/targets/openvino.yaml's)")
    quant.add_argument("--calib", type=Path, help="calibration text file (gptq)")
    quant.add_argument("--keep", type=lambda s: tuple(s.split(",")),
                       help="MatMuls kept at int8 in an int4 export: 'lm_head' and/or node names")
    quant.add_argument("--size-budget", type=positive_float, metavar="MB",
                       help="mixed int4/int8: the MatMuls most sensitive on --calib text go to int8 while the "
                            "model files stay within MB")
    quant.add_argument("--accuracy-level", type=int, choices=[0, 1, 2, 3, 4],
                       help="MatMulNBits compute type (0: fp32 activations, 4: int8 activations)")
    trt = p.add_argument_group("TensorRT engine (--target trt)")
    trt.add_argument("--trt-arch", help="compute capability to build for, e.g. sm89 (default: this GPU's, else sm89)")
    trt.add_argument("--trt-workspace-mb", type=positive_int, help="builder workspace limit in MB")
    trt.add_argument("--trt-timing-cache", type=Path, help="timing cache file, read if present and updated")
    trt.add_argument("--max-batch", type=positive_int, default=4, help="largest batch the engine's profiles take")

    p = sub.add_parser("generate", help="generate text with an export folder")
    p.add_argument("model", help="export folder (or, with --backend torch, any model source)")
    p.add_argument("--prompt", type=utf8_text, required=True)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--backend", choices=["ort", "openvino", "tensorrt", "torch"],
                   help="runtime (default the export's; --backend ort runs a trt export's graph on ONNX Runtime)")
    p.add_argument("--device", default="CPU", help="OpenVINO device (CPU, GPU, NPU, ...)")
    _add_inference_precision(p)
    p.add_argument("--providers", type=lambda s: s.split(","),
                   help="ONNX Runtime execution providers, comma-separated: cpu, cuda, tensorrt, nvtensorrtrtx")
    p.add_argument("--threads", type=thread_count)
    p.add_argument("--json", action="store_true", help="print one JSON object: text, token_ids, stats")
    _add_sampling(p)
    _add_speculation(p)
    cli_batching.add_test_time(p)

    p = sub.add_parser("bench", help="time TTFT, decode tokens/s and peak RSS")
    p.add_argument("model")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", type=utf8_text)
    src.add_argument("--prompt-file", type=Path)
    src.add_argument("--prompt-tokens", type=positive_int, help="a synthetic English prompt of N tokens")
    src.add_argument("--workload", type=utf8_text, help="a workload of configs/workloads.yaml (W1, W2: the anchor "
                     "kit's prompts in the model's own tokens; EOS suppressed)")
    src.add_argument("--prompts", type=Path, help="a file of prompts, one per line (with --speculate: per-prompt "
                                                  "speed-ups against plain decoding, measured side by side)")
    p.add_argument("--chat", action="store_true")
    p.add_argument("--new-tokens", type=positive_int, default=128)
    p.add_argument("--ignore-eos", action="store_true", help="suppress EOS so exactly --new-tokens are made")
    p.add_argument("--repeat", type=positive_int, default=5)
    p.add_argument("--threads", type=thread_count, default=2)
    p.add_argument("--backend", choices=["ort", "openvino", "tensorrt", "torch"],
                   help="runtime (default the export's; --backend ort runs a trt export's graph on ONNX Runtime)")
    p.add_argument("--device", default="CPU", help="OpenVINO device (CPU, GPU, NPU, ...)")
    _add_inference_precision(p)
    p.add_argument("--providers", type=lambda s: s.split(","),
                   help="ONNX Runtime execution providers, comma-separated: cpu, cuda, tensorrt, nvtensorrtrtx")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", type=png_path, metavar="FILE.png", help="also chart what was measured (luodi/bench_plot.py)")
    _add_speculation(p)
    cli_batching.add_batching_bench(p)

    p = sub.add_parser("inspect", help="op histogram, pass matches, fused ops, weight, KV and activation bytes")
    p.add_argument("model", type=Path, help="export folder or .onnx file")
    p.add_argument("--step", type=non_negative_int, nargs=3, metavar=("BATCH", "NEW", "PAST"),
                   help="also plan the activations of one step: batch, new tokens per sequence, cached tokens")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("eval", help="perplexity on a text through the export's runtime; agreement with a reference")
    p.add_argument("model", help="export folder")
    p.add_argument("--text", type=Path, required=True, help="evaluation text (any text file)")
    p.add_argument("--reference", help="reference export folder (e.g. the fp32 one) for top-1 agreement")
    p.add_argument("--prompts", type=Path, help="prompts, one per line: identical greedy prefix vs --reference")
    p.add_argument("--window", type=at_least(2), default=512,
                   help="tokens per window (each starts with an empty cache and the tokenizer's BOS, if it adds one)")
    p.add_argument("--max-tokens", type=at_least(2), default=2048, help="read at most this many tokens of the text")
    p.add_argument("--backend", choices=["ort", "openvino", "tensorrt", "torch"])
    p.add_argument("--threads", type=thread_count)
    _add_inference_precision(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("bundle", help="pack an export folder into one deployment artifact for a device")
    p.add_argument("model", type=Path, help="export folder")
    p.add_argument("--out", type=out_path, help="FILE.tar (.tar.gz, .tgz) or a folder (default build/<export>.tar)")
    _add_force(p, "bundle")

    p = sub.add_parser("verify", help="check a bundle: manifest, every checksum, runtime versions, every path")
    p.add_argument("bundle", type=Path, help="bundle archive or folder (an export folder also works)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("triton", help="write a Triton Inference Server model repository for a bundle")
    p.add_argument("bundle", type=Path)
    p.add_argument("--out", type=out_path, required=True, help="repository folder (other models in it are left alone)")
    _add_force(p, "Triton model of the same name")
    p.add_argument("--name", help="model name (default <model>-<backend>)")
    p.add_argument("--threads", type=thread_count, help="threads per model instance (default the runtime's)")
    p.add_argument("--instances", type=positive_int, default=1, help="model instances (each loads the bundle once)")

    sub.add_parser("models", help="list the named models in configs/models/")
    cli_measure.add_parsers(sub)
    cli_batching.add_parsers(sub)
    compress_cli.add_parser(sub)
    tune_cli.add_parser(sub)
    return ap


def _cmd_export(args) -> int:
    from .contract.schema import to_json
    from .exporters import export_model
    from .exporters.tensorrt_engine import EngineOptions, describe_engine
    from .manifest import read_manifest
    from .passes import PASSES
    from .targets import get_target

    if args.passes == "list":
        print(f"target {args.target}: {', '.join(get_target(args.target).passes)}")
        for name, cls in PASSES.items():
            print(f"  {name:18} {cls.description}")
        return 0
    overrides = {"method": args.method, "group_size": args.group_size, "accuracy_level": args.accuracy_level,
                 "keep": args.keep, "size_budget_mb": args.size_budget, "max_quality_loss": args.max_quality_loss}
    quantization = {k: v for k, v in overrides.items() if v is not None}
    if args.calib:
        quantization["calibration"] = _calibration_ids(args.model, args.calib)
    engine = EngineOptions(arch=args.trt_arch, workspace_mb=args.trt_workspace_mb, timing_cache=args.trt_timing_cache,
                           max_batch=args.max_batch)
    out = export_model(args.model, target=args.target, out=args.out, max_context=args.max_context,
                       progress=not args.json, passes=args.passes, precision=args.precision, engine=engine,
                       quantization=quantization or None, force=args.force)
    manifest = read_manifest(out)
    summary = {"out": str(out), "target": manifest.target, "max_context": manifest.max_context,
               "parity": manifest.parity, "bytes": manifest.total_bytes}
    if manifest.tensorrt:
        summary["tensorrt"] = {k: v for k, v in to_json(manifest.tensorrt).items() if k != "profiles" and v is not None}
    parity = manifest.parity
    checked = parity.get("unavailable") or (f"max |logit diff| vs transformers {parity['max_abs_diff']:.2e} "
                                            f"under {parity.get('backend', manifest.backend)}")
    print_json(summary) if args.json else print(f"exported {args.model} -> {out} ({summary['bytes'] / 1e6:.1f} MB; "
                                                f"{checked})")
    if manifest.tensorrt and not args.json:
        print(describe_engine(manifest.tensorrt, manifest.max_context))
    return 0


def _calibration_ids(model: str, path: Path) -> tuple:
    """Token ids of a calibration text, with the model's own tokenizer, in calibration windows."""
    from .evaluate import read_text
    from .loaders import resolve
    from .quantization.calibration import calibration_ids
    from .tokenizer import Tokenizer

    return calibration_ids(Tokenizer(resolve(model).hf_dir), read_text(path))


def _cmd_eval(args) -> int:
    import luodi

    from .evaluate import evaluate_text, greedy_prefix, read_text, text_ids
    from .inputs import read_prompts

    lm = luodi.load(args.model, backend=args.backend, threads=args.threads,
                    inference_precision=args.inference_precision)
    reference = luodi.load(args.reference, backend=args.backend, threads=args.threads) if args.reference else None
    if args.prompts and reference is None:
        raise LuodiError("--prompts compares greedy tokens with --reference; give one")
    ids, opening = text_ids(lm.tokenizer, read_text(args.text))
    report = evaluate_text(lm, ids, args.window, args.max_tokens, reference, opening)
    if args.prompts:
        report |= greedy_prefix(lm, reference, read_prompts(args.prompts))
    report["model"] = str(args.model)
    if args.json:
        print_json(report)
        return 0
    line = f"{args.model}: perplexity {report['perplexity']:.3f} over {report['tokens_scored']} tokens " \
           f"({report['windows']} windows of <= {report['window']})"
    if reference is not None:
        line += f"; top-1 agreement with {args.reference} {report['top1_agreement']:.1%}"
    if args.prompts:
        line += f"; identical greedy prefix {report['identical_greedy_prefix']} of {report['max_new_tokens']}"
    print(line)
    return 0


def _add_force(p, what: str) -> None:
    p.add_argument("--force", action="store_true", help=f"replace an earlier luodi {what} there (nothing else)")


def _add_inference_precision(p) -> None:
    p.add_argument("--inference-precision", choices=INFERENCE_PRECISIONS, default="f32",
                   help="what OpenVINO computes in (bf16/f16 where the CPU has them: faster, not fp32-faithful)")


def _add_speculation(p) -> None:
    group = p.add_argument_group("speculative decoding (output identical to plain decoding)")
    group.add_argument("--speculate", metavar="lookup|DRAFT_DIR|lookup,DRAFT_DIR",
                       help="draft with prompt lookup, with another export of the model (e.g. its int4 export), or "
                            "with both (the draft model, and lookup matches for free where they pay more)")
    group.add_argument("--draft-tokens", type=positive_int, metavar="K",
                       help=f"most drafts verified per step, 1..{MAX_DRAFT_TOKENS} (default {MAX_DRAFT_TOKENS}; "
                            "adapted to how often drafts land)")


def _speculate(args):
    """generate's `speculate` value for --speculate: "lookup", the draft export loaded like the target, or
    ("lookup", that draft) for lookup,DRAFT_DIR."""
    import luodi

    if args.speculate in (None, "lookup"):
        return args.speculate
    with_lookup = args.speculate.startswith("lookup,")
    path = args.speculate.removeprefix("lookup,") if with_lookup else args.speculate
    draft = luodi.load(path, threads=args.threads, device=getattr(args, "device", "CPU"),
                       inference_precision=getattr(args, "inference_precision", "f32"))
    return ("lookup", draft) if with_lookup else draft


def _sampling_kwargs(args) -> dict:
    return {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
            "top_p": args.top_p, "repetition_penalty": args.repetition_penalty, "seed": args.seed,
            "stop_strings": args.stop}


def _cmd_generate(args) -> int:
    import luodi

    lm = luodi.load(args.model, backend=args.backend, threads=args.threads, device=args.device,
                    providers=args.providers, inference_precision=args.inference_precision)
    prompt = [{"role": "user", "content": args.prompt}] if args.chat else args.prompt
    kwargs = _sampling_kwargs(args) | {"speculate": _speculate(args), "draft_tokens": args.draft_tokens}
    if (done := cli_batching.generate_test_time(args, lm, prompt, kwargs)) is not None:
        return done
    if args.json:
        result = lm.generate([prompt] if args.chat else prompt, **kwargs)
        result = result[0] if isinstance(result, list) else result
        print_json(result.to_dict())
        return 0
    stream = lm.stream(prompt, **kwargs)
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    print()
    stats = stream.result.stats
    drafts = (f"; drafts accepted {stats.accepted}/{stats.drafted}, {stats.forwards_per_token:.2f} forwards per token"
              if args.speculate else "")
    print(f"[{stats.new_tokens} tokens; TTFT {stats.ttft_s * 1e3:.1f} ms; "
          f"decode {stats.decode_tokens_per_s:.1f} tokens/s{drafts}]", file=sys.stderr)
    return 0


def _cmd_bench(args) -> int:
    import luodi

    from .bench import bench_prompts, format_speculative, run_bench, run_speculative_bench, timed_load

    lm, load_s = timed_load(lambda: luodi.load(args.model, backend=args.backend, threads=args.threads,
                                               device=args.device, providers=args.providers,
                                               inference_precision=args.inference_precision))
    prompts, new_tokens = bench_prompts(args, lm.tokenizer, lm.backend.max_context)
    ignore_eos = args.ignore_eos or bool(args.workload)
    if args.concurrency or args.n or args.kv_pool_positions:
        reports = cli_batching.bench_batching(args, lm, prompts, new_tokens, ignore_eos)
        return plot_if_asked(args, "concurrency" if args.concurrency else "n", reports)
    if args.speculate:
        report = run_speculative_bench(lm, prompts, new_tokens, args.repeat, _speculate(args), args.draft_tokens,
                                       ignore_eos)
        report |= {"model": str(args.model), "speculate": args.speculate, "threads": args.threads}
        print_json(report) if args.json else print(format_speculative(report))
        return plot_if_asked(args, "speculative", [report])
    reports = []
    for ids in prompts:
        report = run_bench(lm, ids, new_tokens, args.repeat, ignore_eos=ignore_eos)
        report |= {"model": str(args.model), "load_s": load_s, "threads": args.threads}
        reports.append(report)
        if args.json:
            print_json(report)
        else:
            runtime = " ".join(filter(None, (report["backend"], report["inference_precision"])))
            print(f"{args.model} [{runtime}, {args.threads} threads]: prompt {report['prompt_tokens']} "
                  f"tokens, {report['new_tokens']} new; TTFT {report['ttft_s'] * 1e3:.1f} ms; decode "
                  f"{report['decode_tokens_per_s']:.1f} tokens/s; peak RSS {report['peak_rss_mb']:.0f} MB "
                  f"(medians of {args.repeat} after a warm-up; load {load_s:.2f} s)")
    return plot_if_asked(args, "plain", reports)


def _cmd_inspect(args) -> int:
    from .inspect import format_report, inspect_model

    report = inspect_model(args.model, tuple(args.step) if args.step else None)
    print_json(report) if args.json else print(format_report(report))
    return 0


def _cmd_bundle(args) -> int:
    from .bundles import make_bundle

    out = args.out or Path("build") / f"{args.model.resolve().name}.tar"
    make_bundle(args.model, out, force=args.force)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.is_dir() else out.stat().st_size
    print(f"bundled {args.model} -> {out} ({size / 1e6:.1f} MB); on the device: luodi verify {out.name}")
    return 0


def _cmd_verify(args) -> int:
    from .bundles import verify_bundle

    report = verify_bundle(args.bundle)
    if args.json:
        print_json(report)
        return 0
    needs = ", ".join(f"{k} >= {v['minimum']} (installed {v['installed']})" for k, v in report["requires"].items())
    print(f"{args.bundle}: OK: {report['files']} files, {report['bytes'] / 1e6:.1f} MB, every sha256 and path "
          f"checked; {report['backend']} {report['precision']}; " + (f"needs {needs}" if needs else
                                                                      "an export folder (no runtime minimums)"))
    return 0


def _cmd_triton(args) -> int:
    from .serving.triton import write_triton_repo

    models = write_triton_repo(args.bundle, args.out, args.name, args.threads, args.instances, force=args.force)
    for name, what in models.items():
        print(f"{args.out}/{name}: {what}")
    print(f"start: tritonserver --model-repository {args.out.resolve()} (docs/DEPLOY.md)")
    return 0


def _cmd_models(args) -> int:
    from .loaders.registry import model_configs

    for name, entry in model_configs().items():
        print(f"{name:16} {entry.get('description', '')}")
    return 0


def main(argv=None) -> int:
    """Entry point of the `luodi` command. A user's mistake (a bad value, file or path) prints one line and exits
    1 (2 for a bad flag, from argparse); anything else is a bug and keeps its traceback."""
    handler = {"export": _cmd_export, "generate": _cmd_generate, "bench": _cmd_bench, "inspect": _cmd_inspect,
               "models": _cmd_models, "eval": _cmd_eval, "bundle": _cmd_bundle, "verify": _cmd_verify,
               "triton": _cmd_triton, **cli_measure.HANDLERS, **cli_batching.HANDLERS, **compress_cli.HANDLERS,
               **tune_cli.HANDLERS}
    try:
        args = _parser().parse_args(argv)
        return handler[args.command](args)
    except LuodiError as e:
        return _fail(str(e))
    except OSError as e:  # a system call on a path failed: missing, unreadable, read-only, not a folder, disk full
        if e.errno is None:
            raise
        return _fail(os_error_line(e))
    except UnicodeError as e:
        return _fail(f"text luodi cannot read or write as UTF-8 ({e})")
    except KeyboardInterrupt:
        print("luodi: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    """Print a user's mistake as luodi's one-line error; the exit code 1."""
    print(f"luodi: error: {one_line(message)}", file=sys.stderr)
    return 1
