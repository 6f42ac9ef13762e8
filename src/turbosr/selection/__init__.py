"""Model-selection rules as data and functions, written before the candidates they judge are measured:
:mod:`~turbosr.selection.realism` (which trained model ships as x4, x4-real and the default, from val tables)
and :mod:`~turbosr.selection.knob` (the realism end of the x4's fidelity knob). Each prints its verdict table;
``scripts/apply_rules.py`` and ``scripts/knob_rule.py`` are the commands that run them (the recorded commands
in docs/benchmarks keep working).
"""
