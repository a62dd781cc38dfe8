"""Nested dataclass configuration: the one source of truth for every run setting.

Precedence: dataclass defaults < domain defaults (filled where a value is ``None``) < YAML file < CLI flags.
YAML files are read with ``yaml.safe_load``; unknown sections or keys are rejected with the valid ones listed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from cmlgraph.errors import ConfigError

TASKS = ("graph", "sinusoid", "omniglot", "digits")


@dataclass
class DataConfig:
    """What tasks are drawn from.

    Attributes:
        task: Domain: ``graph``, ``sinusoid``, ``omniglot`` or ``digits``.
        graph: Graph dataset name (``cmlgraph datasets list``); used when ``task`` is ``graph``.
        data_root: Raw data root (else ``$CMLGRAPH_DATA``, else ``datasets/``).
        allow_partial: Run on the classes present when a dataset is partial.
        split: Class split: counts like ``"10/5/5"``, a JSON file of class ids, or (Python, YAML) a mapping
            ``{"train": [...], "val": [...], "test": [...]}`` of class ids or, for a user's graph, its labels.
        ways: N classes per task (classification).
        shots: K support examples per class (regression: support points).
        queries: Query examples per class (regression: query points).
        subgraph: Graph execution mode: ``auto``, ``full`` (every node of the graph at every pass) or ``khop``
            (only each output's exact computation tree; the k-hop subgraph for GAT). Same results either way.
        subgraph_threshold: ``auto`` uses ``khop`` above this many nodes; below, it picks the faster mode by the
            episode's computation-tree size relative to the graph.
        features: Feature preprocessing: ``raw``, ``row`` (row-normalised, L1) or ``standard`` (per-column
            z-score); default: the dataset's own (row for bag-of-words citation/product graphs as Meta-GNN/GCN use,
            raw for OGB and synthetic) and a safe default for custom graphs (row if sparse, standard if dense).
        protocol: A preset of the settings a published protocol used, filling what is left unset: ``tlp``
            (Tan et al.'s TLP code, used by the CML paper's Table 3; see ``cmlgraph/protocols.py``).
        test_queries: Query examples per class of test tasks (default: ``queries``).
        synthetic_nodes: Nodes of the ``synthetic`` graph.
        synthetic_classes: Classes of the ``synthetic`` graph.
        image_size: Image side in pixels (image domains).
        rotations: Omniglot rotations as extra classes.
    """

    task: str = "graph"
    graph: str = "synthetic"
    data_root: str | None = None
    allow_partial: bool = False
    split: str | dict[str, list[Any]] | None = None
    ways: int = 5
    shots: int | None = None
    queries: int | None = None
    subgraph: str = "auto"
    subgraph_threshold: int = 20_000
    features: str | None = None
    protocol: str | None = None
    test_queries: int | None = None
    synthetic_nodes: int = 3000
    synthetic_classes: int = 60
    image_size: int = 28
    rotations: bool = False


@dataclass
class ModelConfig:
    """The extractor ψ.

    Attributes:
        gnn: GNN kind (``sgc`` (default: fast, as in Meta-GNN), ``gcn``, ``sage``, ``gat``, ``gin``).
        hidden: Hidden width of the GNN (MLP: width of each hidden layer).
        layers: Message-passing layers (MLP: hidden layers); unset: 2, except the PCA-started SGC of a graph run,
            whose propagation depth K is chosen on the run's validation tasks (:mod:`cmlgraph.domains.depth_choice`).
        dropout: Dropout of the GNN.
        gat_heads: Attention heads of GAT.
        norm: Conv4's normalisation (image tasks only): ``batch`` (the paper's; transductive: query statistics),
            ``instance``, ``group`` or ``support`` (the support set's statistics); default: the domain's.
        init: The extractor's initial weights (graph task): ``pca`` (SGC only: the top ``hidden`` principal axes,
            uncentred, of the propagated features ``Â^K X`` of all nodes, no labels; the start then keeps the
            geometry of the propagated features), ``random`` (PyTorch's default) or ``auto`` (``pca`` for SGC, else
            ``random``). Default: ``auto`` for MAML-family runs without a protocol, ``random`` otherwise.
        normalize: L2-normalise every extractor output (scale-free features, so one inner step size fits every
            feature scale). Default: on for MAML-family graph runs without a protocol, off otherwise.
    """

    gnn: str = "sgc"
    hidden: int | None = None
    layers: int | None = None
    dropout: float = 0.0
    gat_heads: int = 4
    norm: str | None = None
    init: str | None = None
    normalize: bool | None = None


@dataclass
class AlgoConfig:
    """The meta-learning algorithm and the CML switch.

    Attributes:
        algo: ``maml``, ``anil``, ``boil``, ``maml++``, ``sharp-maml``, ``protonet``, ``gmeta`` or ``ammgnn``.
        cml: Add the co-learner term (Cooperative Meta-Learning).
        gamma: Weight γ of the co-learner term.
        co_depth: Hidden layers (or conv blocks) of the co-learner (default: 0; 2 for images, the reference).
        co_hidden: Width of the co-learner's hidden layers (default ``None``: the extractor's feature width).
        control: The paper's controls: ``none``, ``cl`` (co-learner adapted in the inner loop), ``noise``
            (Gaussian noise on the meta-gradients instead of a co-learner) or ``frozen-co`` (the paper's "random
            noise": a co-learner whose random initial weights are never updated).
        noise_std: Relative σ of the ``noise`` control: σ_t = noise_std · ‖g_t‖ / √numel(g_t) per tensor.
        inner_steps: Inner steps S during meta-training.
        eval_inner_steps: Inner steps at evaluation (default: ``inner_steps``).
        inner_lr: Inner step size α.
        inner_lr_extractor: Inner step size of the extractor's parameters (default: ``inner_lr``).
        inner_lr_head: Inner step size of the head's parameters (default: ``inner_lr``).
        first_order: First-order meta-gradients.
        adapt: Groups that adapt in the inner loop: ``auto`` (the algorithm's), ``all``, ``head`` or ``extractor``.
        sam_rho: Sharp-MAML's perturbation radius ρ of the outer step.
        sam_inner: Sharp-MAML: also perturb the inner steps.
        msl_fraction: MAML++: fraction of training over which the multi-step loss weights anneal.
        first_order_fraction: MAML++: fraction of training run first-order (derivative-order annealing).
        prop_steps: Training-free baselines: propagation steps (``K`` of ``S^K X`` for sgc-proto/sgc-logreg, the
            iterations of label-prop); ``None``: chosen on the validation tasks.
        prop_alpha: label-prop's teleport probability α; ``None``: chosen on the validation tasks.
        probe_c: Inverse regularisation ``C`` of the logistic-regression probe (sgc-logreg: ``None`` chooses it
            on the validation tasks; gcl-probe: ``None`` is TLP's 1.0).
        pretrain_epochs: gcl-probe's most GRACE pretraining epochs (``None``: 200; the best on validation is kept).
        head_init: How the meta-learner head starts each task's inner loop: ``proto`` (Proto-MAML, Triantafillou
            et al., ICLR 2020: rows ``2 c_k`` and biases ``-||c_k||^2`` from the support class means ``c_k`` of the
            features, plus the meta-learned head, which starts at zero) or ``learned`` (MAML: the meta-learned
            head alone). Default: ``proto`` for MAML-family graph runs without a protocol, ``learned`` otherwise.
        proto_inner: With ``head_init: proto``, what the inner loop's gradient for ψ is: ``total`` (the default
            since issue 17: the derivative of the support loss through the prototype head too, which is a function
            of ψ) or ``partial`` (the head is a separate variable started at the prototypes, as in common
            Proto-(FO)MAML code; the outer gradient still reaches ψ through the prototypes). Session 26 measured
            them side by side: docs/starting-at-the-baseline.md.
    """

    algo: str = "maml"
    cml: bool = True
    gamma: float = 1.0
    co_depth: int | None = None
    co_hidden: int | None = None
    control: str = "none"
    noise_std: float = 0.1
    inner_steps: int | None = None
    eval_inner_steps: int | None = None
    inner_lr: float | None = None
    inner_lr_extractor: float | None = None
    inner_lr_head: float | None = None
    first_order: bool = False
    adapt: str = "auto"
    sam_rho: float = 0.05
    sam_inner: bool = False
    msl_fraction: float = 0.1
    first_order_fraction: float = 0.25
    prop_steps: int | None = None
    prop_alpha: float | None = None
    probe_c: float | None = None
    pretrain_epochs: int | None = None
    head_init: str | None = None
    proto_inner: str = "total"


@dataclass
class TrainConfig:
    """Meta-training and evaluation.

    Attributes:
        steps: Meta-iterations (outer steps).
        meta_batch: Tasks per meta-iteration.
        meta_lr: Adam learning rate β (default :data:`~cmlgraph.domains.registry.META_LR`: 1e-3; 1e-4 for the MAML
            family's graph runs from the PCA-initialised SGC without a protocol, whose start is already the
            training-free baseline).
        seed: Seed of initialisation, task sampling and the fixed evaluation tasks.
        val_every: Validate every this many steps.
        val_tasks: Fixed validation tasks (default 100).
        test_tasks: Fixed test tasks.
        log_every: Write a metrics line every this many steps.
        checkpoint_every: Write ``checkpoint.pt`` every this many steps.
        diag_every: Log gradient diagnostics every this many steps (0: never).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        batched: Run the meta-batch's tasks together with vmap where the domain allows (``auto``/``on``/``off``).
        prefetch: Sample and prepare the next meta-batches (episodes, k-hop plans) in a worker thread while the
            current step computes; same results (``auto``: on for CUDA, off on the CPU, ``on``, ``off``;
            :mod:`cmlgraph.train.prefetch`).
        prefetch_workers: Meta-batches whose layouts the prefetcher builds at once, in as many threads (G-Meta's
            ball layouts gain from them; same results). ``0``: auto, half the host's cores on CUDA (at most 8),
            1 on the CPU. Given as a number above 1, k-hop computation-tree plans are built in that many worker
            processes instead (:mod:`cmlgraph.train.build_processes`; a script must guard its code with
            ``if __name__ == "__main__":``).
        nan_policy: On a NaN/inf loss or gradient: ``stop`` or ``skip`` the meta-batch.
        cuda_graphs: Capture the meta-step as a CUDA graph and replay it (``auto``: where eligible,
            checked once against the eager step; ``on``: required; ``off``; :mod:`cmlgraph.train.cuda_graphs`).
        patience: Stop training after this many validations without improvement (``None``: never).
        weight_decay: Adam's weight decay (L2 added to the meta-gradients).
    """

    steps: int | None = None
    meta_batch: int | None = None
    meta_lr: float | None = None
    seed: int = 0
    val_every: int | None = None
    val_tasks: int | None = None
    test_tasks: int | None = None
    log_every: int = 10
    checkpoint_every: int = 200
    diag_every: int = 0
    device: str = "cpu"
    batched: str = "auto"
    prefetch: str = "auto"
    prefetch_workers: int = 0
    nan_policy: str = "stop"
    cuda_graphs: str = "auto"
    patience: int | None = None
    weight_decay: float = 0.0


@dataclass
class RunConfig:
    """Where the run folder goes.

    Attributes:
        runs_dir: Parent folder of run folders.
        name: Run folder name (default: derived from the settings and a timestamp).
        overwrite: Replace an existing run folder of the same name.
    """

    runs_dir: str = "runs"
    name: str | None = None
    overwrite: bool = False


@dataclass
class Config:
    """A whole experiment: ``data``, ``model``, ``algo``, ``train`` and ``run`` sections."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for ``config.yaml``)."""
        return dataclasses.asdict(self)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


SECTION_CLASSES: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "algo": AlgoConfig,
                                     "train": TrainConfig, "run": RunConfig}


