"""The training-free baselines of issue 17 as algorithms of the one run pipeline (``--algo NAME``, graph task).

They have no meta-training: a run of one skips the training loop (0 steps), chooses its few settings on the run's
validation tasks (:meth:`TrainingFree.fit`, recorded in ``summary.json["baseline"]``) and is scored on the same
fixed test tasks, with the same scoring, as a meta-learning run with the same data settings and seed. Each reads the
whole graph through the episode's :class:`~cmlgraph.graphs.GraphInput` (its features, edges and the task's node
ids), so ``cmlgraph eval``, ``predict RUN_DIR`` and ``predict --method NAME`` (no run folder) use the same
:meth:`predict` call the run's evaluation makes.

- ``sgc-proto``: nearest class mean, cosine, on ``S^K X`` (SGC, Wu et al., ICML 2019; :mod:`cmlgraph.baselines.proto`).
- ``label-prop``: APPNP-style propagation of the support labels (Klicpera et al., ICLR 2019); a query the
  propagation never reaches gets no answer (a NaN row: scored as wrong, counted as ``unreached_queries``).
- ``sgc-logreg``: per-task logistic regression on the L2-normalised rows of ``S^K X``.
- ``gcl-probe``: TLP's recipe (Tan et al., LoG 2022): GRACE pretraining without labels (Zhu et al., 2020;
  :mod:`cmlgraph.baselines.grace`), then a per-task logistic-regression probe on the frozen, min-max scaled
  embeddings.

Their state (the chosen settings and, for ``gcl-probe``, the encoder) lives in ``model.baseline`` and is saved in
``model.pt``; the GNN extractor and head every run folder holds are unused.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmlgraph.algorithms.base import MetaAlgorithm, MetaStep
from cmlgraph.config import AlgoConfig
from cmlgraph.core.episode import Episode
from cmlgraph.core.functional import LossFn
from cmlgraph.core.model import MetaModel
from cmlgraph.core.objective import OuterLoss
from cmlgraph.errors import CmlgraphError, ConfigError

#: Settings per method where neither the config nor a validation selection gives one (``predict --method``): what
#: the validation tasks chose on most of the five local graphs of issue 17 (docs/baselines.md); gcl-probe's C is
#: TLP's (scikit-learn's default) and its 200 epochs a cap (runs keep the best validated epoch).
DEFAULTS: dict[str, dict[str, float]] = {
    "sgc-proto": {"k": 2},
    "label-prop": {"steps": 20, "alpha": 0.05},
    "sgc-logreg": {"k": 4, "c": 10.0},
    "gcl-probe": {"epochs": 200, "c": 1.0},
}
#: Candidates tried on the validation tasks when the config leaves a setting unset.
GRID_K: tuple[int, ...] = (0, 1, 2, 3, 4)
GRID_STEPS: tuple[int, ...] = (5, 10, 20)
GRID_ALPHA: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5)
GRID_C: tuple[float, ...] = (1.0, 10.0, 100.0)
#: gcl-probe: validate the probe every this many pretraining epochs; stop after this many checks without gain.
GCL_CHECK_EVERY, GCL_PATIENCE = 10, 5
CACHE = "baselines/"


class BaselineState(nn.Module):
    """A baseline's saved state: its settings as 0-dim buffers and, for ``gcl-probe``, the GRACE encoder (built on
    load from the saved shapes)."""

    def __init__(self, settings: Mapping[str, float]) -> None:
        super().__init__()
        for key, value in settings.items():
            self.register_buffer(key, torch.tensor(float(value), dtype=torch.float64))
        self.encoder: nn.Module | None = None
        self._embedding: tuple[Any, Tensor] | None = None  # (features it was computed from, embeddings)

    def setting(self, key: str) -> float:
        """One setting's value."""
        return float(getattr(self, key))

    def set(self, **values: float) -> None:
        """Change settings in place."""
        for key, value in values.items():
            getattr(self, key).fill_(float(value))

    def set_encoder(self, encoder: nn.Module | None) -> None:
        """Install (or replace) the encoder and forget cached embeddings."""
        self.encoder = encoder
        self._embedding = None

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        if self.encoder is None and f"{prefix}encoder.conv1.lin.weight" in state_dict:
            from cmlgraph.baselines.grace import GraceEncoder

            w1 = state_dict[f"{prefix}encoder.conv1.lin.weight"]
            hidden = int(state_dict[f"{prefix}encoder.conv2.lin.weight"].shape[0])
            proj = int(state_dict[f"{prefix}encoder.fc1.weight"].shape[0])
            prelu = f"{prefix}encoder.act1.weight" in state_dict
            self.set_encoder(GraceEncoder(int(w1.shape[1]), hidden, proj, "prelu" if prelu else "relu"))
        self._embedding = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TrainingFree(MetaAlgorithm):
    """Base of the training-free baselines: no meta-gradients, settings chosen on validation tasks.

    Subclasses set :attr:`settings` (the names of their options) and implement :meth:`logits`.
    """

    trains = False
    uses_inner_loop = False
    settings: tuple[str, ...] = ()
    #: Config field (``algo.*``) that fixes each setting; unset fields are chosen on the validation tasks.
    config_keys: dict[str, str] = {}

    def __init__(self, cfg: AlgoConfig, total_steps: int = 1, seed: int = 0) -> None:
        super().__init__(cfg, total_steps=total_steps, seed=seed)
        self.seed = int(seed)

    # --- state ---------------------------------------------------------------------------------------------
    def initial(self) -> dict[str, float]:
        """Each setting's value from the config, else :data:`DEFAULTS`."""
        out = {}
        for key in self.settings:
            given = getattr(self.cfg, self.config_keys.get(key, ""), None) if key in self.config_keys else None
            out[key] = float(given) if given is not None else DEFAULTS[self.name][key]
        return out

    def prepare(self, model: MetaModel) -> None:
        """Give the model its :class:`BaselineState` (``model.baseline``)."""
        model.baseline = BaselineState(self.initial())

    @staticmethod
    def state(model: MetaModel) -> BaselineState:
        """The model's baseline state (raises if the model was not prepared by a baseline)."""
        state = getattr(model, "baseline", None)
        if not isinstance(state, BaselineState):
            raise CmlgraphError("this model holds no baseline state; build it with the baseline's prepare()")
        return state

    def fixed_by_config(self) -> set[str]:
        """Settings the config fixes (not selected on validation tasks)."""
        return {k for k in self.settings
                if k in self.config_keys and getattr(self.cfg, self.config_keys[k]) is not None}

    # --- no training -----------------------------------------------------------------------------------------
    def objective(self, model: MetaModel, params: Mapping[str, Tensor], episodes: Sequence[Episode],
                  loss_fn: LossFn, step: int, batched: bool | None = None) -> OuterLoss:
        """Training-free: there is no objective."""
        raise CmlgraphError(f"--algo {self.name} is training-free: it has no meta-objective")

    def meta_gradients(self, *args: Any, **kwargs: Any) -> MetaStep:
        """Training-free: there are no meta-gradients."""
        raise CmlgraphError(f"--algo {self.name} is training-free: it has no meta-gradients")

    # --- selection ---------------------------------------------------------------------------------------------
    def candidates(self) -> list[dict[str, float]]:
        """The settings tried on the validation tasks (only the ones the config leaves unset vary)."""
        return [{}]

    def fit(self, model: MetaModel, domain: Any, val_raws: Sequence[Any], device: torch.device | str,
            console: Any = None) -> dict[str, Any]:
        """Choose the settings on the validation tasks (the best mean accuracy; ties: the first candidate).

        Returns:
            The record for ``summary.json["baseline"]``: ``method``, ``settings`` (chosen), ``selected_on``,
            ``grid`` (each candidate's validation accuracy), ``val`` (the chosen one's) and ``seconds``.
        """
        from cmlgraph.core.model import parameters_of
        from cmlgraph.train.evaluate import evaluate

        t0 = time.perf_counter()
        state = self.state(model)
        grid = []
        best: tuple[float, dict[str, float]] | None = None
        for cand in self.candidates():
            state.set(**cand)
            res = evaluate(self, model, parameters_of(model), domain, val_raws, device)
            grid.append({**cand, "val": res["mean"]})
            if best is None or res["mean"] > best[0]:
                best = (res["mean"], cand)
        assert best is not None
        state.set(**best[1])
        chosen = {k: state.setting(k) for k in self.settings}
        fixed = self.fixed_by_config()
        return {"method": self.name, "settings": _tidy(chosen), "selected": sorted(set(self.settings) - fixed),
                "selected_on": f"{len(val_raws)} validation tasks", "grid": grid if len(grid) > 1 else [],
                "val": best[0], "seconds": round(time.perf_counter() - t0, 3)}

    # --- prediction --------------------------------------------------------------------------------------------
    def logits(self, model: MetaModel, ep: Episode) -> Tensor:
        """``[Q, ways]`` query outputs of one task."""
        raise NotImplementedError

    def predict(self, model: MetaModel, params: Mapping[str, Tensor], ep: Episode, loss_fn: LossFn,
                batched: bool = False) -> tuple[Tensor, Tensor | None]:
        """The query outputs of one task (no co-learner)."""
        if batched:
            raise CmlgraphError(f"{self.name} predicts one task at a time (batched=False)")
        with torch.no_grad():
            return self.logits(model, ep), None

    def predict_tasks(self, model: MetaModel, eps: Sequence[Episode]) -> list[Tensor]:
        """The query outputs of many tasks (evaluation's chunks): :meth:`logits` of each, or one batched solve
        where a subclass has one; equal to :meth:`predict` task by task up to float rounding."""
        with torch.no_grad():
            return [self.logits(model, ep) for ep in eps]

    def run_summary(self, res: Mapping[str, Any]) -> dict[str, Any]:
        """Keys this method adds to ``summary.json``: ``steps`` 0 (nothing is meta-trained)."""
        return {"steps": 0, "training_free": True}


