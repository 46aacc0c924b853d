"""The table of operations a model's layers run as, its workspace, and its Python twin.

The compiled engine (bpcore/_network.pyx) runs a model as a table of operations, each reading
the output of one before it (``src``, -1 for the batch X):

    dense        z_in = z_out_prev @ W + b;  z_out = sigma(z_in)
    activation   z_out = sigma(z_in)
    dropout      z_out = z_in * mask / (1 - rate)         (training; the identity in inference)
    layer_norm   z_out = gamma (z_in - mu_row) / sqrt(var_row + eps) + beta
    batch_norm   z_out = gamma (z_in - mu_col) / sqrt(var_col + eps) + beta
    fork, add    a residual block: z_out = block(z_in) + z_in

``operations`` builds that table from the layers (once per model), ``Workspace`` holds the
per-operation buffers for one batch size, and ``forward`` / ``backward`` are the twin: the same
kernels called one per operation from Python, in the engine's order, so the tests can hold the
engine to them bit for bit. A Dense's folded Dropout (``layer.dropout``, the form of the files
of format 1) is its own dropout operation here.
"""

import numpy as np

import bpcore
from bpcore import (_activation, _batch_norm, _dense, _dense_forward, _dropout, _error_signal,
                    _layer_norm, _loss, _residual)

from . import regularizers as _regularizers
from .layers import LAYER_TYPES, Dropout, Input, Residual

PARAMETRIC = ("dense", "layer_norm", "batch_norm")


# ---- the layers' widths and the flat layout -------------------------------------------------


def walk(layers):
    """Every layer in forward order, a Residual before the layers of its block."""
    for layer in layers:
        yield layer
        if layer._kind == "residual":
            yield from walk(layer.layers)


def layer_widths(layers, n_in):
    """[n_in, output width of each layer], after checking that each Dense's own input_dim (if
    it has one) is the width it receives and that each Residual block keeps its width."""
    widths = [n_in]
    for i, layer in enumerate(layers):
        if layer._kind == "dense":
            if layer.input_dim is not None and layer.input_dim != widths[i]:
                raise ValueError(f"layer {i} ({layer!r}) expects input_dim={layer.input_dim} "
                                 f"but receives {widths[i]} features")
            widths.append(layer.units)
            continue
        if layer._kind == "residual":
            out = layer_widths(layer.layers, widths[i])[-1]
            if out != widths[i]:
                raise ValueError(f"a Residual block must keep its width: its input is "
                                 f"{widths[i]} wide. Received: a block whose output is {out} "
                                 f"wide ({layer!r})")
        widths.append(widths[i])
    return widths


def dense_inputs(layers, n_in):
    """(Dense layer, its input width) of every Dense in forward order, after every width check
    (layer_widths'), changing nothing."""
    found = []

    def visit(layers, n):
        widths = layer_widths(layers, n)
        for layer, width in zip(layers, widths):
            if layer._kind == "dense":
                found.append((layer, width))
            elif layer._kind == "residual":
                visit(layer.layers, width)

    visit(layers, n_in)
    return found


def new_running_statistics(layers, dtype):
    """A BatchNormalization's running mean (0) and variance (1), once, at build."""
    for layer in walk(layers):
        if layer._kind == "batch_norm" and layer.running is None:
            layer.running = np.concatenate([np.zeros(layer.input_dim), np.ones(layer.input_dim)]
                                           ).astype(dtype)


def running_layers(layers):
    """The BatchNormalization layers, whose running statistics a file keeps (running_<k>)."""
    return [layer for layer in walk(layers) if layer._kind == "batch_norm"]


def check_training_rows(layers, n, batch_size, accumulate=1):
    """ValueError if a model with a BatchNormalization would meet a training batch of one row
    (its variance is 0 over one row: PyTorch refuses it too). Called before anything changes."""
    if not any(layer._kind == "batch_norm" for layer in walk(layers)):
        return
    batch_size = min(batch_size, n)
    rest = n % (batch_size * accumulate)
    if batch_size == 1 or (rest and rest % batch_size == 1):
        raise ValueError(f"BatchNormalization needs at least 2 rows in every training batch. "
                         f"Received: {n} rows in batches of batch_size={batch_size}"
                         + (f" (accumulate={accumulate})" if accumulate > 1 else "")
                         + ", which leaves a batch of 1 row; change batch_size or drop a row")


