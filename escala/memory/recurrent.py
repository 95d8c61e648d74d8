"""What autograd keeps for the backward pass of a recurrent layer (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``).

An ``nn.LSTM`` on CPU in float32 runs oneDNN's fused LSTM (``aten::mkldnn_rnn_layer``, one call per
layer and direction); its derivative ``MkldnnRnnLayerBackward0`` (``tools/autograd/derivatives.yaml``,
``mkldnn_rnn_layer_backward``) keeps, for a layer of input width ``I`` and hidden width ``H`` over
``T`` steps of a batch of ``N`` (float32, ``s = 4`` bytes):

* its input, time-major ``(T, N, I)``: with ``batch_first`` that is a contiguous copy of the
  ``(N, T, I)`` input (``input.transpose(0, 1).contiguous()``), unless the input already is a
  time-major buffer seen batch-first (the output of the LSTM below it), which is then shared;
* its output ``(T, N, H)`` (the returned ``(N, T, H)`` is a transposed view of it; a bidirectional
  layer keeps each direction's output, not their concatenation);
* the initial states ``h_0, c_0`` (the zeros ``nn.LSTM`` creates, ``(L D, N, H)`` each, shared by all
  layers) and the final states ``h_T, c_T`` (``(N, H)`` each, per layer and direction);
* oneDNN's workspace (``uint8``): the cell's values that the LSTM derivative needs at every step,
  ``dc_{t-1} = dc_t * f_t`` and ``d[i, f, g, o]_t`` from ``i_t, f_t, g_t, o_t, c_{t-1}, c_t``, laid
  out as oneDNN's ``rnn_utils::set_offsets`` does (each part starts on a 4096-byte page; ``ld(d)``
  rounds ``d`` up to 16 floats and adds 16 if the result is a multiple of 256, 4K-aliasing)::

      gates        T N ld(4H) s        i, f, g, o of every step
      h_t          T N ld(H) s
      states       2 (T+1) N ld(max(I, H)) s      h of every step (the layer's input and its own)
      c states     2 (T+1) N H s
      diff states  2 (T+1) N ld(max(I, H)) s  x 2, and 2 (T+1) N H s (room for the backward)

So per step and sample an LSTM layer keeps about ``I + H`` (input, output) + ``4H`` (gates) + ``H``
(``h_t``) + ``2 (max(I, H) + H)`` (states) floats, plus the backward's ``2 max(I, H) + H`` that
oneDNN places in the same workspace.

GRU, vanilla RNN and LSTMs with ``proj_size`` run as unfused cells on CPU
(``aten/src/ATen/native/RNN.cpp``): the input projections of all steps are one Linear that keeps
the input flattened to ``(T N, I)`` (a copy per direction when batch-first), then per step and
sample the cell keeps, by the derivatives of its ops: vanilla RNN ``h_t`` (tanh/ReLU keep their
output, the next step's matmul reads it; plus ``h_0``), GRU ``7H`` (``h_{t-1}``, the activated gates
``r, z, n`` and the chunks of ``W_hh h_{t-1} + b_hh``), projected LSTM ``7H + P``; stacked layers
add the output of the layer below once. Both rules are checked against ``saved_tensors_hooks`` for
1 and 3 layers, one and two directions, batch-first or time-major (tests).

The estimate does not know the device: on GPU, cuDNN keeps its own reserve space instead of
oneDNN's workspace, so there the rule is an approximation (not measured).
"""

from __future__ import annotations

from torch import nn

