"""Apply docs/realism.md's selection rules to val tables: ``turbosr.selection.realism`` (see its docstring)."""

from turbosr.selection.realism import main

if __name__ == "__main__":
    main()