def _section_types(section: str) -> dict[str, Any]:
    return get_type_hints(SECTION_CLASSES[section])


def _type_text(typ: Any) -> str:
    """``int``, ``float | None``: the annotation as a user reads it (not ``<class 'int'>``)."""
    return typ.__name__ if isinstance(typ, type) else str(typ).replace("typing.", "").replace("Optional", "optional")


#: String settings whose values include ``on`` and ``off`` (an unquoted YAML ``on``/``off`` arrives as a bool).
ON_OFF = {("train", "batched"), ("train", "prefetch"), ("train", "cuda_graphs")}


def _coerce(section: str, key: str, value: Any, typ: Any) -> Any:
    text = str(typ)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"config key {section}.{key} may not be null; give a value of type {_type_text(typ)}")
    want_bool, want_int, want_float = "bool" in text, "int" in text, "float" in text
    if want_bool and isinstance(value, bool):
        return value
    if want_int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if want_float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if "str" in text and isinstance(value, str):
        return value
    if "dict" in text and isinstance(value, Mapping):  # a split's class lists (data.split)
        if not all(isinstance(k, str) and isinstance(v, (list, tuple)) for k, v in value.items()):
            raise ConfigError(f"config key {section}.{key} = {dict(value)!r}: a mapping must give each of 'train', "
                              f"'val', 'test' a list of classes")
        return {k: list(v) for k, v in value.items()}
    if "str" in text and not want_bool and isinstance(value, bool) and (section, key) in ON_OFF:
        # YAML 1.1 reads unquoted ``on``/``off`` (also yes/no, true/false) as booleans: the switches mean them
        return "on" if value else "off"
    if want_float and isinstance(value, str):
        # YAML 1.1 reads ``1e-3`` (no dot) as a string; accept the numbers users obviously mean.
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"config key {section}.{key} = {value!r} has the wrong type; expected {_type_text(typ)}")