def _tidy(values: Mapping[str, float]) -> dict[str, float | int]:
    return {k: int(v) if k in ("k", "steps", "epochs") else float(v) for k, v in values.items()}


def _ways(ep: Episode) -> int:
    return int(ep.support_y.max()) + 1


def _probe_tasks(eps: Sequence[Episode], features: Any, c: float) -> list[Tensor]:
    """Per-task logistic-regression query logits of many tasks on node features ``features(inp, nodes)``
    (``[len(nodes), F]``, the rows of those nodes of the episode's graph):
    tasks of one ways and support size are fitted together (:func:`cmlgraph.baselines.logreg.logreg_logits_tasks`).
    """
    from cmlgraph.baselines.logreg import logreg_logits_tasks

    out: list[Tensor | None] = [None] * len(eps)
    groups: dict[int, list[int]] = {}
    for i, ep in enumerate(eps):
        groups.setdefault(_ways(ep), []).append(i)
    for ways, idx in groups.items():
        sup, ys, qry = [], [], []
        for i in idx:
            s, q = _inputs(eps[i])
            sup.append(features(s, s.nodes))
            ys.append(eps[i].support_y)
            qry.append(features(s, q.nodes))
        for i, logits in zip(idx, logreg_logits_tasks(sup, ys, qry, ways, c=c), strict=True):
            out[i] = logits
    return [o for o in out if o is not None]


