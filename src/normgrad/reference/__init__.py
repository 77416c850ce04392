"""Answers to hold the library against: published derivations and PyTorch.

- :mod:`normgrad.reference.writeups`: three published derivations of the batch-norm
  backward, as code (the staged backward, the closed form, the Bessel-corrected formula;
  titles and authors in ``docs/sources.md``). NumPy only.
- :mod:`normgrad.reference.pytorch`: the same calls answered by PyTorch's autograd. It
  imports torch only when a comparison runs, so importing it costs nothing without torch.

Nothing here is imported by ``import normgrad``.
"""
