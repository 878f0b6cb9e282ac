"""Speakers: the SQLite enrollment store, the decision rule, the enroll / verify / identify /
adapt library behind the speaker commands, and their results.

Docstring only: import the modules themselves.
"""
