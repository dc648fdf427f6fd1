"""TFLite builtin operators as TensorFlow ops: the table the graph walker in tflite_graph uses.

Each entry of OPS takes a Node (the operator's options and the static facts the walker knows)
and its input values (tf tensors, Keras variables, NumPy constants, or None for an omitted
optional input) and returns its output tensors. Float weights arrive already in TensorFlow's
layout: WEIGHT_LAYOUTS turns TFLite's layouts into it once, when the weights are created
(conv filters [out, h, w, in] -> [h, w, in, out], depthwise [1, h, w, in * mult] ->
[h, w, in, mult], fully connected [out, in] -> [in, out]).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema

TENSOR_DTYPES = {
    schema.TensorType.FLOAT32: tf.float32,
    schema.TensorType.FLOAT16: tf.float16,
    schema.TensorType.FLOAT64: tf.float64,
    schema.TensorType.INT32: tf.int32,
    schema.TensorType.INT64: tf.int64,
    schema.TensorType.INT16: tf.int16,
    schema.TensorType.INT8: tf.int8,
    schema.TensorType.UINT8: tf.uint8,
    schema.TensorType.BOOL: tf.bool,
    schema.TensorType.COMPLEX64: tf.complex64,
    schema.TensorType.COMPLEX128: tf.complex128,
}
PADDINGS = {schema.Padding.SAME: "SAME", schema.Padding.VALID: "VALID"}
MIRROR_MODES = {schema.MirrorPadMode.REFLECT: "REFLECT", schema.MirrorPadMode.SYMMETRIC: "SYMMETRIC"}


@dataclasses.dataclass(frozen=True)
class Node:
    """One TFLite operator of the sub-graph being run, in execution order.

    fix_batch marks a RESHAPE of a batch-carrying tensor to a constant shape that starts
    with the batch size the converter baked in (usually 1): its first entry becomes the
    run-time batch size.
    """
    position: int  # index in the flatbuffer's operator list
    op: str  # builtin operator name, e.g. "CONV_2D"
    inputs: tuple  # tensor indices, -1 for an omitted optional input
    outputs: tuple
    options: Any  # the flatbuffer's *OptionsT object, or None
    input_shapes: tuple  # static shapes from the flatbuffer, () for an omitted input
    output_dtypes: tuple  # tf.DType of each output
    fix_batch: bool = False
    float64_fft: bool = True  # RFFT2D in double precision, as TFLite computes it


def activation(x, code: int):
    """TFLite's fused activation (ActivationFunctionType) applied to x."""
    if code == schema.ActivationFunctionType.NONE:
        return x
    if code == schema.ActivationFunctionType.RELU:
        return tf.nn.relu(x)
    if code == schema.ActivationFunctionType.RELU_N1_TO_1:
        return tf.clip_by_value(x, -1.0, 1.0)
    if code == schema.ActivationFunctionType.RELU6:
        return tf.nn.relu6(x)
    if code == schema.ActivationFunctionType.TANH:
        return tf.tanh(x)
    raise NotImplementedError(f"fused activation {code} is not supported; expected NONE, RELU, "
                              "RELU_N1_TO_1, RELU6 or TANH")


def fused(node: Node):
    """The node's fused activation code, NONE when the op has no options."""
    return getattr(node.options, "fusedActivationFunction", schema.ActivationFunctionType.NONE)


def scalar_int(value) -> int | tf.Tensor:
    """An axis or count given as a 0-d or 1-element tensor, as a Python int when constant."""
    if isinstance(value, np.ndarray):
        return int(value.reshape(-1)[0])
    return tf.reshape(value, [])


def binary(fn: Callable) -> Callable:
    """An elementwise two-input op with TFLite's fused activation."""
    return lambda node, args: [activation(fn(args[0], args[1]), fused(node))]


def unary(fn: Callable) -> Callable:
    return lambda node, args: [fn(args[0])]


def divide(a, b):
    """TFLite's DIV: true division for floats, truncating division for integers."""
    a = tf.convert_to_tensor(a)
    return tf.math.truncatediv(a, b) if a.dtype.is_integer else tf.math.divide(a, b)


def reduce(fn: Callable) -> Callable:
    """MEAN, SUM, REDUCE_*: input, axes; keepDims from ReducerOptions."""
    return lambda node, args: [fn(args[0], axis=args[1], keepdims=bool(node.options.keepDims))]


def conv_2d(node: Node, args):
    x, kernel, bias = (args + [None])[:3]  # x [batch, h, w, in], kernel [kh, kw, in, out]
    o = node.options
    y = tf.nn.conv2d(x, kernel, strides=[1, o.strideH, o.strideW, 1], padding=PADDINGS[o.padding],
                     dilations=[1, o.dilationHFactor, o.dilationWFactor, 1])  # [batch, h', w', out]
    if bias is not None:
        y = tf.nn.bias_add(y, bias)
    return [activation(y, o.fusedActivationFunction)]


