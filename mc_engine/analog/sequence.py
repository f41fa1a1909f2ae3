"""Attention and recurrent layers on analog matrices (docs/architecture.md, "Layers";
docs/physics.md, "Tile forward").

A layer of this module is an ordinary container of Linear-shaped matrices, each an
:class:`~mc_engine.analog.convert.AnalogLinear` (or, where layer sensitivity keeps it digital,
a plain ``nn.Linear`` with the same weight), so every mapping, device, periphery option and
execution applies to them unchanged. What multiplies activations by activations (the two
attention products, the gates of a recurrent cell) stays digital, as on every analog chip.

- ``nn.MultiheadAttention``: the packed ``in_proj_weight`` (3E × E) is one matrix
  ``<name>.in_proj`` (with kdim or vdim ≠ E: ``q_proj``, ``k_proj``, ``v_proj``), the output
  projection ``<name>.out_proj``. A packed matrix runs on every distinct input tensor (self
  attention: one MVM; cross attention: one per input, of which its rows are used). The
  attention itself is torch's own :func:`torch.nn.functional.multi_head_attention_forward` on
  the projected tensors (identity projections: exact), so masks, ``batch_first``, bias_kv,
  zero attention and the returned weights are torch's.
- ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``: per layer and direction ``<name>.l{k}[_reverse].ih``
  (input-hidden) and ``.hh`` (hidden-hidden), with ``proj_size``: ``.hr``. The input-hidden
  MVM of all time steps runs as one call (each (sample, step) row draws its own MVM noise:
  independent across steps); the recurrence runs the hidden-hidden matrix once per step, a
  fresh MVM each time (a new noise call) on the same programmed weights.

Every matrix call feeds its matrix batch-major rows (sample, then position), so a chip batch
(:mod:`mc_engine.analog.torch_chips`), whose chips are the leading block of the batch, sees
each chip's rows in the order the chip sees alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mc_engine.errors import UserInputError

RECURRENT = (nn.LSTM, nn.GRU, nn.RNN)
#: Modules made of several matrices (mapped by this module).
COMPOUND = (nn.MultiheadAttention, *RECURRENT)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A digital nn.Linear holding copies of ``weight`` (out × in) and ``bias``."""
    out_f, in_f = weight.shape
    lin = nn.Linear(in_f, out_f, bias=bias is not None, device=weight.device,
                    dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin.eval()


def parts(module: nn.Module, name: str = "") -> list[tuple[str, nn.Linear]]:
    """The matrices of a compound layer as (suffix, digital nn.Linear), in conversion order.
    UserInputError naming ``name`` for what is not mapped."""
    if isinstance(module, nn.MultiheadAttention):
        return _attention_parts(module)
    return _recurrent_parts(module, name)


def part_names(module: nn.Module) -> list[str]:
    """The suffixes of :func:`parts` (without building anything)."""
    if isinstance(module, nn.MultiheadAttention):
        qkv = ["in_proj"] if module._qkv_same_embed_dim else ["q_proj", "k_proj", "v_proj"]
        return [*qkv, "out_proj"]
    names = []
    for cell in _cells(module):
        names += [f"{cell}.ih", f"{cell}.hh"] + ([f"{cell}.hr"] if _proj(module) else [])
    return names


def build(module: nn.Module, made: dict[str, nn.Module], name: str = "") -> nn.Module:
    """The analog counterpart of ``module`` (qualified name ``name``) from its matrices
    ``made`` (suffix -> analog layer or digital nn.Linear)."""
    if isinstance(module, nn.MultiheadAttention):
        return AnalogMultiheadAttention(module, made)
    return AnalogRecurrent(module, made, name)


# ---- attention ----
def _attention_parts(mha: nn.MultiheadAttention) -> list[tuple[str, nn.Linear]]:
    e = mha.embed_dim
    b = mha.in_proj_bias
    out = mha.out_proj
    if mha._qkv_same_embed_dim:
        qkv = [("in_proj", _linear(mha.in_proj_weight.detach(), _detach(b)))]
    else:
        ws = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        qkv = [(f"{s}_proj", _linear(w.detach(), None if b is None else b[i * e:(i + 1) * e]
                                     .detach()))
               for i, (s, w) in enumerate(zip("qkv", ws))]
    return [*qkv, ("out_proj", _linear(out.weight.detach(), _detach(out.bias)))]


def _detach(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


class AnalogMultiheadAttention(nn.Module):
    """nn.MultiheadAttention with its projections on analog matrices (see the module doc).

    ``in_proj_weight`` and ``in_proj_bias`` are None here (the weights and biases live in the
    projection layers), which also keeps the fused fast paths of ``nn.Transformer*`` off: they
    would read the weights directly."""

    in_proj_weight = None
    in_proj_bias = None

    def __init__(self, mha: nn.MultiheadAttention, made: dict[str, nn.Module]):
        super().__init__()
        for attr in ("embed_dim", "kdim", "vdim", "num_heads", "head_dim", "dropout",
                     "batch_first", "add_zero_attn", "_qkv_same_embed_dim"):
            setattr(self, attr, getattr(mha, attr))
        for suffix, module in made.items():
            self.add_module(suffix, module)
        # bias_k/bias_v are added to the projected keys and values: digital.
        self.bias_k = None if mha.bias_k is None else nn.Parameter(mha.bias_k.detach().clone())
        self.bias_v = None if mha.bias_v is None else nn.Parameter(mha.bias_v.detach().clone())
        self.training = mha.training

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        project = {s: getattr(self, s) for s in ("in_proj", "q_proj", "k_proj", "v_proj",
                                                  "out_proj") if hasattr(self, s)}
        return attention_forward(self, project, query, key, value, key_padding_mask,
                                 need_weights, attn_mask, average_attn_weights, is_causal)


def _project(mha, project, query, key, value):
    """q, k, v from the batch-major inputs through the projections ``project``."""
    e = mha.embed_dim
    if not mha._qkv_same_embed_dim:
        return project["q_proj"](query), project["k_proj"](key), project["v_proj"](value)
    qkv = project["in_proj"](query)
    q = qkv[..., :e]
    kv = qkv if key is query else project["in_proj"](key)
    k = kv[..., e:2 * e]
    v = kv[..., 2 * e:] if value is key else project["in_proj"](value)[..., 2 * e:]
    return q, k, v


def attention_forward(mha, project: dict[str, Callable], query, key, value,
                      key_padding_mask=None, need_weights=True, attn_mask=None,
                      average_attn_weights=True, is_causal=False):
    """nn.MultiheadAttention.forward with the projections ``project`` (suffix -> callable on
    batch-major rows; the analog layers, or hardware-aware training's noisy forward) and the
    attention of torch (``mha``: the layer's sizes, flags, bias_k/bias_v, dropout)."""
    batched = query.dim() == 3
    # Batch-major rows for the matrices: (N, L, E) (batched), (L, E) (unbatched).
    same_kv, same_qk = key is value, query is key
    if batched and not mha.batch_first:
        query = query.transpose(0, 1)
        key = query if same_qk else key.transpose(0, 1)
        value = key if same_kv else value.transpose(0, 1)
    q, k, v = _project(mha, project, query, key, value)
    if batched:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))    # sequence first
    eye = torch.eye(mha.embed_dim, dtype=q.dtype, device=q.device)
    out, weights = F.multi_head_attention_forward(
        q, k, v, mha.embed_dim, mha.num_heads, None, None, mha.bias_k, mha.bias_v,
        mha.add_zero_attn, mha.dropout, eye, None, training=mha.training,
        key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
        use_separate_proj_weight=True, q_proj_weight=eye, k_proj_weight=eye,
        v_proj_weight=eye, average_attn_weights=average_attn_weights, is_causal=is_causal)
    if batched:
        out = project["out_proj"](out.transpose(0, 1))      # N, L, E
        out = out if mha.batch_first else out.transpose(0, 1)
    else:
        out = project["out_proj"](out)
    return out, weights