def _inputs(ep: Episode) -> tuple[Any, Any]:
    from cmlgraph.graphs import GraphInput

    s, q = ep.support_x, ep.query_x
    if not isinstance(s, GraphInput) or not isinstance(q, GraphInput):
        raise ConfigError("the training-free baselines classify graph nodes; use them with --task graph")
    return s, q


def sgc_features(inp: Any, k: int) -> Tensor:
    """``S^K X`` of the episode's whole graph, cached in the graph's cache (one ``K`` at a time: a larger ``K``
    continues from the cached smaller one)."""
    from cmlgraph.baselines.propagation import propagate, sym_norm_propagate

    entry = inp.cache.get(CACHE + "sgc")
    if entry is None or entry[0] is not inp.x or entry[1] > k:
        x = inp.x.to_sparse_coo() if inp.x.layout == torch.sparse_csr else inp.x
        entry = (inp.x, 0, sym_norm_propagate(x, inp.edge_index, inp.num_nodes, 0))
    if entry[1] < k:
        entry = (inp.x, k, propagate(adjacency(inp, entry[2].dtype), entry[2], k - entry[1]))
    inp.cache[CACHE + "sgc"] = entry
    return entry[2]


def adjacency(inp: Any, dtype: torch.dtype) -> Tensor:
    """``S = D^-1/2 (A + I) D^-1/2`` of the episode's graph (CSR: several times faster products than COO), cached
    per dtype."""
    from cmlgraph.baselines.propagation import sym_norm_adj

    key = CACHE + f"adj/{dtype}"
    entry = inp.cache.get(key)
    if entry is None or entry[0] is not inp.x:
        entry = (inp.x, sym_norm_adj(inp.edge_index, inp.num_nodes, dtype).to_sparse_csr().to(inp.x.device))
        inp.cache[key] = entry
    return entry[1]


