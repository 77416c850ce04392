"""For learners and teachers: graph pictures, a guided walk, and a grader.

Every op here is an entry of the table of ops (:mod:`normgrad.core.table`), RMS norm
included; nothing in this package is written per op.

- :mod:`normgrad.learn.examples`: small seeded examples of any op.
- :mod:`normgrad.learn.explain`: the staged backward walked node by node (``normgrad explain``).
- :mod:`normgrad.learn.graph`: the computational graph as DOT/SVG/PNG (``normgrad graph``).
- :mod:`normgrad.learn.grader`: grades a learner's course-API functions (``normgrad check``),
  naming the known mistakes of :mod:`normgrad.learn.mistakes`.
"""