def output_width(layers, n_in):
    """The width of the model's output for inputs n_in wide."""
    last = layers[-1]
    return last.units if last.units is not None else layer_widths(layers, n_in)[-1]


def set_widths(layers, n_in):
    """Record each layer's input width (input_dim), the blocks' layers included."""
    widths = layer_widths(layers, n_in)
    for layer, n in zip(layers, widths):
        layer.input_dim = n
        if layer._kind == "residual":
            set_widths(layer.layers, n)


def input_dim_of(input_shape, input_dim):
    """Keras' input_shape=(n,) as an input width (bp.Input's rule), or input_dim without it."""
    if input_shape is None:
        return input_dim
    n = Input(shape=input_shape).n
    if input_dim is not None and input_dim != n:
        raise ValueError(f"give input_dim or input_shape, not both. Received: "
                         f"input_dim={input_dim!r}, input_shape={input_shape!r}")
    return n


def append_layer(layers, layer, owner, input_dim, built=False):
    """Sequential.add: append `layer` to the model's `layers` (a Dropout right after a Dense
    folds into it); returns the input width (bp.Input(n), first, sets it)."""
    if built and not isinstance(layer, Input):
        raise ValueError("cannot add a layer to a built model (its parameters are allocated); "
                         "build a new Sequential")
    if isinstance(layer, Input):
        if layers or (input_dim is not None and input_dim != layer.n):
            raise ValueError(f"an Input comes first and once. Received: {layer!r} after "
                             f"{len(layers)} layers, input_dim={input_dim}")
        return layer.n
    if not isinstance(layer, LAYER_TYPES):
        raise TypeError(f"Sequential holds bp layers ({', '.join(t.__name__ for t in LAYER_TYPES)}"
                        f"). Received: {type(layer).__name__}")
    if layer._kind == "dropout":
        attach_dropout(layers, layer)
        return input_dim
    if layer._owner is not None:
        raise ValueError(f"{layer!r} already belongs to another model; use a new Dense")
    if layer.built:
        raise ValueError(f"{layer!r} was built on its own; add an unbuilt layer")
    layers.append(layer)
    for each in walk([layer]):
        each._owner = owner
    return input_dim


def attach_dropout(layers, dropout):
    """Fold a Dropout into the Dense layer before it (its output is what gets dropped; the form
    files of format 1 hold); rate 0 attaches nothing, so the model is the one without the layer,
    bit for bit. Anywhere else (first, after another kind of layer) it is a layer of its own."""
    if not layers or layers[-1]._kind != "dense" or layers[-1].dropout is not None:
        layers.append(dropout)
        return
    layer = layers[-1]
    if layer.activation == "softmax":
        raise ValueError("a Dropout after a softmax layer is refused: softmax's derivative is "
                         "not elementwise, so the mask cannot be applied to its error signal")
    if dropout.rate > 0:
        layer.dropout = dropout


def draw_dropout_seeds(layers, rng):
    """Give each Dropout without a seed one from the model's generator (at build, after the
    weights: a model without dropout draws what it always drew)."""
    for layer in walk(layers):
        dropout = layer if layer._kind == "dropout" else layer.dropout
        if dropout is not None and dropout._key is None:
            dropout._key = int(rng.integers(2**63))


def parametric(layers):
    """The layers with parameters (Dense, the normalisations), in forward order."""
    return [layer for layer in walk(layers) if layer._kind in PARAMETRIC]