# ---- recurrent layers ----
def _cells(rnn: nn.Module) -> list[str]:
    return [f"l{k}{sfx}" for k in range(rnn.num_layers)
            for sfx in (("", "_reverse") if rnn.bidirectional else ("",))]


def _proj(rnn: nn.Module) -> int:
    return getattr(rnn, "proj_size", 0)


def _recurrent_parts(rnn: nn.Module, name: str) -> list[tuple[str, nn.Linear]]:
    if isinstance(rnn, nn.RNN) and rnn.nonlinearity not in ("tanh", "relu"):
        raise UserInputError(f"RNN nonlinearity {rnn.nonlinearity!r} is not supported",
                             key=f"model.{name}")
    out = []
    for cell in _cells(rnn):
        sfx = cell[1:]                                   # "0", "0_reverse"
        for m in ("ih", "hh"):
            bias = getattr(rnn, f"bias_{m}_l{sfx}").detach() if rnn.bias else None
            out.append((f"{cell}.{m}", _linear(getattr(rnn, f"weight_{m}_l{sfx}").detach(),
                                               bias)))
        if _proj(rnn):
            out.append((f"{cell}.hr", _linear(getattr(rnn, f"weight_hr_l{sfx}").detach(), None)))
    return out


def _lstm_step(gi, gh, state, hr):
    h, c = state
    i, f, g, o = (gi + gh).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return (h if hr is None else hr(h)), c


