"""For learners and teachers: graph pictures, a guided walk, and a grader.

- :mod:`normgrad.learn.examples`: small seeded examples of each op.
- :mod:`normgrad.learn.explain`: the backward pass walked step by step (``normgrad explain``).
- :mod:`normgrad.learn.graph`: the computational graph as DOT/SVG/PNG (``normgrad graph``).
- :mod:`normgrad.learn.grader`: grades a learner's course-API functions (``normgrad check``).
"""
