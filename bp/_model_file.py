"""What a model file must hold before ``bp.load`` builds anything from it.

A checksum proves that a file is what was written, not that what was written makes a model: a
crafted file with a valid checksum can hold NaN weights, an unknown loss, an absurd step count, a
layer a trillion units wide, or an entry that inflates to gigabytes. So load checks, in this
order, and each failure is a ValueError naming the file (bp/_io.py adds the name):

    expected(model, config)   from the config alone (the model from_config made: unbuilt, no
                              allocation): the input width, the size of the parameters against
                              this machine's memory, the loss and its pairing with the output
                              activation, the optimizer's class (bp's or registered), its
                              hyperparameters and step count, the generator's state; returns the
                              entries the file may hold and their sizes in bytes, which bp/_io.py
                              compares with each entry's declared size before inflating any
    check_arrays(...)         after reading: every entry's shape and dtype, and every value finite

Only then is the model built.
"""

import numpy as np

from . import _ops
from . import losses as _losses
from . import optimizers as _optimizers
from ._validation import check_finite, check_size

# the largest step count a file may claim: an optimizer's counter is a float64-exact integer
MAX_ITERATIONS = 2**53
# a .npy entry's header (magic, version, the dict of dtype and shape, padding) is at most this
NPY_HEADER_BYTES = 4096


def expected(model, config):
    """The entries a file with this config may hold, name -> (shape, dtype), after checking
    everything the config alone can tell (see the module's docstring)."""
    if model.input_dim is None:
        raise ValueError("the config has no input_dim: a saved model is built")
    count = check_size(parameter_count(model.layers, model.input_dim), model.input_dim, model.dtype)
    loss = config.get("loss")
    if loss is not None:
        _losses.check_pair(_losses.get(loss), model.layers[-1].activation)
    state = config.get("rng_state")
    if state is not None:
        np.random.default_rng().bit_generator.state = state  # raises on a malformed one
    arrays = {"params": ((count,), model.dtype)}
    for k, width in enumerate(running_widths(model.layers, model.input_dim)):
        arrays[f"running_{k}"] = ((2 * width,), model.dtype)  # a BatchNormalization's mean, var
    data = config.get("optimizer")
    if data is not None:
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            raise ValueError(f"the optimizer entry must be a dict with a config. "
                             f"Received: {data!r}")
        iterations = data.get("iterations")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or not (
                0 <= iterations <= MAX_ITERATIONS):
            raise ValueError(f"the optimizer's step count must be an integer in [0, 2**53]. "
                             f"Received: iterations={iterations!r}")
        cls = _optimizers.class_named(data.get("class"))
        # files written before the Keras spelling carry the old names: read without a warning
        kwargs = {_optimizers.RENAMED.get(k, k): v for k, v in data["config"].items()
                  if k != "schedule_dropped"}
        names = cls(**kwargs)._state_names  # its constructor checks the hyperparameters
        arrays.update({"opt_" + name: ((count,), model.dtype) for name in names})
    return arrays


def parameter_count(layers, n_in):
    """The size of the flat parameter buffer of these layers on n_in inputs, without allocating
    it or changing a layer (after every width check of _ops.layer_widths)."""
    count = 0
    for layer, width in zip(layers, _ops.layer_widths(layers, n_in)):
        if layer._kind == "dense":
            count += width * layer.units + (layer.units if layer.use_bias else 0)
        elif layer._kind == "residual":
            count += parameter_count(layer.layers, width)
        elif layer._kind in _ops.PARAMETRIC:  # a normalisation: gamma and beta, each optional
            count += width * (int(bool(layer.scale)) + int(bool(layer.center)))
    return count


def running_widths(layers, n_in):
    """The width of every BatchNormalization, in the order of _ops.running_layers."""
    found = []
    for layer, width in zip(layers, _ops.layer_widths(layers, n_in)):
        if layer._kind == "batch_norm":
            found.append(width)
        elif layer._kind == "residual":
            found.extend(running_widths(layer.layers, width))
    return found


def budget(arrays):
    """The most bytes each entry may declare (its data and a .npy header)."""
    return {name: int(np.prod(shape)) * np.dtype(dtype).itemsize + NPY_HEADER_BYTES
            for name, (shape, dtype) in arrays.items()}


def check_arrays(expected_arrays, arrays):
    """ValueError unless the file's entries are those expected (params required, optimizer
    state optional), each with its shape and dtype, and all finite."""
    if "params" not in arrays:
        raise ValueError("no 'params' entry")
    for name, arr in arrays.items():
        if name not in expected_arrays:
            raise ValueError(f"unexpected entry {name!r} (expected {', '.join(expected_arrays)})")
        shape, dtype = expected_arrays[name]
        if arr.shape != shape or arr.dtype != dtype:
            what = ("params have" if name == "params"
                    else f"{name} has" if name.startswith("running_")
                    else f"optimizer state {name[len('opt_'):]!r} has")
            raise ValueError(f"{what} shape {arr.shape} and dtype {arr.dtype}; the "
                             f"architecture needs {shape} {np.dtype(dtype).name}")
        check_finite(name, arr)
