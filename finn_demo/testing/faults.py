"""Faults an export can carry, each written into a QONNX file by hand: the checks must fail on
every one and name the layer. Used by the tests (the suite's model) and the benchmark (224x224).

Each fault takes a ModelWrapper of the file as exported, changes it in place, and returns the
name of the Quant node whose check must break (the first quantizer the fault reaches).
"""
import numpy as np


def own_initializer(model, node, index, change):
    """Give `node` its own copy of input `index` (the exporter shares equal constants), changed."""
    name = f"{node.input[index]}_{node.name}_fault"
    model.set_initializer(name, change(model.get_initializer(node.input[index]).copy())
                          .astype(np.float32))
    node.input[index] = name


def relu_quants(model):
    """The activation Quants right after a Relu, in graph order."""
    return [node for node in model.get_nodes_by_op_type("Quant")
            if (producer := model.find_producer(node.input[0])) is not None
            and producer.op_type == "Relu"]


def pointwise_weight_quant(model):
    """The weight Quant of a 1x1 conv halfway through the graph."""
    convs = [conv for conv in model.get_nodes_by_op_type("Conv")
             if model.get_initializer(model.find_producer(conv.input[1]).input[0]).shape[2:] == (1, 1)]
    return model.find_producer(convs[len(convs) // 2].input[1])


def activation_scale(factor):
    def fault(model):
        quant = relu_quants(model)[len(relu_quants(model)) // 2]
        own_initializer(model, quant, 1, lambda scale: scale * factor)
        return quant.name
    fault.__name__ = f"activation_scale_x{factor:g}"
    return fault


def weight_scale_one_channel(model):
    """One output channel of a pointwise conv's weight scale x1.25."""
    quant = pointwise_weight_quant(model)

    def change(scale):
        scale[1] *= 1.25
        return scale
    own_initializer(model, quant, 1, change)
    return quant.name


def batchnorm_mean_half_step(model):
    """One channel's BatchNorm mean moved by half a step of the activation quantizer after it."""
    quant = relu_quants(model)[len(relu_quants(model)) // 2]
    batchnorm = model.find_producer(model.find_producer(quant.input[0]).input[0])
    step = float(np.max(model.get_initializer(quant.input[1])))
    scale, variance = (model.get_initializer(name) for name in batchnorm.input[1:5:3])
    gain = scale / np.sqrt(variance + 1e-5)
    channel = int(np.argmax(np.abs(gain)))

    def change(mean):
        mean[channel] -= 0.5 * step / gain[channel]
        return mean
    own_initializer(model, batchnorm, 3, change)
    return quant.name


def swapped_output_channels(model):
    """Two output channels of a pointwise conv's float weights swapped."""
    quant = pointwise_weight_quant(model)

    def change(weight):
        weight[[0, 1]] = weight[[1, 0]]
        return weight
    own_initializer(model, quant, 0, change)
    return quant.name


FAULTS = [activation_scale(1.5), activation_scale(3.0), weight_scale_one_channel,
          batchnorm_mean_half_step, swapped_output_channels]
