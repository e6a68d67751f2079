"""Keras model (typed layer graph from `seqserve.keras`) -> ONNX model + signature.

Public API: `export_model(src, name, store=..., version=None, stateful=None, target="cpu",
progress=True) -> ExportReport`.

Module layout
-------------
- `api.py`        export_model / ExportReport: store layout, temp dir + rename, signature.
- `convert.py`    walks the layer graph in dependency order and calls one converter per layer call.
- `builder.py`    GraphBuilder: unique names, initializers/constants, nodes, Scan bodies (`sub()`),
                  model-local functions (`add_function`, domain `seqserve`), OPSET / IR_VERSION.
- `context.py`    Value, CallValues, ConvertContext (what a converter gets).
- `registry.py`   CONVERTERS and the `@register("ClassName", ...)` decorator.
- `activations.py` Keras activations as ONNX nodes (hard_sigmoid per Keras version).
- `target.py`     Target: the execution provider exported for, and what it runs fused.
- `recurrent/`    recurrent layers: cells from configs and state plumbing (`layer.py`), and the
                  graph forms, one module each: `fused.py` (the ONNX LSTM/GRU op), `scan.py`,
                  `padded.py` (fused op or Scan, chosen on the mask). The cell kinds themselves
                  (weights, step, fused op) are `seqserve.cells`, shared with the reference.
- `layers/*.py`   one module per layer family; every module in `layers/` is imported automatically.

At export the graph is run in ONNX Runtime on random inputs and random states and compared with
`seqserve.reference` (NumPy, float64, Keras semantics): that is the signature's parity figure
("not measured" when the model holds a layer class the reference lacks, e.g. ConvLSTM2D).
Nested models are inlined by the reader; a recurrent layer called more than once (shared
weights) gets one set of states per call (`<layer>`, `<layer>@1`, ...).

Converter contract
------------------
A converter is `fn(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]`, registered
with `@register("KerasClass")` in a module under `seqserve/export/layers/` (no other file changes
are needed). It is called once per call of the layer in the Keras graph.

- `layer.config` is the Keras config dict, `layer.weights` the arrays in `get_weights()` order.
  Validate them with `ctx.weights(layer, shapes, names)`, which raises ExportError naming the file
  and layer on a missing weight or a shape not matching the config. Raise every other problem as
  `ctx.error(layer, "...")`.
- `call.inputs` are the positional input Values (name, Keras shape batch-first with None for free
  dims, ONNX elem type, and `mask`: a BOOL [batch, time] tensor name or None);
  `call.initial_state` the Values passed as `initial_state` (or, Keras 3, as the second positional
  argument of a recurrent layer). `call.mask` is the mask Keras' `call()` gets: `call.x.mask`, or
  None where Keras runs the call unmasked (`call.masked` False: a Keras 3 call with more than one
  tensor argument, e.g. `lstm(x, initial_state=[h, c])`, and no explicit `mask=`; Keras 2 masks
  such calls). Compute with `call.mask`; derive output masks (compute_mask) from `call.x.mask`.
- Build nodes with `ctx.b` (`op`, `const`, `i64`, `sub` for Scan/Loop bodies, `add_function` for a
  model-local function in domain `builder.LOCAL_DOMAIN`). Return the call's outputs in Keras' order
  (output, then states when return_state), with the right output mask (Keras' compute_mask).
  Which tensors are states and whether the call is masked follow `seqserve.keras.calls`.
- Recurrent state: for each state K of the layer, `ctx.state_input(layer.name, K, shape_without_batch)`
  creates graph input `state_in.<layer>.K`; use it unless `call.initial_state` is given; then
  `ctx.state_output(layer.name, K, final_tensor)`. Append the layer name to `ctx.stateful_layers`
  if its config says stateful. `recurrent.emit_recurrent_layer` does all of this for cell-based layers.
- `ctx.target` is a `Target` (`target.py`): emit only forms it runs (for CUDA: no RNN-family op
  with non-default activations, activation_alpha/beta, clip, or GRU linear_before_reset=0).
- `ctx.keras_major` is the Keras major version that wrote the file.
"""

from seqserve.export.api import ExportReport, export_model

__all__ = ["ExportReport", "export_model"]