class SGCProto(TrainingFree):
    """``sgc-proto``: nearest class mean (cosine) on SGC's ``S^K X`` (Wu et al., ICML 2019); no training."""

    name = "sgc-proto"
    settings = ("k",)
    config_keys = {"k": "prop_steps"}

    def candidates(self) -> list[dict[str, float]]:
        """``K`` in :data:`GRID_K` unless ``algo.prop_steps`` fixes it."""
        return [{}] if "k" in self.fixed_by_config() else [{"k": k} for k in GRID_K]

    def logits(self, model: MetaModel, ep: Episode) -> Tensor:
        """Cosine similarity of each query's ``S^K X`` row to each class mean of the support rows."""
        from cmlgraph.baselines.proto import cosine_prototype_logits

        s, q = _inputs(ep)
        z = sgc_features(s, int(self.state(model).setting("k")))
        return cosine_prototype_logits(z[s.nodes], ep.support_y, z[q.nodes], _ways(ep))


class SGCLogReg(TrainingFree):
    """``sgc-logreg``: per-task logistic regression (scikit-learn's objective, solved by batched Newton steps:
    :mod:`cmlgraph.baselines.logreg`) on the L2-normalised rows of
    ``S^K X`` (SGC, Wu et al., ICML 2019; the linear probe of TLP, Tan et al., LoG 2022)."""

    name = "sgc-logreg"
    settings = ("k", "c")
    config_keys = {"k": "prop_steps", "c": "probe_c"}

    def candidates(self) -> list[dict[str, float]]:
        """``K`` × ``C`` over :data:`GRID_K` × :data:`GRID_C`, each unless the config fixes it."""
        fixed = self.fixed_by_config()
        ks = [None] if "k" in fixed else list(GRID_K)
        cs = [None] if "c" in fixed else list(GRID_C)
        return [{n: v for n, v in (("k", k), ("c", c)) if v is not None} for k, c in itertools.product(ks, cs)]

    def logits(self, model: MetaModel, ep: Episode) -> Tensor:
        """The fitted logistic regression's query logits."""
        from cmlgraph.baselines.logreg import logreg_logits

        s, q = _inputs(ep)
        state = self.state(model)
        z = sgc_features(s, int(state.setting("k")))
        return logreg_logits(F.normalize(z[s.nodes].float(), dim=1), ep.support_y, F.normalize(z[q.nodes].float(),
                             dim=1), _ways(ep), c=state.setting("c"))

    def predict_tasks(self, model: MetaModel, eps: Sequence[Episode]) -> list[Tensor]:
        """:meth:`logits` of many tasks, their regressions fitted together (one batched Newton solve)."""
        state = self.state(model)
        k = int(state.setting("k"))
        with torch.no_grad():
            return _probe_tasks(eps, lambda s, nodes: F.normalize(sgc_features(s, k)[nodes].float(), dim=1),
                                state.setting("c"))


