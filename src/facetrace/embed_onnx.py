"""dlib's face-recognition ResNet run by onnxruntime: dlib's vectors, several times faster.

``OnnxDlibEmbedder`` is a drop-in ``Embedder`` beside ``DlibEmbedder`` with the same ``model``
ids (``dlib_resnet_v1``, ``dlib_resnet_v1_flip``): it runs the very weights dlib loads and its
vectors agree with dlib's to well under 1e-4 in cosine distance, so stored vectors of the two
backends are interchangeable. Flip (test-time augmentation) is shared with ``DlibEmbedder``
(``facetrace.embed.embed_chips``).

The ONNX graph is converted from the installed ``.dat`` (parsed by ``facetrace.dlib_dnn``) the
first time it is needed and cached as ``<cache>/dlib_resnet_v1-<sha256 of the .dat>-c<N>.onnx``
(``N`` = ``CONVERTER_VERSION``); ``<cache>`` is ``$FACETRACE_MODEL_CACHE`` or the user cache
directory. A build writes a temporary file and renames it into place, so processes that build
at once each write a whole file and one of them wins; nothing is ever downloaded.

Graph: uint8 chips (N, 150, 150, 3) -> float NCHW, ``(x - mean) / 256`` -> the ResNet, each
``affine`` folded into the convolution below it -> (N, 128) float32, dlib's raw descriptor.
Weights stay float32 (no quantisation).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from facetrace.dlib_dnn import (
    AddPrev,
    Affine,
    Conv,
    DlibNet,
    Fc,
    Layer,
    Pool,
    Relu,
    Skip,
    Tag,
    parse_network,
    shapes,
)
from facetrace.embed import DLIB_MODEL, embed_chips
from facetrace.errors import ConfigError, InputError
from facetrace.models import RECOGNITION, model_file

CONVERTER_VERSION = 1
OPSET = 17
INPUT = "chips"
OUTPUT = "descriptors"
CHIP_SHAPE = (150, 150, 3)


class OnnxDlibEmbedder:
    """dlib's ResNet descriptor computed by onnxruntime; loads (and converts) on first use.

    ``threads`` is onnxruntime's intra-op thread count: 1 when ingest runs one worker process
    per core. ``weights`` and ``cache`` default to the installed ``.dat`` and ``cache_dir()``.
    """

    dim = 128

    def __init__(
        self,
        flip: bool = False,
        threads: int = 1,
        *,
        weights: Path | None = None,
        cache: Path | None = None,
    ) -> None:
        if threads < 1:
            raise ConfigError(f"onnxruntime threads must be at least 1, not {threads}")
        self.flip = flip
        self.threads = threads
        self.model = DLIB_MODEL + ("_flip" if flip else "")
        self.weights = weights
        self.cache = cache
        self._session: Any = None

    @property
    def variant(self) -> str:
        return "flip" if self.flip else "plain"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None}  # sessions do not pickle; reload lazily

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        """float32 vectors, one row per chip (dlib's raw output unless ``flip``)."""
        return embed_chips(self._raw, chips, flip=self.flip, dim=self.dim)

    def _raw(self, chips: list[np.ndarray]) -> np.ndarray:
        if self._session is None:
            self._session = self._load()
        out = self._session.run([OUTPUT], {INPUT: _batch(chips)})[0]
        return np.asarray(out, dtype=np.float32)

    def _load(self) -> Any:
        import_onnxruntime()  # a ConfigError rather than a crash where it cannot load
        weights = self.weights or model_file(RECOGNITION)
        path = onnx_model(weights, self.cache or cache_dir())
        try:
            return make_session(path, self.threads)
        except Exception:  # onnxruntime's errors derive from Exception: a damaged cache file
            build_onnx(weights.read_bytes(), str(weights), path)
        try:
            return make_session(path, self.threads)
        except Exception as e:
            raise ConfigError(f"onnxruntime cannot load the converted model: {e}", path=path) from e


def make_session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session: ``threads`` intra-op threads, all graph optimisations."""
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or a ConfigError where loading it would crash the process.

    usearch's wheel carries its own copy of libstdc++ and exports its unique symbols; once it
    is loaded, loading onnxruntime segfaults (seen with usearch 2.26 and onnxruntime 1.32).
    Importing onnxruntime first avoids it. Where usearch came first we ask a child process
    whether that order crashes here before trying it in this one.
    """
    if "onnxruntime" not in sys.modules and "usearch.compiled" in sys.modules:
        probe = [sys.executable, "-c", "import usearch.index, onnxruntime"]
        if subprocess.run(probe, capture_output=True, timeout=300).returncode != 0:
            raise ConfigError(
                "onnxruntime cannot be loaded after usearch in one process (usearch's wheel "
                "exports its own libstdc++); import onnxruntime before usearch"
            )
    import onnxruntime

    return onnxruntime


def _batch(chips: list[np.ndarray]) -> np.ndarray:
    for c in chips:
        if c.shape != CHIP_SHAPE or c.dtype != np.uint8:
            raise InputError(
                f"face chip of shape {c.shape} and type {c.dtype}; the embedder needs "
                "150 x 150 x 3 uint8 RGB chips from facetrace.align"
            )
    return np.stack(chips)


# ------------------------------------------------------------------------------------------
# The cache


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where converted models live: ``$FACETRACE_MODEL_CACHE`` or the user cache directory."""
    env = os.environ if env is None else env
    override = env.get("FACETRACE_MODEL_CACHE")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("facetrace")) / "models"


def onnx_model(weights: Path, cache: Path) -> Path:
    """The cached ONNX conversion of ``weights``, built first if it is not there yet."""
    try:
        data = weights.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read dlib model: {e.strerror}", path=weights) from e
    digest = hashlib.sha256(data).hexdigest()
    path = cache / f"{DLIB_MODEL}-{digest}-c{CONVERTER_VERSION}.onnx"
    if not path.is_file():
        build_onnx(data, str(weights), path)
    return path


def build_onnx(data: bytes, source: str, path: Path) -> None:
    """Convert ``.dat`` bytes (``source`` names them in errors); write ``path`` atomically."""
    model = to_onnx(parse_network(data, source), hashlib.sha256(data).hexdigest())
    blob = model.SerializeToString()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError as e:
        raise ConfigError(
            f"cannot write the model cache: {e.strerror}; set FACETRACE_MODEL_CACHE to a "
            "writable directory",
            path=path.parent,
        ) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is not secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------
# The conversion


def fold_affine(layers: tuple[Layer, ...]) -> tuple[Layer, ...]:
    """Each per-channel ``affine`` right above a ``con`` merged into it (``g*(Wx+b)+beta``)."""
    out: list[Layer] = []
    for layer in layers:
        prev = out[-1] if out else None
        if (
            isinstance(layer, Affine)
            and isinstance(prev, Conv)
            and not prev.relu
            and layer.gamma.shape[2:] == (1, 1)
        ):
            g = layer.gamma.reshape(-1).astype(np.float64)
            b = prev.bias.astype(np.float64) if prev.bias is not None else 0.0
            weight = (prev.weight * g[:, None, None, None]).astype(np.float32)
            bias = (g * b + layer.beta.reshape(-1)).astype(np.float32)
            out[-1] = Conv(weight, bias, prev.stride, prev.pad)
        else:
            out.append(layer)
    return tuple(out)


class _Graph:
    """Collects ONNX nodes and initializers under generated names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def _name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, value: np.ndarray, stem: str = "c") -> str:
        from onnx import numpy_helper

        name = self._name(stem)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        from onnx import helper

        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def to_onnx(net: DlibNet, source_sha256: str = "") -> Any:
    """The ONNX model (``onnx.ModelProto``) of a parsed network."""
    import onnx
    from onnx import TensorProto, helper

    folded = DlibNet(net.input, fold_affine(net.layers), net.loss)

    def fail(why: str) -> Any:
        raise ConfigError(f"cannot convert the dlib network: {why}")

    sizes = shapes(folded, fail)
    g = _Graph()
    x = g.op("Cast", INPUT, to=TensorProto.FLOAT)
    x = g.op("Transpose", x, perm=[0, 3, 1, 2])
    mean = np.asarray(net.input.mean, np.float32).reshape(1, 3, 1, 1)
    scale = g.const(np.array(1 / 256, np.float32), "scale")  # exact: a power of two
    x = g.op("Mul", g.op("Sub", x, g.const(mean, "mean")), scale)
    shape = (3, *net.input.size)
    tags: dict[int, tuple[str, tuple[int, int, int]]] = {}
    for layer, out_shape in zip(folded.layers, sizes, strict=True):
        x = _emit(g, layer, x, shape, out_shape, tags)
        shape = out_shape
    x = g.op("Flatten", x, axis=1)
    g.nodes[-1].output[0] = OUTPUT
    batch = ["batch"]
    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, [*batch, *net.input.size, 3])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [*batch, shape[0]])],
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facetrace"
    )
    model.ir_version = 8
    helper.set_model_props(
        model, {"source_sha256": source_sha256, "converter_version": str(CONVERTER_VERSION)}
    )
    onnx.checker.check_model(model)
    return model


