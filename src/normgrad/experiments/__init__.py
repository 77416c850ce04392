"""Reproductions of published experiments (``normgrad reproduce NAME``).

- :mod:`normgrad.experiments.ioffe2015`: Figure 1 of Ioffe & Szegedy (2015);
- :mod:`normgrad.experiments.weight_scale`: the CS231n weight-scale and batch-size study;
- :mod:`normgrad.experiments.report`: the dataset default, output directory, CSVs, plots
  and Markdown reports they share.

Each experiment module has ``run(out_dir, ...)``, which returns a small result dataclass.
"""

#: ``normgrad reproduce`` names -> module under normgrad.experiments.
EXPERIMENTS = {"ioffe2015": "ioffe2015", "weight-scale": "weight_scale"}