def check_types(cfg: Config) -> Config:
    """Check (and normalise, e.g. int → float) the type of every setting of ``cfg`` in place.

    Configs built in Python bypass :func:`apply_overrides`; this gives them the same checks.

    Raises:
        ConfigError: A section is not the right dataclass, or a value has the wrong type.
    """
    for section, cls in SECTION_CLASSES.items():
        target = getattr(cfg, section, None)
        if not isinstance(target, cls):
            raise ConfigError(f"config section {section!r} is {type(target).__name__}, not {cls.__name__}; build "
                              f"configs with Config() or apply_overrides")
        for key, typ in _section_types(section).items():
            setattr(target, key, _coerce(section, key, getattr(target, key), typ))
    return cfg


def apply_overrides(cfg: Config, overrides: dict[str, Any], source: str) -> Config:
    """Apply a nested ``{section: {key: value}}`` mapping onto ``cfg``, rejecting unknown sections and keys."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)}), got "
                          f"{type(overrides).__name__}")
    for section, values in overrides.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping of keys to values, got "
                              f"{type(values).__name__}")
        types = _section_types(section)
        target = getattr(cfg, section)
        for key, value in values.items():
            if key not in types:
                raise ConfigError(f"{source}: unknown key {section}.{key}; valid keys of {section}: "
                                  f"{', '.join(types)}")
            setattr(target, key, _coerce(section, key, value, types[key]))
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file with ``safe_load``; a missing or malformed file gives a ConfigError.

    ``safe_load`` refuses tags such as ``!!python/object``, so a config file can never run code.
    """
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise ConfigError(f"config file {str(p)!r} {what}; pass an existing YAML file to --config "
                          f"(examples in configs/)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(f"config file {str(p)!r} uses a YAML tag that is refused ({exc.problem}); only plain "
                          f"mappings, lists, strings and numbers are allowed (no !!python/... objects)") from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML ({exc.__class__.__name__}{at}); fix its "
                          f"syntax") from None
    return {} if data is None else data


def from_yaml(path: str | Path, base: Config | None = None) -> Config:
    """A config from defaults overridden by a YAML file."""
    return apply_overrides(base or Config(), load_yaml(path), f"config file {str(path)!r}")
