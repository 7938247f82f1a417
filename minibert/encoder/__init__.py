"""The encoder: the formulas (ops), the records they take, the trace records, the reference forward
pass's pieces, the fast schedule and its thread control.
"""