def flat_layout(layers, input_dims=None):
    """Where each layer's parameters live in the flat buffers, per layer with parameters
    (``parametric``): (n_in, n_out, offset of W, offset of b or -1), W (n_in x n_out,
    row-major) then b; for a normalisation (0, width, offset of gamma or -1, of beta or -1).
    Returns the list and the total size. input_dims: the Dense layers' (default their
    input_dim)."""
    layout, offset = [], 0
    dims = iter(input_dims if input_dims is not None else [])
    for layer in parametric(layers):
        if layer._kind != "dense":
            width = layer.input_dim
            w_off = b_off = -1
            if layer.scale:
                w_off, offset = offset, offset + width
            if layer.center:
                b_off, offset = offset, offset + width
            layout.append((0, width, w_off, b_off))
            continue
        n_in = next(dims) if input_dims is not None else layer.input_dim
        w_off, offset = offset, offset + n_in * layer.units
        b_off = -1
        if layer.use_bias:
            b_off, offset = offset, offset + layer.units
        layout.append((n_in, layer.units, w_off, b_off))
    return layout, offset


def split(flat, layout):
    """(W, b) views into a flat buffer, one pair per layer of the layout (b None without bias);
    a normalisation's (gamma, beta), each (width,) or None."""
    return [((flat[w_off:w_off + n_out] if w_off >= 0 else None) if n_in == 0
             else flat[w_off:w_off + n_in * n_out].reshape(n_in, n_out),
             None if b_off < 0 else flat[b_off:b_off + n_out])
            for n_in, n_out, w_off, b_off in layout]


def initial_params(layers, input_dims, initial_W, dtype):
    """A new flat parameter buffer: each Dense's W from initial_W, every bias zero; a
    normalisation's gamma one and beta zero."""
    layout, size = flat_layout(layers, input_dims)
    params = np.empty(size, dtype)
    initial_W = iter(initial_W)
    for (W, b), (n_in, _, _, _) in zip(split(params, layout), layout):
        if W is not None:
            W[...] = next(initial_W) if n_in else 1
        if b is not None:
            b[...] = 0
    return params


# ---- layers as config entries, and the features that take Dense stacks only --------------


LAYER_CLASSES = {cls.__name__: cls for cls in LAYER_TYPES}


def layer_config(layer):
    """A layer's entry in a model's config: a Dense's own config (with its folded Dropout, the
    form of format 1), any other layer as {"class_name", "config"}."""
    if layer._kind == "dense":
        return layer.get_config()
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def layers_from_config(configs):
    """The layers a list of config entries (layer_config's) describes."""
    layers = []
    for cfg in configs:
        name = cfg.get("class_name", "Dense")
        cfg = dict(cfg["config"] if "class_name" in cfg else cfg)
        if name not in LAYER_CLASSES:
            raise ValueError(f"unknown layer class. Received: class_name={name!r}")
        if name == "Residual":
            layers.append(Residual(layers_from_config(cfg.pop("layers")), **cfg))
            continue
        dropout = cfg.pop("dropout", None) if name == "Dense" else None
        layers.append(LAYER_CLASSES[name](**cfg))
        if dropout is not None:
            layers.append(Dropout(**dropout))
    return layers


def refuse_beyond_dense(layers, what):
    """ValueError naming the first layer that is not a Dense (a Dense's folded Dropout is part
    of it), for the features that handle Dense stacks only so far."""
    other = [layer for layer in layers if layer._kind != "dense"]
    if other:
        raise ValueError(f"{what}: only models of Dense layers (and the Dropouts after them) so "
                         f"far. Received: a model with {other[0]!r}")


# ---- the table of operations ----------------------------------------------------------------


