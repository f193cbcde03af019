"""TensorRT backend (NVIDIA GPU): runs a trt export's engine with its KV cache in preallocated device buffers.

One execution context per optimization profile (decode, prefill), each bound to its profile once. A step
picks the profile whose ranges cover its shapes (a clear error before anything runs if none does), sets the
input shapes, binds device addresses and enqueues the engine on a stream: each layer's key/value buffer
[batch, kv_heads, max_context, head_dim] is bound as both past and present (TensorRT's KV-cache update
writes the step's positions in place), and only the last position's logits are copied to the host.

Device memory comes from a `Device` (torch CUDA tensors); tests drive the same bookkeeping with a CPU
stand-in for the engine and device (tests/trt_stand_in.py), which proves luodi's side, not TensorRT's.
"""

from pathlib import Path

import numpy as np

from ..contract.graph import ATTENTION_MASK, INPUT_IDS, LOGITS, POSITION_IDS, kv_names
from ..contract.kv import SCATTER_BUFFER
from ..contract.manifest import Manifest, ModelSpec, RuntimeFacts, TensorRTInfo
from ..contract.shapes import pick_profile
from ..errors import CorruptModelError, LuodiError
from ..runtime_libraries import current_arch, import_tensorrt
from .base import Backend, KVState

GPU_NEEDED = ("running a TensorRT engine needs an NVIDIA GPU with CUDA-enabled PyTorch; `--backend ort` runs "
              "the same graph under ONNX Runtime")


class TorchCudaDevice:
    """Device buffers as torch CUDA tensors, on torch's current stream."""

    def __init__(self):
        try:
            import torch
        except ImportError:
            raise LuodiError(GPU_NEEDED) from None
        if not torch.cuda.is_available():
            raise LuodiError(f"no CUDA GPU is available: {GPU_NEEDED}")
        self.torch = torch
        self.stream = torch.cuda.current_stream().cuda_stream

    def zeros(self, shape, dtype: str = "float32"):
        return self.torch.zeros(tuple(shape), dtype=getattr(self.torch, dtype), device="cuda")

    def upload(self, array: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(array)).to("cuda")

    @staticmethod
    def address(buffer) -> int:
        return buffer.data_ptr()

    def download(self, buffer) -> np.ndarray:
        return buffer.float().cpu().numpy()  # waits for the stream's work; float32 (numpy has no bfloat16)

    def fill(self, buffer, array: np.ndarray) -> None:
        """Copy a host array [batch, heads, n, dim] into a KV buffer's first n positions, in the buffer's dtype."""
        buffer[:, :, :array.shape[2]] = self.torch.from_numpy(np.ascontiguousarray(array)).to(buffer.device,
                                                                                               buffer.dtype)


