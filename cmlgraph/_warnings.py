"""Silence torch's beta notice for sparse CSR tensors, which cmlgraph uses on purpose for sparse features."""

import warnings

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