def operations(layers, layout):
    """The table of operations (a list of dicts, the engine's Network(ops) argument) of the
    built layers, with layout the flat parameter layout (flat_layout: one
    (n_in, n_out, w_off, b_off) per layer with parameters, in forward order). Each entry also
    keeps its ``layer`` and, for a layer with parameters, ``param_index`` (its place in the
    layout)."""
    ops = []
    layout = iter(enumerate(layout))
    params_before = [False]

    def add(kind, width, layer, n_out=None, **spec):
        src = len(ops) - 1
        spec.update(kind=kind, src=src, n_in=width, n_out=width if n_out is None else n_out,
                    layer=layer, send_back=src >= 0 and params_before[0])
        ops.append(spec)
        params_before[0] |= kind in PARAMETRIC
        return len(ops) - 1

    def dropout(dropout, width, layer):
        if dropout.rate > 0:  # rate 0: the model without the layer, bit for bit
            add("dropout", width, layer, rate=dropout.rate, seed=dropout._key,
                threshold=_dropout.threshold(dropout.rate), scale=1.0 / (1.0 - dropout.rate))

    def emit(layers):
        for layer in layers:
            kind, width = layer._kind, layer.input_dim
            if kind == "dense":
                k, (n_in, n_out, w_off, b_off) = next(layout)
                add("dense", n_in, layer, n_out, act=bpcore.ACTIVATIONS[layer.activation],
                    alpha=float(layer.alpha), w_off=w_off, b_off=b_off, param_index=k,
                    penalties=(*_regularizers.coefficients(layer.kernel_regularizer),
                               *_regularizers.coefficients(layer.bias_regularizer)))
                if layer.dropout is not None:
                    dropout(layer.dropout, n_out, layer)
            elif kind == "dropout":
                dropout(layer, width, layer)
            elif kind == "activation":
                add("activation", width, layer, act=bpcore.ACTIVATIONS[layer.activation],
                    alpha=float(layer.alpha))
            elif kind in ("layer_norm", "batch_norm"):
                k, (_, _, w_off, b_off) = next(layout)
                add(kind, width, layer, w_off=w_off, b_off=b_off, param_index=k,
                    eps=float(layer.epsilon), momentum=float(getattr(layer, "momentum", 0.0)),
                    **({"running": layer.running} if kind == "batch_norm" else {}))
            else:  # residual: fork, the block, add
                fork = add("fork", width, layer)
                emit(layer.layers)
                ops[fork]["link"] = add("add", width, layer, link=fork)

    emit(layers)
    # each operation's layer in model.layers (a block's operations: their Residual's index)
    top = {id(each): k for k, layer in enumerate(layers) for each in walk([layer])}
    for op in ops:
        op["top"] = top[id(op["layer"])]
    return ops


class Workspace:
    """Per-batch-size buffers of one model: per operation its output z_out, its error signal
    delta (g = dL/dz_out; a dense's becomes dL/dz_in), z_in (dense: before sigma; norms: xhat),
    a dropout's mask and a norm's statistics (None where an operation has none), and room to
    gather a shuffled batch (X, Y, w) into.

    Allocated once for each batch size a model meets and reused for every batch of that size,
    so a steady-state training step allocates nothing.
    """

    def __init__(self, ops, dtype, n_in, n_rows):
        self.n_rows = n_rows

        def each(kinds, shape, buffer_dtype=dtype):
            return [np.empty(shape(op), buffer_dtype) if op["kind"] in kinds else None
                    for op in ops]

        rows = lambda op: (n_rows, op["n_out"])  # noqa: E731
        self.z_in = each(("dense", "layer_norm", "batch_norm"), rows)
        self.z_out = each(("dense", "activation", "dropout", "layer_norm", "batch_norm", "add"),
                          rows)
        self.delta = [np.empty(rows(op), dtype) for op in ops]
        self.mask = each(("dropout",), rows, np.uint8)
        self.stats = [np.empty(n_rows if op["kind"] == "layer_norm" else 4 * op["n_out"])
                      if op["kind"] in ("layer_norm", "batch_norm") else None for op in ops]
        self.per_sample = np.empty(n_rows, dtype)
        self.X = np.empty((n_rows, n_in), dtype)
        self.Y = np.empty((n_rows, ops[-1]["n_out"]), dtype)
        self.w = np.empty(n_rows, dtype)


def _param(views, op, which):
    """An operation's W/gamma (which 0) or b/beta (1) from (W, b) views, by its offsets."""
    return views[op["param_index"]][which] if "param_index" in op else None


