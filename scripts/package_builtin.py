"""Package a trained model folder as a built-in model and write its card: ``turbosr.weights.packaging`` (see its
docstring for the subcommands: package, render, fingerprint, time, update)."""

from turbosr.weights.packaging import main

if __name__ == "__main__":
    main()