def depthwise_conv_2d(node: Node, args):
    x, kernel, bias = (args + [None])[:3]  # x [batch, h, w, in], kernel [kh, kw, in, mult]
    o = node.options
    y = tf.nn.depthwise_conv2d(x, kernel, strides=[1, o.strideH, o.strideW, 1],
                               padding=PADDINGS[o.padding],
                               dilations=[o.dilationHFactor, o.dilationWFactor])  # [batch, h', w', in * mult]
    if bias is not None:
        y = tf.nn.bias_add(y, bias)
    return [activation(y, o.fusedActivationFunction)]


def fully_connected(node: Node, args):
    """TFLite flattens every axis but the last into rows unless keepNumDims is set."""
    x, kernel, bias = (args + [None])[:3]  # kernel [in, out]
    rows = tf.reshape(x, [-1, tf.shape(kernel)[0]])  # [rows, in]
    y = tf.matmul(rows, kernel)  # [rows, out]
    if bias is not None:
        y = tf.nn.bias_add(y, bias)
    y = activation(y, node.options.fusedActivationFunction)
    if node.options.keepNumDims:
        y = tf.reshape(y, tf.concat([tf.shape(x)[:-1], tf.shape(kernel)[1:]], 0))  # [..., out]
    return [y]


def pool(fn: Callable) -> Callable:
    def run(node: Node, args):
        o = node.options
        y = fn(args[0], ksize=[o.filterHeight, o.filterWidth], strides=[o.strideH, o.strideW],
               padding=PADDINGS[o.padding])  # [batch, h', w', channels]
        return [activation(y, o.fusedActivationFunction)]
    return run


def reshape(node: Node, args):
    x = args[0]
    shape = args[1] if len(args) > 1 and args[1] is not None else np.asarray(node.options.newShape, np.int32)
    if node.fix_batch:
        shape = tf.concat([tf.shape(x, out_type=shape.dtype)[:1], shape[1:]], 0)
    return [tf.reshape(x, shape)]


def strided_slice(node: Node, args):
    x, begin, end, strides = args
    o = node.options
    if getattr(o, "offset", False):
        end = begin + end
    return [tf.strided_slice(x, begin, end, strides, begin_mask=o.beginMask, end_mask=o.endMask,
                             ellipsis_mask=o.ellipsisMask, new_axis_mask=o.newAxisMask,
                             shrink_axis_mask=o.shrinkAxisMask)]


def squeeze(node: Node, args):
    dims = node.options.squeezeDims if node.options is not None else None
    axis = None if dims is None or len(dims) == 0 else [int(d) for d in dims]
    return [tf.squeeze(args[0], axis=axis)]


def split_v(node: Node, args):
    x, sizes, axis = args
    return tf.split(x, sizes, axis=scalar_int(axis), num=node.options.numSplits)


def mirror_pad(node: Node, args):
    return [tf.pad(args[0], args[1], mode=MIRROR_MODES[node.options.mode])]


def softmax(node: Node, args):
    return [tf.nn.softmax(args[0] * node.options.beta, axis=-1)]


def batch_matmul(node: Node, args):
    o = node.options
    return [tf.linalg.matmul(args[0], args[1], adjoint_a=bool(o.adjX), adjoint_b=bool(o.adjY))]


def rfft2d(node: Node, args):
    """TFLite's RFFT2D transforms in double precision (fft2d's rdft2d), and so does this unless
    node.float64_fft is off: a float32 FFT leaves ~1e-5 of rounding noise in bins that are
    exactly zero for a constant (silent) window, which BirdNET's magnitude compression
    (x ** 0.23) turns into visible error. The float32 FFT is ~2x faster."""
    x = tf.cast(args[0], tf.float64 if node.float64_fft else tf.float32)
    spectrum = tf.signal.rfft2d(x, fft_length=args[1])  # [..., h, w // 2 + 1]
    return [tf.cast(spectrum, node.output_dtypes[0])]


def cast(node: Node, args):
    """CAST from complex to real keeps the real part, as tf.cast does (without its warning)."""
    x = tf.convert_to_tensor(args[0])
    if x.dtype.is_complex and not node.output_dtypes[0].is_complex:
        x = tf.math.real(x)
    return [tf.cast(x, node.output_dtypes[0])]


