"""``python -m cmlgraph``."""

from cmlgraph.cli import main

if __name__ == "__main__":
    main()