_PAGE = 4096


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def good_ld(dim: int, itemsize: int = 4) -> int:
    """oneDNN's leading dimension: 64-byte aligned, never a multiple of 256 (``rnn_utils::get_good_ld``)."""
    ld = _round_up(dim, 64 // itemsize)
    return ld + 64 // itemsize if ld % 256 == 0 else ld


def onednn_lstm_workspace(steps: int, batch: int, input_size: int, hidden: int) -> int:
    """Bytes of oneDNN's training workspace for one float32 LSTM layer and direction (see module doc)."""
    t, n, h, s = steps, batch, hidden, 4
    ld = good_ld(max(input_size, h))
    parts = [
        t * n * good_ld(4 * h) * s,  # ws_gates
        t * n * good_ld(h) * s,  # ws_ht
        2 * (t + 1) * n * ld * s,  # ws_states_layer (= ws_states_iter)
        2 * (t + 1) * n * h * s,  # ws_states_iter_c
        2 * (t + 1) * n * ld * s,  # ws_diff_states_layer
        2 * (t + 1) * n * ld * s,  # ws_diff_states_iter
        2 * (t + 1) * n * h * s,  # ws_diff_states_iter_c
    ]
    offset = 0
    for size in parts:
        offset = _round_up(offset, _PAGE) + size
    return _round_up(offset, _PAGE)


def is_fused_lstm(mod: nn.Module) -> bool:
    """An ``nn.LSTM`` that PyTorch runs through oneDNN on CPU (no projection)."""
    return isinstance(mod, nn.LSTM) and getattr(mod, "proj_size", 0) == 0


def recurrent_saved(
    mod: nn.RNNBase, in_shape: tuple[int, ...], input_is_time_major: bool
) -> tuple[bool, bool, int]:
    """What ``mod`` keeps for backward on an input of ``in_shape``: (keeps its input's storage, keeps
    its own output's storage, extra bytes of tensors it creates only for backward), float32.

    ``input_is_time_major``: the input is a batch-first view of a contiguous time-major buffer (the
    output of a batch-first LSTM), which the layer can save without a copy.
    """
    if len(in_shape) == 2:  # unbatched (T, I)
        steps, batch = in_shape[0], 1
    elif mod.batch_first:
        batch, steps = in_shape[0], in_shape[1]
    else:
        steps, batch = in_shape[0], in_shape[1]
    width, h, s = in_shape[-1], mod.hidden_size, 4
    dirs = 2 if mod.bidirectional else 1
    layers = mod.num_layers
    copy_input = mod.batch_first and not input_is_time_major and len(in_shape) == 3
    if not is_fused_lstm(mod):
        out = getattr(mod, "proj_size", 0) or h
        # per step and sample: RNN h_t; GRU h_{t-1}, r, z, n and W_hh h_{t-1} (3H); LSTM with
        # projection c_{t-1}, i, f, g, o (4H), tanh(c_t), o * tanh(c_t) and the projected h_{t-1}
        per_step = {"RNN_TANH": h, "RNN_RELU": h, "GRU": 7 * h}.get(mod.mode, 7 * h + out)
        # The input flattened to (T N, I): a copy per direction when batch-first (a transposed input
        # does not flatten in place), else shared; each upper layer reads the one below's output.
        extra = dirs * steps * batch * width * s if copy_input else 0
        for layer in range(layers):
            if layer:
                extra += steps * batch * out * dirs * s
            extra += dirs * steps * batch * per_step * s
        if mod.mode.startswith("RNN_"):
            extra += layers * dirs * batch * h * s  # h_0 (h_1..h_T are the per-step term)
        return not copy_input, False, extra
    extra = 2 * layers * dirs * batch * h * s  # h_0, c_0
    share_input = False
    for layer in range(layers):
        size = width if layer == 0 else h * dirs
        for _ in range(dirs):
            extra += 2 * batch * h * s + onednn_lstm_workspace(steps, batch, size, h)  # h_T, c_T, workspace
        if layer == 0:
            if copy_input:
                extra += steps * batch * size * s  # the time-major copy of the input
            else:
                share_input = True
        else:
            extra += steps * batch * size * s  # the layer below's output (its own buffer)
    if dirs == 2:  # every layer keeps each direction's output; their concatenation is not kept
        return share_input, False, extra + layers * dirs * steps * batch * h * s
    return share_input, True, extra
