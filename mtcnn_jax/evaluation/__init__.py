"""Evaluation: WIDER FACE average precision (:mod:`.wider`), five-point landmark error on
MTFL/AFLW (:mod:`.landmarks`), and the detection JSON both read (:mod:`.predictions`)."""