def _emit(
    g: _Graph,
    layer: Layer,
    x: str,
    shape: tuple[int, int, int],
    out_shape: tuple[int, int, int],
    tags: dict[int, tuple[str, tuple[int, int, int]]],
) -> str:
    """The ONNX nodes of one dlib layer on tensor ``x`` of (k, nr, nc) ``shape``."""
    if isinstance(layer, Conv):
        inputs = [x, g.const(layer.weight, "w")]
        if layer.bias is not None:
            inputs.append(g.const(layer.bias, "b"))
        py, px = layer.pad
        y = g.op(
            "Conv",
            *inputs,
            kernel_shape=list(layer.weight.shape[2:]),
            strides=list(layer.stride),
            pads=[py, px, py, px],
        )
        return g.op("Relu", y) if layer.relu else y
    if isinstance(layer, Affine):
        return g.op("Add", g.op("Mul", x, g.const(layer.gamma, "g")), g.const(layer.beta, "beta"))
    if isinstance(layer, Relu):
        return g.op("Relu", x)
    if isinstance(layer, Pool):
        op = "MaxPool" if layer.kind == "max" else "AveragePool"
        if layer.size == (0, 0):
            return g.op("Global" + op, x)
        py, px = layer.pad
        attrs = {"kernel_shape": list(layer.size), "strides": list(layer.stride)}
        return g.op(op, x, pads=[py, px, py, px], **attrs)
    if isinstance(layer, Fc):
        y = g.op("MatMul", g.op("Flatten", x, axis=1), g.const(layer.weight, "fc"))
        if layer.bias is not None:
            y = g.op("Add", y, g.const(layer.bias, "fc_b"))
        return g.op("Unsqueeze", y, g.const(np.array([2, 3], np.int64), "axes"))
    if isinstance(layer, Tag):
        tags[layer.id] = (x, shape)
        return x
    if isinstance(layer, Skip):
        return tags[layer.id][0]
    if isinstance(layer, AddPrev):
        other, other_shape = tags[layer.id]
        a, b = _pad_to(g, x, shape, out_shape), _pad_to(g, other, other_shape, out_shape)
        return g.op("Add", a, b)
    raise ConfigError(f"cannot convert dlib layer {layer!r}")


def _pad_to(g: _Graph, x: str, shape: tuple[int, int, int], target: tuple[int, int, int]) -> str:
    """``x`` zero-padded at the end of each of (k, nr, nc) to ``target``, as dlib's add does."""
    if shape == target:
        return x
    pads = np.array([0, 0, 0, 0, 0, *(t - s for t, s in zip(target, shape, strict=True))], np.int64)
    return g.op("Pad", x, g.const(pads, "pads"))