def _gru_step(gi, gh, state, hr):
    (h,) = state
    ir, iz, i_n = gi.chunk(3, -1)
    hr_, hz, h_n = gh.chunk(3, -1)
    r = torch.sigmoid(ir + hr_)
    z = torch.sigmoid(iz + hz)
    n = torch.tanh(i_n + r * h_n)
    return ((1 - z) * n + z * h,)


def _rnn_step(act: Callable[[torch.Tensor], torch.Tensor]):
    def step(gi, gh, state, hr):
        return (act(gi + gh),)
    return step


def step_function(rnn: nn.Module) -> Callable:
    """One time step of ``rnn``'s cell: (input part, hidden part, state, hr) -> state."""
    if isinstance(rnn, nn.LSTM):
        return _lstm_step
    if isinstance(rnn, nn.GRU):
        return _gru_step
    return _rnn_step(torch.tanh if rnn.nonlinearity == "tanh" else torch.relu)


class AnalogRecurrent(nn.Module):
    """nn.LSTM, nn.GRU or nn.RNN with its matrices on analog tiles (see the module doc): the
    cells ``l{k}[_reverse]`` hold ``ih``, ``hh`` (and ``hr``); gates digital. Called and
    returning like the original (inputs batched or not, ``batch_first``, initial states);
    PackedSequence inputs are not supported."""

    def __init__(self, rnn: nn.Module, made: dict[str, nn.Module], name: str = ""):
        super().__init__()
        self.kind = type(rnn).__name__
        self.name = name
        self.num_layers, self.bidirectional = rnn.num_layers, rnn.bidirectional
        self.batch_first, self.hidden_size = rnn.batch_first, rnn.hidden_size
        self.proj_size, self.dropout = _proj(rnn), rnn.dropout
        self.training = rnn.training
        for cell in _cells(rnn):
            self.add_module(cell, nn.ModuleDict(
                {k: made[f"{cell}.{k}"] for k in ("ih", "hh", "hr") if f"{cell}.{k}" in made}))
        self._step = step_function(rnn)

    def forward(self, x, hx=None):
        cells = {c: dict(getattr(self, c).items()) for c in _cells(self)}
        return recurrent_forward(self, self.kind, self._step, cells, x, hx, self.name)


def recurrent_forward(rnn, kind: str, step: Callable, cells: dict[str, dict[str, Callable]],
                      x, hx=None, name: str = ""):
    """The forward of an LSTM, GRU or RNN (``rnn``: its sizes and flags) with the matrices
    ``cells`` (cell -> {'ih', 'hh'[, 'hr']} -> callable on batch-major rows) and the cell's
    ``step``."""
    if isinstance(x, nn.utils.rnn.PackedSequence):
        raise UserInputError(f"{kind} on analog tiles takes padded tensors, not a "
                             "PackedSequence", key=f"model.{name}")
    lstm = kind == "LSTM"
    batched = x.dim() == 3
    if not batched:
        x = x.unsqueeze(0)
    elif not rnn.batch_first:
        x = x.transpose(0, 1)                                # batch-major: N, T, in
    n, steps = x.shape[0], x.shape[1]
    d = 2 if rnn.bidirectional else 1
    h_size = _proj(rnn) or rnn.hidden_size
    if hx is None:
        zeros = x.new_zeros(rnn.num_layers * d, n, h_size)
        states = [zeros, x.new_zeros(rnn.num_layers * d, n, rnn.hidden_size)] if lstm \
            else [zeros]
    else:
        states = list(hx) if lstm else [hx]
        if not batched:
            states = [s.unsqueeze(1) for s in states]
    finals: list[list[torch.Tensor]] = [[] for _ in states]
    for layer in range(rnn.num_layers):
        outs = []
        for direction in range(d):
            k = layer * d + direction
            cell = cells[f"l{layer}{'_reverse' if direction else ''}"]
            gi = cell["ih"](x)                              # N, T, gates: one call, all steps
            state = tuple(s[k] for s in states)
            hr = cell.get("hr")
            hs = [None] * steps
            for t in (reversed(range(steps)) if direction else range(steps)):
                state = step(gi[:, t], cell["hh"](state[0]), state, hr)
                hs[t] = state[0]
            outs.append(torch.stack(hs, 1))
            for f, s in zip(finals, state):
                f.append(s)
        x = outs[0] if d == 1 else torch.cat(outs, -1)
        if rnn.dropout and rnn.training and layer < rnn.num_layers - 1:
            x = F.dropout(x, rnn.dropout, True)             # between layers, as torch
    out = x if (not batched or rnn.batch_first) else x.transpose(0, 1)
    final = [torch.stack(f) for f in finals]
    if not batched:
        out, final = out.squeeze(0), [f.squeeze(1) for f in final]
    return out, (tuple(final) if lstm else final[0])