class LabelProp(TrainingFree):
    """``label-prop``: APPNP-style propagation of the support labels (Klicpera et al., ICLR 2019); features are
    not read. Queries the propagation never reaches get NaN rows: no answer, scored as wrong and counted."""

    name = "label-prop"
    settings = ("steps", "alpha")
    config_keys = {"steps": "prop_steps", "alpha": "prop_alpha"}
    abstains = True

    def candidates(self) -> list[dict[str, float]]:
        """Steps × α over :data:`GRID_STEPS` × :data:`GRID_ALPHA`, each unless the config fixes it."""
        fixed = self.fixed_by_config()
        ts = [None] if "steps" in fixed else list(GRID_STEPS)
        al = [None] if "alpha" in fixed else list(GRID_ALPHA)
        return [{n: v for n, v in (("steps", t), ("alpha", a)) if v is not None} for t, a in itertools.product(ts, al)]

    def logits(self, model: MetaModel, ep: Episode) -> Tensor:
        """Log of each class's share of the propagated label mass at each query (float32; their softmax is the
        shares); NaN rows for unreached queries."""
        from cmlgraph.baselines.label_prop import check_settings, propagate_labels, reached, seed_labels

        s, q = _inputs(ep)
        state = self.state(model)
        steps, alpha = int(state.setting("steps")), state.setting("alpha")
        check_settings(steps, alpha)
        seeds = seed_labels(s.num_nodes, s.nodes.cpu(), ep.support_y.cpu(), _ways(ep)).to(s.x.device)
        scores = propagate_labels(adjacency(s, torch.float64), seeds, steps, alpha)[q.nodes]
        share = scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-300)  # each class's share of the mass
        out = share.clamp_min(1e-30).log().float()  # softmax(out) = the shares; arg-max = the most mass
        # unreached rows NaN by a select, not a boolean-mask assignment (which reads the mask's count back on a GPU)
        return torch.where(reached(scores).unsqueeze(-1), out, float("nan"))

    def run_summary(self, res: Mapping[str, Any]) -> dict[str, Any]:
        """Adds ``unreached_queries`` (test queries with no path to a support node within ``steps`` edges, scored
        as wrong), ``unreached_tasks`` and ``test_queries_total``."""
        return {**super().run_summary(res), "unreached_queries": int(res.get("abstained_queries", 0)),
                "unreached_tasks": int(res.get("abstained_tasks", 0)),
                "test_queries_total": int(res.get("queries", 0))}


