"""Training-free few-shot node classification baselines (issue 17): pure functions, one concept per module.

- :mod:`~cmlgraph.baselines.propagation`: SGC's propagated features ``S^K X`` (Wu et al., ICML 2019).
- :mod:`~cmlgraph.baselines.proto`: nearest class mean, cosine (prototypes; Snell et al., NeurIPS 2017).
- :mod:`~cmlgraph.baselines.label_prop`: APPNP-style propagation of the support labels (Klicpera et al., ICLR 2019).
- :mod:`~cmlgraph.baselines.logreg`: per-task logistic regression (the linear probe of TLP, Tan et al., LoG 2022).
- :mod:`~cmlgraph.baselines.grace`: GRACE contrastive pretraining without labels (Zhu et al., 2020), as TLP uses it.
"""
