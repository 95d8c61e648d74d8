"""Imported once by the local executor's fork server so every trial forks with it already loaded.

A digits trial trains in a fraction of a second, but importing scikit-learn's data sets and the
part of torch that optimizers pull in lazily (``torch._dynamo``) takes seconds; paying that once per
search rather than once per trial is what makes many short trials cheap.
"""

import contextlib

import torch  # noqa: F401

import escala.train.launch  # noqa: F401

with contextlib.suppress(ImportError):
    import sklearn.datasets  # noqa: F401
with contextlib.suppress(ImportError):
    import torch._dynamo  # noqa: F401
