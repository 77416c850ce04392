"""For learners and teachers: graph pictures, a guided walk, and a grader.

Every op here is an entry of the table of ops (:mod:`normgrad.core.table`), RMS norm
included; nothing in this package is written per op.

- :mod:`normgrad.learn.examples`: small seeded examples of any op.
- :mod:`normgrad.learn.explain`: the staged backward walked node by node (``normgrad explain``).
- :mod:`normgrad.learn.graph`: the computational graph as DOT/SVG/PNG (``normgrad graph``).
- :mod:`normgrad.learn.grader`: grades a learner's course-API functions (``normgrad check``),
  naming the known mistakes of :mod:`normgrad.learn.mistakes`; the file imported by
  :mod:`normgrad.learn.loading`, each call isolated by :mod:`normgrad.learn.isolation`;
  the result a :mod:`normgrad.learn.report`.
- :mod:`normgrad.learn.notebook`: ``check`` and ``picture`` for a notebook
  (``from normgrad.learn import check, picture``).
"""


def check(target=None, **kwargs):
    """Grade a notebook's, module's, file's or one function's course-API functions; see
    :func:`normgrad.learn.notebook.check`. With no argument: the caller's globals."""
    from normgrad.learn import notebook

    if target is None:
        import inspect

        frame = inspect.currentframe()
        target = dict(frame.f_back.f_globals) if frame and frame.f_back else {}
    return notebook.check(target, **kwargs)


def picture(op: str = "batch_norm", shape=None, **options):
    """The graph picture of ``op``'s example, shown inline in a notebook; see
    :func:`normgrad.learn.notebook.picture`."""
    from normgrad.learn import notebook

    return notebook.picture(op, shape, **options)
