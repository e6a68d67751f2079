"""Recurrent layers as ONNX: every cell kind (`seqserve.cells`) in one of three graph forms.

- fused (`fused.py`): the cell's exact ONNX op (`Cell.fused`: LSTM, GRU with default activations),
  always run forward over Keras' steps in Keras' order (go_backwards reverses the input in the
  `Gather` that makes it time-major);
- scan (`scan.py`): the input projection of all timesteps as one MatMul outside, then a `Scan`
  over time whose body is each cell's `onnx_step`. Exact for every activation, any mask
  (front/back padding, holes) and stacked cells, and runs on ORT's CUDA EP where the fused op with
  other activations would fall back to the CPU;
- padded (`padded.py`), for a masked layer whose cell has a fused op: an `If` on the data. A batch
  whose rows are each back-padded or front-padded (Keras' `pad_sequences` default), none empty,
  runs the fused op with `sequence_lens`, each row's valid steps moved first and the outputs moved
  back by two `Gather`s that also do the time-major transposes and fill the masked steps as Keras
  does; any other mask (holes, empty rows) runs the Scan form.

Which form runs is `layer.run_recurrent`'s choice. SimpleRNN has no fused form (the ONNX `RNN` op
is slower, DESIGN.md); the export target decides what else may be fused (`seqserve.export.target`:
`--target cuda` never emits a GRU with linear_before_reset=0, which ORT's CUDA EP runs on the CPU).

Masking follows Keras 3 (`keras/src/backend/*/rnn.py`): at a masked step every state keeps its
value and the output is the previous output (zeros before the first valid step), or zeros when
`zero_output_for_mask` is set (Bidirectional sets it when returning sequences). Which calls are
masked at all follows the Keras generation that wrote the file (`seqserve.keras.calls`): Keras 3
runs a layer given `initial_state` unmasked, though its output still carries the input's mask.
"""

from seqserve.export.recurrent.layer import build_cells, emit_recurrent_layer, recurrent_layer
from seqserve.export.recurrent.options import RecurrentOptions

__all__ = ["RecurrentOptions", "build_cells", "emit_recurrent_layer", "recurrent_layer"]
