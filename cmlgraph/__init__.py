"""cmlgraph: few-shot node classification with Cooperative Meta-Learning."""
