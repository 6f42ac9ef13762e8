"""Apply the x4 fidelity-knob rule to fidelity-curve tables: ``turbosr.selection.knob`` (see its docstring)."""

from turbosr.selection.knob import main

if __name__ == "__main__":
    main()