OPS: dict[str, Callable] = {
    "ADD": binary(tf.add),
    "SUB": binary(tf.subtract),
    "MUL": binary(tf.multiply),
    "DIV": binary(divide),
    "FLOOR_DIV": binary(tf.math.floordiv),
    "FLOOR_MOD": binary(tf.math.floormod),
    "MAXIMUM": binary(tf.maximum),
    "MINIMUM": binary(tf.minimum),
    "POW": binary(tf.pow),
    "SQUARED_DIFFERENCE": binary(tf.math.squared_difference),
    "LOGISTIC": unary(tf.sigmoid),
    "TANH": unary(tf.tanh),
    "RELU": unary(tf.nn.relu),
    "RELU6": unary(tf.nn.relu6),
    "RELU_N1_TO_1": unary(lambda x: tf.clip_by_value(x, -1.0, 1.0)),
    "HARD_SWISH": unary(lambda x: x * tf.nn.relu6(x + 3.0) / 6.0),
    "LEAKY_RELU": lambda node, args: [tf.nn.leaky_relu(args[0], alpha=node.options.alpha)],
    "GELU": lambda node, args: [tf.nn.gelu(args[0], approximate=bool(node.options.approximate))],
    "EXP": unary(tf.exp),
    "LOG": unary(tf.math.log),
    "SQRT": unary(tf.sqrt),
    "RSQRT": unary(tf.math.rsqrt),
    "SQUARE": unary(tf.square),
    "ABS": unary(tf.abs),
    "NEG": unary(tf.negative),
    "FLOOR": unary(tf.floor),
    "CEIL": unary(tf.math.ceil),
    "SIN": unary(tf.sin),
    "COS": unary(tf.cos),
    "COMPLEX_ABS": unary(tf.abs),
    "REAL": unary(tf.math.real),
    "IMAG": unary(tf.math.imag),
    "SOFTMAX": softmax,
    "LOG_SOFTMAX": unary(tf.nn.log_softmax),
    "MEAN": reduce(tf.reduce_mean),
    "SUM": reduce(tf.reduce_sum),
    "REDUCE_MAX": reduce(tf.reduce_max),
    "REDUCE_MIN": reduce(tf.reduce_min),
    "REDUCE_PROD": reduce(tf.reduce_prod),
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "FULLY_CONNECTED": fully_connected,
    "BATCH_MATMUL": batch_matmul,
    "AVERAGE_POOL_2D": pool(tf.nn.avg_pool2d),
    "MAX_POOL_2D": pool(tf.nn.max_pool2d),
    "RFFT2D": rfft2d,
    "SHAPE": lambda node, args: [tf.shape(args[0], out_type=node.output_dtypes[0])],
    "RESHAPE": reshape,
    "SQUEEZE": squeeze,
    "EXPAND_DIMS": lambda node, args: [tf.expand_dims(args[0], scalar_int(args[1]))],
    "TRANSPOSE": lambda node, args: [tf.transpose(args[0], args[1])],
    "REVERSE_V2": lambda node, args: [tf.reverse(args[0], args[1])],
    "PACK": lambda node, args: [tf.stack(args, axis=node.options.axis)],
    "UNPACK": lambda node, args: tf.unstack(args[0], num=node.options.num, axis=node.options.axis),
    "CONCATENATION": lambda node, args: [activation(tf.concat(args, axis=node.options.axis), fused(node))],
    "SPLIT": lambda node, args: tf.split(args[1], node.options.numSplits, axis=scalar_int(args[0])),
    "SPLIT_V": split_v,
    "STRIDED_SLICE": strided_slice,
    "SLICE": lambda node, args: [tf.slice(args[0], args[1], args[2])],
    "GATHER": lambda node, args: [tf.gather(args[0], args[1], axis=node.options.axis,
                                            batch_dims=node.options.batchDims)],
    "GATHER_ND": lambda node, args: [tf.gather_nd(args[0], args[1])],
    "RANGE": lambda node, args: [tf.range(args[0], args[1], args[2])],
    "FILL": lambda node, args: [tf.fill(args[0], args[1])],
    "TILE": lambda node, args: [tf.tile(args[0], args[1])],
    "BROADCAST_TO": lambda node, args: [tf.broadcast_to(args[0], args[1])],
    "PAD": lambda node, args: [tf.pad(args[0], args[1])],
    "PADV2": lambda node, args: [tf.pad(args[0], args[1], constant_values=args[2])],
    "MIRROR_PAD": mirror_pad,
    "ZEROS_LIKE": unary(tf.zeros_like),
    "ONES_LIKE": unary(tf.ones_like),
    "CAST": cast,
    "DEQUANTIZE": lambda node, args: [tf.cast(args[0], node.output_dtypes[0])],  # float16 weights
}


def depthwise_layout(kernel, node: Node):
    """[1, kh, kw, in * mult] -> [kh, kw, in, mult]; `in` is the input's static channel count."""
    channels = int(node.input_shapes[0][-1])
    _, kh, kw, total = kernel.shape
    if channels <= 0 or total % channels:
        raise ValueError(f"DEPTHWISE_CONV_2D at operator {node.position}: expected the input's "
                         f"channels to divide the filter's {total}, got {channels}")
    return np.reshape(kernel, (kh, kw, channels, total // channels))


# Operator -> {input slot: NumPy function taking (TFLite layout, node) to TensorFlow's layout}.
WEIGHT_LAYOUTS: dict[str, dict[int, Callable]] = {
    "CONV_2D": {1: lambda w, node: np.transpose(w, (1, 2, 3, 0))},  # [out, kh, kw, in] -> [kh, kw, in, out]
    "DEPTHWISE_CONV_2D": {1: depthwise_layout},
    "FULLY_CONNECTED": {1: lambda w, node: np.transpose(w)},  # [out, in] -> [in, out]
}