class TensorRTBackend(Backend):
    """Drives an engine (one context per profile) through the shared decode loop."""

    name = "tensorrt"
    kv_layout = SCATTER_BUFFER  # TensorScatter writes each step in place in max-context buffers

    def __init__(self, engine, spec: ModelSpec, info: TensorRTInfo, device, facts: RuntimeFacts | None = None):
        self.take_facts(facts)
        self.spec, self.device = spec, device
        self.max_context, self.vocab_size = spec.max_context, spec.vocab_size
        self.max_batch = info.max_batch
        self.dtype = info.kv_dtype  # of the KV cache and the logits: float32|float16|bfloat16
        self.profiles = info.profiles
        self.past_names, self.present_names = kv_names(spec.num_layers)
        self.contexts = {}
        for index, name in enumerate(self.profiles):
            context = engine.create_execution_context()
            if context is None:
                raise LuodiError("TensorRT could not create an execution context (out of device memory?)")
            context.set_optimization_profile_async(index, device.stream)
            self.contexts[name] = context

    def new_state(self, batch: int, capacity: int | None = None) -> KVState:
        state = super().new_state(batch, capacity)
        shape = (batch, self.spec.num_kv_heads, self.max_context, self.spec.head_dim)
        state.cache = [self.device.zeros(shape, self.dtype) for _ in self.past_names]
        return state

    def forward_window(self, state: KVState, input_ids, attention_mask, position_ids) -> np.ndarray:
        tokens = {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask, POSITION_IDS: position_ids}
        tokens = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in tokens.items()}
        kv_shape = (state.batch, self.spec.num_kv_heads, self.max_context, self.spec.head_dim)
        shapes = {**{k: v.shape for k, v in tokens.items()}, **{name: kv_shape for name in self.past_names}}
        context = self.contexts[pick_profile(self.profiles, shapes)]
        keep = []  # device copies of the inputs live until the step is done
        for name, array in tokens.items():
            buffer = self.device.upload(array)
            keep.append(buffer)
            self._bind(context, name, array.shape, buffer)
        for past, present, buffer in zip(self.past_names, self.present_names, state.cache):
            self._bind(context, past, kv_shape, buffer)
            context.set_tensor_address(present, self.device.address(buffer))
        logits = self.device.zeros(tuple(context.get_tensor_shape(LOGITS)), self.dtype)
        context.set_tensor_address(LOGITS, self.device.address(logits))
        if not context.execute_async_v3(self.device.stream):
            raise LuodiError("TensorRT failed to run the engine (see its log above)")
        state.past_length += input_ids.shape[1]
        return self.device.download(logits).astype(np.float32, copy=False)

    def kv_arrays(self, state: KVState) -> dict[str, np.ndarray]:
        """The cache's first past_length columns, copied to the host (as float32)."""
        return {name: self.device.download(buffer[:, :, :state.past_length])
                for name, buffer in zip(self.past_names, state.cache)}

    def set_kv_arrays(self, state: KVState, arrays: dict[str, np.ndarray]) -> None:
        """New max-context device buffers holding the arrays in their first columns; batch and past length follow."""
        batch, _, past, _ = next(iter(arrays.values())).shape
        if self.max_batch is not None and batch > self.max_batch:
            raise LuodiError(f"{batch} sequences at once; this engine's profiles take at most {self.max_batch}")
        shape = (batch, self.spec.num_kv_heads, self.max_context, self.spec.head_dim)
        state.cache = []
        for name in self.past_names:
            buffer = self.device.zeros(shape, self.dtype)
            self.device.fill(buffer, arrays[name])
            state.cache.append(buffer)
        state.batch, state.past_length = batch, past

    def _truncate(self, state: KVState, past_length: int) -> None:
        """Nothing to cut: TensorScatter writes each step at slot (mask width - new tokens)."""

    def _bind(self, context, name: str, shape, buffer) -> None:
        if not context.set_input_shape(name, tuple(shape)):
            raise LuodiError(f"the engine refused shape {tuple(shape)} for {name}")
        context.set_tensor_address(name, self.device.address(buffer))


def open_tensorrt(folder: Path, manifest: Manifest) -> TensorRTBackend:
    """Load a trt export's engine for this machine's GPU, refusing engines built for another TensorRT or GPU."""
    info = manifest.tensorrt
    if not info:
        raise CorruptModelError(f"{folder}: the manifest records no TensorRT engine")
    if not info.engine_file:
        raise LuodiError(f"{folder}: exported without TensorRT installed, so it has no engine; export again with "
                         "'luodi[tensorrt]' installed, or run the graph with --backend ort")
    trt = import_tensorrt()
    built = f"{info.module} {info.version}"
    if (trt.__name__, trt.__version__) != (info.module, info.version):
        raise LuodiError(f"{folder}: the engine was built with {built}; installed is {trt.__name__} "
                         f"{trt.__version__}: re-export it with this TensorRT")
    device = TorchCudaDevice()
    if current_arch() != info.arch:
        raise LuodiError(f"{folder}: the engine was built for {info.arch}; this GPU is {current_arch()}: "
                         f"re-export with --trt-arch {current_arch()}")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    runtime.engine_host_code_allowed = False  # an engine never brings code to run (docs/SECURITY.md)
    engine = runtime.deserialize_cuda_engine((Path(folder) / info.engine_file).read_bytes())
    if engine is None:
        raise CorruptModelError(f"{folder}: {info.engine_file} is not an engine {built} can load (corrupt?)")
    return TensorRTBackend(engine, manifest.spec, info, device, manifest.facts)