def forward(ops, views, X, ws, n_threads, draw=None):
    """The forward pass of every operation into ws (rows = len(X)); returns the list of the
    outputs each operation leaves for the next (a dropout in inference and a fork pass their
    input on). Inference unless draw (training batch `draw`: dropout masks, batch statistics)."""
    rows = X.shape[0]
    cur = []
    for i, op in enumerate(ops):
        kind = op["kind"]
        x = X if op["src"] < 0 else cur[op["src"]]
        out = None if ws.z_out[i] is None else ws.z_out[i][:rows]
        W, b = _param(views, op, 0), _param(views, op, 1)
        if kind == "dense":
            _dense_forward.dense_forward(x, W, b, ws.z_in[i][:rows], out, op["act"], op["alpha"],
                                         n_threads)
        elif kind == "activation":
            _activation.activation_forward(x, op["act"], op["alpha"], out, n_threads)
        elif kind == "dropout":
            if draw is None:
                out = x
            else:
                _dropout.dropout_forward(x, op["seed"], draw, op["rate"], ws.mask[i][:rows], out,
                                         n_threads)
        elif kind == "layer_norm":
            _layer_norm.layer_norm_forward(x, W, b, op["eps"], ws.z_in[i][:rows],
                                           ws.stats[i][:rows], out, n_threads)
        elif kind == "batch_norm":
            _batch_norm.batch_norm_forward(x, W, b, op["eps"], draw is not None, op["momentum"],
                                           op["running"], ws.z_in[i][:rows], ws.stats[i], out,
                                           n_threads)
        elif kind == "fork":
            out = x
        else:  # add
            _residual.add(x, cur[op["link"]], out)
        cur.append(out)
    return cur


def backward(ops, views, grad_views, X, Y, w, ws, loss, scale, beta, n_threads, draw=None):
    """Forward, loss, error signals and gradients (grad = beta grad + this batch's) of one batch,
    one kernel call per operation and pass, in the engine's order; returns the batch loss."""
    rows = X.shape[0]
    cur = forward(ops, views, X, ws, n_threads, draw)
    out = ops[-1]
    code = bpcore.LOSSES[loss]
    f_in = ws.z_in[-1][:rows] if out["kind"] == "dense" else (
        X if out["src"] < 0 else cur[out["src"]])
    value = _loss.loss_value(f_in, cur[-1], Y, w, code, scale, ws.per_sample, n_threads)
    target = ws.delta[-1] if out["kind"] == "dense" else (
        ws.delta[out["src"]] if out["send_back"] else None)
    if target is not None:
        _error_signal.output_delta(f_in, cur[-1], Y, w, code, out["act"], out["alpha"], scale,
                                   target[:rows], n_threads)
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        kind = op["kind"]
        x = X if op["src"] < 0 else cur[op["src"]]
        g = ws.delta[i][:rows]
        g_prev = ws.delta[op["src"]][:rows] if op["send_back"] else None
        W = _param(views, op, 0)
        gW, gb = _param(grad_views, op, 0), _param(grad_views, op, 1)
        if kind == "dense":
            _dense.dense_backward(x, W, ws.z_in[i][:rows], ws.z_out[i][:rows], op["act"],
                                  op["alpha"], i == len(ops) - 1, beta, g, gW, gb, g_prev,
                                  n_threads)
        elif kind == "layer_norm":
            _layer_norm.layer_norm_backward(ws.z_in[i][:rows], ws.stats[i][:rows], g, W, beta,
                                            gW, gb, g_prev, n_threads)
        elif kind == "batch_norm":
            _batch_norm.batch_norm_backward(ws.z_in[i][:rows], ws.stats[i], g, W,
                                            draw is not None, beta, gW, gb, g_prev, n_threads)
        elif g_prev is None or (kind == "activation" and i == len(ops) - 1):
            continue
        elif kind == "activation":
            _activation.activation_backward(x, ws.z_out[i][:rows], g, op["act"], op["alpha"],
                                            g_prev, n_threads)
        elif kind == "dropout":
            if draw is None:
                g_prev[...] = g
            else:
                _dropout.dropout_backward_into(ws.mask[i][:rows], g, op["rate"], g_prev,
                                               n_threads)
        elif kind == "fork":
            _residual.add(g, ws.delta[op["link"]][:rows], g_prev)
        else:  # add: the block's last operation receives g unchanged
            g_prev[...] = g
    return value
