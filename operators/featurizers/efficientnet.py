"""EfficientNet-Lite0 featurizer: 1280-d L2-normalized embeddings and ImageNet top-k per patch.

Works on any pixel patches: detector crops and whole frames alike (each crop is resized to
224x224). The vectors are pooled features before the classifier, so a dot product between
two patches is their cosine similarity (MemSQL's normalized-vector scan). On CPU the network
runs exported to ONNX, on OpenVINO when installed (about 3x traced torch per core), else ONNX
Runtime; on a GPU traced torch with fp16 autocast (``precision="auto"``), or fp32.

Query images are embedded on CPU in fp32 by the collection's recorded spec; vectors ingested on a
GPU in fp16 differ from those by a bounded drift (cosine >= 0.999 on real photos,
``tests/operators/test_featurizer_precision.py``), far below the gaps between neighbours.

>>> featurizer = EfficientNetLite0Featurizer(top_k=3)
>>> featurizer.output_type(featurizer.input_type()).dim
1280
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from operators.base import Operator, OperatorContext
from operators.featurizers.resize import stack_resized
from operators.models.compute import Compute, check_precision, choose_compute
from operators.models.device import TorchDevice
from operators.models.efficientnet_lite import (
    CPU_RUNTIMES, FEATURE_DIM, INPUT_SIZE, WEIGHTS, Lite0Embedding, load_efficientnet_lite0, onnx_model,
)
from operators.models.imagenet import imagenet_classes
from operators.models.runtimes import OnnxSession, check_runtime, is_installed, open_session
from operators.models.store import model_file, spec
from streamvision.core.errors import ConfigError
from streamvision.core.patches import PatchBatch
from streamvision.core.types import PatchType, StreamType

#: Default patches per forward pass on CPU and on CUDA.
CPU_CHUNK = 8
GPU_CHUNK = 64
#: Precisions the featurizer runs in (no int8 export of it).
PRECISIONS = ("auto", "fp32", "fp16")


class EfficientNetLite0Featurizer(Operator[PatchBatch, PatchBatch]):
    """Embed pixel patches with EfficientNet-Lite0 (ImageNet weights).

    Args:
        top_k: ImageNet classes kept per patch in ``extra["imagenet"]`` as ``[[name, prob], ...]``
            (0: none).
        trace: run a ``torch.jit.trace``-d network.
        chunk: most patches per forward pass; a larger merged batch runs in chunks, which
            bounds activation memory (a CPU forward of 64 patches needs about 1 GB). Default:
            8 on CPU (small passes stay in cache: ~45 patches/s per core at 4-8, ~25 at 32;
            ``benchmarks/models.py``), 64 on CUDA.
        runtime: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``; ``None`` (default): torch when a
            GPU is asked for and present, else the fastest installed CPU runtime
            (:func:`~operators.models.compute.choose_compute`). Vectors agree to ~1e-5.
        precision: ``"auto"`` (default: fp16 autocast on a GPU, fp32 on CPU), ``"fp32"``
            everywhere, or ``"fp16"`` (torch autocast; on CPU too, slowly).
    """

    name = f"efficientnet-lite0@{spec('efficientnet-lite0').version}"

    def __init__(self, *, top_k: int = 5, trace: bool = True, chunk: int | None = None,
                 runtime: str | None = None, precision: str = "auto") -> None:
        if not 0 <= top_k <= 1000:
            raise ConfigError(f"{self.name}: top_k must be in [0, 1000], got {top_k}")
        if chunk is not None and chunk < 1:
            raise ConfigError(f"{self.name}: chunk must be >= 1, got {chunk}")
        self.top_k = int(top_k)
        self.chunk = chunk
        self.trace = bool(trace)
        self.runtime = check_runtime(self.name, runtime)
        self.precision = check_precision(self.name, precision, self.runtime, PRECISIONS)
        self._device: TorchDevice | None = None
        self._net: torch.nn.Module | None = None
        self._session: OnnxSession | None = None
        self.active_runtime: str | None = None
        self._classes: tuple[str, ...] = ()

    def input_type(self) -> StreamType:
        """Pixel patches (crops or whole frames)."""
        return PatchType(kind="pixels")

    def output_type(self, upstream: StreamType) -> StreamType:
        """1280-d vectors; labels pass through unchanged."""
        domain = upstream.label_domain if isinstance(upstream, PatchType) else None
        return PatchType(kind="vector", dim=FEATURE_DIM, label_domain=domain)

    @property
    def device(self) -> TorchDevice:
        """The device the network runs on (after ``setup``)."""
        if self._device is None:
            raise RuntimeError(f"{self.name}: setup() was not called")
        return self._device

    def compute(self, context: OperatorContext) -> Compute:
        """The device, dtype and runtime this featurizer runs with in ``context``."""
        return choose_compute(self.name, context.device, cuda_available=torch.cuda.is_available(),
                              precision=self.precision, runtime=self.runtime, preference=CPU_RUNTIMES,
                              installed=is_installed)

    def setup(self, context: OperatorContext) -> None:
        """Load the verified weights onto the context's device, dtype and runtime (tracing the torch network)."""
        compute = self.compute(context)
        self._device = TorchDevice.of(compute, context.num_threads)
        self.active_runtime = compute.runtime
        self._classes = imagenet_classes() if self.top_k else ()
        if self.active_runtime != "torch":
            self._session = open_session(onnx_model(), self.active_runtime, context.num_threads)
            return
        net = self._device.module(Lite0Embedding(load_efficientnet_lite0(model_file("efficientnet-lite0", WEIGHTS))))
        if self.trace:
            example = torch.zeros(1, INPUT_SIZE, INPUT_SIZE, 3, dtype=torch.uint8, device=self._device.device)
            # the TF "same" padding sizes become constants: right, as inputs are always 224x224
            with torch.no_grad(), self._device.autocast(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                net = torch.jit.trace(net, (example,), check_trace=False)
        self._net = net

    def embed(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors [n, 1280] L2-normalized, probabilities [n, 1000])`` of ``images [n, 224, 224, 3]`` uint8 RGB."""
        if self._device is None or (self._net is None and self._session is None):
            raise RuntimeError(f"{self.name}: setup() was not called")
        chunk = self.chunk or (GPU_CHUNK if self._device.is_cuda and self._net is not None else CPU_CHUNK)
        vectors, probs = [], []
        for start in range(0, len(images), chunk):
            part = np.ascontiguousarray(images[start : start + chunk])
            if self._session is not None:
                v, p = self._session.run(part)
            else:
                with torch.no_grad(), self._device.autocast():
                    v, p = (t.cpu().numpy() for t in self._net(self._device.tensor(part)))
            vectors.append(v)
            probs.append(p)
        return np.concatenate(vectors), np.concatenate(probs)

    def process(self, batch: PatchBatch) -> PatchBatch:
        """Vectors (and ImageNet top-k) for every patch; parents are the input patches."""
        if len(batch) == 0:
            return PatchBatch.empty(batch.meta, dim=FEATURE_DIM)
        if batch.crops is None:
            raise ConfigError(f"{self.name}: needs pixel patches, got a batch without crops")
        vectors, probs = self.embed(stack_resized(batch.crops, INPUT_SIZE))
        extra = {}
        if self.top_k:
            best = np.argsort(-probs, axis=1)[:, : self.top_k]
            extra["imagenet"] = [
                [[self._classes[c], round(float(p[c]), 4)] for c in row] for row, p in zip(best, probs)
            ]
        return batch.derive(vectors, operator=self.name, extra=extra)

    def spec(self) -> dict[str, object]:
        """How to rebuild this operator from a pipeline file (stores record it to embed queries)."""
        return {"op": "efficientnet_lite0", "options": {"top_k": self.top_k, "chunk": self.chunk,
                                                        "precision": self.precision}}

    def teardown(self) -> None:
        """Drop the network."""
        self._net = None
        self._session = None