class GCLProbe(TrainingFree):
    """``gcl-probe``: TLP's method (Tan et al., LoG 2022): GRACE contrastive pretraining of a GCN encoder on the
    whole graph with no labels (Zhu et al., 2020), then a per-task logistic-regression probe (scikit-learn's objective,
    ``C = 1`` as TLP) on the frozen, min-max scaled embeddings. TLP's code defaults some encoders to a label-using
    "sup" loss; this one uses none (:mod:`cmlgraph.baselines.grace`)."""

    name = "gcl-probe"
    settings = ("epochs", "c")
    config_keys = {"epochs": "pretrain_epochs", "c": "probe_c"}

    def pretrain(self, model: MetaModel, inp: Any, graph_name: str, seed: int,
                 score: Any = None) -> dict[str, Any]:
        """Pretrain the encoder on the graph of ``inp`` (features and edges only) and install it."""
        from cmlgraph.baselines.grace import pretrain_grace, settings_for

        state = self.state(model)
        settings = settings_for(graph_name)
        encoder, record = pretrain_grace(inp.x, inp.edge_index, settings, int(state.setting("epochs")), seed=seed,
                                         check_every=GCL_CHECK_EVERY if score is not None else 0,
                                         score=score, patience=GCL_PATIENCE)
        state.set_encoder(encoder.to(inp.x.device))
        return {"grace": {k: v for k, v in vars(settings).items()}, **record}

    def fit(self, model: MetaModel, domain: Any, val_raws: Sequence[Any], device: torch.device | str,
            console: Any = None) -> dict[str, Any]:
        """Pretrain GRACE, validating the probe every :data:`GCL_CHECK_EVERY` epochs on the validation tasks and
        keeping the best encoder (TLP's early stopping on validation classes; patience :data:`GCL_PATIENCE`)."""
        from cmlgraph.core.model import parameters_of
        from cmlgraph.train.evaluate import evaluate

        t0 = time.perf_counter()
        state = self.state(model)
        inp = domain.materialize(val_raws[0], device).support_x if val_raws else None
        if inp is None:
            raise CmlgraphError("gcl-probe needs validation tasks to choose its pretraining length")

        def score(encoder: nn.Module) -> float:
            state.set_encoder(encoder)
            return float(evaluate(self, model, parameters_of(model), domain, val_raws, device)["mean"])

        if console is not None:
            console.print(f"gcl-probe: GRACE pretraining on {domain.name} (no labels), at most "
                          f"{int(state.setting('epochs'))} epochs, probe validated every {GCL_CHECK_EVERY}")
        record = self.pretrain(model, inp, domain.name, self.seed, score=score)
        checks = record.get("checks") or []
        val = max((v for _, v in checks), default=float("nan"))
        return {"method": self.name, "settings": _tidy({k: state.setting(k) for k in self.settings}),
                "selected": ["pretraining length (best_epoch)"], "selected_on": f"{len(val_raws)} validation tasks",
                "val": val, "pretrain_seconds": record["seconds"], "seconds": round(time.perf_counter() - t0, 3),
                **{k: v for k, v in record.items() if k != "seconds"}}

    def embedded(self, model: MetaModel, inp: Any) -> Tensor:
        """``[N, D]`` frozen, min-max scaled embeddings of the graph of ``inp`` (cached per feature tensor).

        Raises:
            CmlgraphError: The encoder has not been pretrained.
        """
        from cmlgraph.baselines.grace import embeddings, min_max_scale

        state = self.state(model)
        if state.encoder is None:
            raise CmlgraphError("gcl-probe has no pretrained encoder; pretrain it first (fit or pretrain)")
        if state._embedding is None or state._embedding[0] is not inp.x:
            state._embedding = (inp.x, min_max_scale(embeddings(state.encoder, inp.x, inp.edge_index)))
        return state._embedding[1]

    def logits(self, model: MetaModel, ep: Episode) -> Tensor:
        """The probe's query logits on the frozen, min-max scaled embeddings."""
        from cmlgraph.baselines.logreg import logreg_logits

        s, q = _inputs(ep)
        z = self.embedded(model, s)
        return logreg_logits(z[s.nodes], ep.support_y, z[q.nodes], _ways(ep), c=self.state(model).setting("c"))

    def predict_tasks(self, model: MetaModel, eps: Sequence[Episode]) -> list[Tensor]:
        """:meth:`logits` of many tasks, their probes fitted together (one batched Newton solve)."""
        with torch.no_grad():
            return _probe_tasks(eps, lambda s, nodes: self.embedded(model, s)[nodes], self.state(model).setting("c"))


#: The baselines by CLI name.
BASELINE_ALGORITHMS: dict[str, type[TrainingFree]] = {cls.name: cls for cls in (SGCProto, LabelProp, SGCLogReg,
                                                                                  GCLProbe)}


def make_baseline(name: str, cfg: AlgoConfig | None = None, seed: int = 0) -> TrainingFree:
    """A baseline by CLI name (raises ConfigError naming the valid ones)."""
    if name not in BASELINE_ALGORITHMS:
        raise ConfigError(f"unknown method {name!r}; training-free methods: {', '.join(BASELINE_ALGORITHMS)}")
    return BASELINE_ALGORITHMS[name](cfg or AlgoConfig(algo=name, cml=False), seed=seed)


__all__ = ["BASELINE_ALGORITHMS", "BaselineState", "GCLProbe", "LabelProp", "SGCLogReg", "SGCProto", "TrainingFree",
           "make_baseline", "sgc_features"]
